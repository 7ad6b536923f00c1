"""Streaming video decoding with PyAV: frames one at a time, with their real timestamps.

Memory stays bounded for any length or resolution: only the current frame is held, and
frames larger than `max_side` are scaled down by the decoder before they reach numpy.
Timestamps come from the stream (pts), so variable-frame-rate clips are handled exactly.
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ...retarget.atomic_file import atomic_path


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


def write_video(path: str | Path, frames, fps: float, audio_16k: np.ndarray | None = None,
                crf: int = 18, preset: str = "veryfast") -> Path:
    """Encode RGB frames (iterable of (H, W, 3) uint8) as H.264 MP4, with optional AAC audio.

    audio_16k: (N,) float32 mono at 16 kHz, starting with the first frame. Written to a temp
    file beside `path` and renamed when complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2  # H.264 wants even sizes
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": str(crf), "preset": preset}
        audio = None
        if audio_16k is not None and len(audio_16k):
            audio = container.add_stream("aac", rate=16_000)
            audio.layout = "mono"
        for image in itertools.chain([first], frames):
            image = np.ascontiguousarray(image[:height, :width])
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            _mux_audio(container, audio, np.asarray(audio_16k, dtype=np.float32))
    return path


def _mux_audio(container, stream, samples: np.ndarray, sample_rate: int = 16_000) -> None:
    block = 1024
    for start in range(0, len(samples), block):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + block], format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts = sample_rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
