"""Streaming video decoding with PyAV: frames one at a time, with their real timestamps.

Memory stays bounded for any length or resolution: only the current frame is held, and
frames larger than `max_side` are scaled down by the decoder before they reach numpy.
Timestamps come from the stream (pts), so variable-frame-rate clips are handled exactly.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


class VideoError(ValueError):
    """A video that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float              # average frame rate (frames / stream duration)
    frame_count: int        # from the container; 0 when it does not say
    duration_s: float
    start_time_s: float     # stream start, for aligning the audio track
    has_audio: bool


def probe_video(path: str | Path) -> VideoInfo:
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate
        duration = (float(stream.duration * stream.time_base) if stream.duration
                    else (container.duration or 0) / av.time_base)
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        return VideoInfo(path, stream.codec_context.width, stream.codec_context.height,
                         float(rate) if rate else 0.0, stream.frames or 0, duration, start,
                         bool(container.streams.audio))


def iter_frames(path: str | Path, max_side: int = 720) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (timestamp in seconds, RGB frame (H, W, 3) uint8), H and W at most `max_side`.

    Timestamps are the stream's presentation times (absolute, same clock as the audio stream).
    A stream that breaks off mid-way ends the iteration with a VideoError after the frames
    that did decode, so the caller can decide whether the partial clip is usable.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        shrink = min(1.0, max_side / max(width, height, 1))
        out_w, out_h = (max(2, round(width * shrink / 2) * 2), max(2, round(height * shrink / 2) * 2))
        fallback_step = 1.0 / float(stream.average_rate or 25)
        decoded = 0
        try:
            for frame in container.decode(stream):
                time_s = frame.time if frame.time is not None else decoded * fallback_step
                if shrink < 1.0:
                    image = frame.to_ndarray(format="rgb24", width=out_w, height=out_h)
                else:
                    image = frame.to_ndarray(format="rgb24")
                decoded += 1
                yield time_s, image
        except av.error.FFmpegError as error:
            raise VideoError(f"{path}: the video stream breaks off after {decoded} frames "
                             f"({error}); re-encode or re-export the file") from error
        if decoded == 0:
            raise VideoError(f"{path}: no video frame could be decoded; the file is empty or "
                             "corrupt — re-export it")


def _open(path: Path):
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise VideoError(f"{path}: not a readable video ({error}); check the file or "
                         "convert it to MP4 (H.264)") from error


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise VideoError(f"{path}: the file has no video stream")
    return container.streams.video[0]
