"""`dimitra render`: a motion file and its reference picture -> a photoreal video with the speech.

Frames are made one at a time as the encoder asks for them (backend.media.video.write_video
streams, and writes to a temp file renamed when complete), so an hour of motion renders in
the memory of a few frames, and a failure leaves no partial video.
"""

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ...retarget.motion_file import Motion, load_motion
from ..generation.reference import Reference, load_reference
from ..media.audio import SAMPLE_RATE, load_audio
from ..media.video import iter_frames, probe_video, write_video
from .mouth_net import MouthNet, MouthPatch, lip_masks, network_inputs, paste
from .warp import FaceWarp, crop_around_face

SIZES = (256, 512)


class RenderError(ValueError):
    """Input the renderer cannot use; the message names it and says what to do."""


class PhotorealRenderer:
    """The reference picture, animated frame by frame: warp, then the mouth repainted."""

    def __init__(self, image: np.ndarray, landmarks_px: np.ndarray, size: int = 256,
                 mouth_net: MouthNet | None = None):
        """image: (H, W, 3) uint8 RGB; landmarks_px: (478, 3) its face, pixel frame; size: the
        output's side in pixels; mouth_net: None renders the warp alone."""
        self.crop = crop_around_face(landmarks_px, size)
        reference_crop_px = self.crop.to_crop(landmarks_px)
        self.warp = FaceWarp(self.crop.cut(image), reference_crop_px)
        self.mouth_net = mouth_net
        self.mouth = MouthPatch(reference_crop_px)
        self._reference_patch = self.mouth.cut(self.warp.image,
                                               self.mouth.to_patch(reference_crop_px))

    def render(self, landmarks_px: np.ndarray) -> np.ndarray:
        """(478, 3) driving landmarks, pixel frame of the reference -> (size, size, 3) uint8."""
        driving = self.crop.to_crop(landmarks_px)
        frame = self.warp.warp(driving)
        if self.mouth_net is None or not np.isfinite(driving).all():
            return frame
        to_patch = self.mouth.to_patch(driving)
        inputs = network_inputs(self.mouth.cut(frame, to_patch), self._reference_patch,
                                lip_masks(driving, to_patch))
        change = self.mouth_net(inputs) - np.moveaxis(inputs[:3], 0, 2)
        return paste(frame, change, to_patch)


def render_motion_file(motion_path: str | Path, reference_path: str | Path, out: str | Path,
                       audio_path: str | Path | None = None, size: int = 256,
                       side_by_side: str | Path | None = None, warp_only: bool = False) -> dict:
    """`dimitra render`: checks every input before the first frame, then streams the video.

    The video lasts as long as the audio (the motion's last frame held, or its tail cut);
    without any audio, as long as the motion. Returns a summary (frames, fps, seconds).
    """
    if size not in SIZES:
        raise RenderError(f"--size {size}: choose one of {', '.join(map(str, SIZES))}")
    motion = load_motion(motion_path)
    reference = load_reference(reference_path)
    if reference.image is None:
        raise RenderError(f"{reference_path}: the renderer needs the reference picture (an "
                          "image), not a motion file")
    _check_image_size(motion, reference, motion_path, reference_path)
    audio = _speech(motion, motion_path, audio_path)
    if side_by_side is not None:
        probe_video(side_by_side)      # a missing or unreadable video is named before any frame
    frames = (round(len(audio) / SAMPLE_RATE * motion.fps) if audio is not None
              else motion.frame_count)
    mouth_net = None if warp_only else MouthNet()
    renderer = PhotorealRenderer(reference.image, reference.landmarks_px, size, mouth_net)
    video = _frames(renderer, motion, frames)
    if side_by_side is not None:
        video = _beside(video, side_by_side, size)
    write_video(out, video, motion.fps, audio)
    return {"frames": frames, "fps": motion.fps, "seconds": frames / motion.fps}


def _check_image_size(motion: Motion, reference: Reference, motion_path, reference_path) -> None:
    made_for = motion.meta.get("image_size")
    if made_for and tuple(made_for) != tuple(reference.image_size):
        width, height = reference.image_size
        raise RenderError(
            f"{motion_path} was made for a {made_for[0]}×{made_for[1]} picture, but {reference_path} "
            f"is {width}×{height}; render with the picture `dimitra animate --ref` was given")


def _speech(motion: Motion, motion_path, audio_path) -> np.ndarray | None:
    """(N,) float32 at 16 kHz: --audio; else a prepared clip's own audio; else the audio file
    the motion was made from (its meta); None when the motion names none."""
    if audio_path is not None:
        return load_audio(audio_path)
    if "audio" in motion.extras:
        return np.asarray(motion.extras["audio"], np.float32)
    recorded = motion.meta.get("audio")
    if not isinstance(recorded, str) or not recorded or recorded.startswith("<"):
        return None   # made from audio bytes (the service): nothing to find again
    if not Path(recorded).is_file():
        raise RenderError(f"{motion_path}: its audio {recorded!r} is not found; pass the speech "
                          "with --audio")
    return load_audio(recorded)


def _frames(renderer: PhotorealRenderer, motion: Motion, count: int) -> Iterator[np.ndarray]:
    for index in range(count):
        yield renderer.render(motion.landmarks[min(index, motion.frame_count - 1)])


def _beside(photoreal: Iterator[np.ndarray], rig_video: str | Path, size: int
            ) -> Iterator[np.ndarray]:
    """The rig's video (scaled to the same height, left) beside the photoreal frames (right);
    the rig's last frame is held if it is shorter."""
    rig_frames = (image for _, image in iter_frames(rig_video, max_side=4096))
    last = None
    for frame in photoreal:
        rig = next(rig_frames, None)
        last = last if rig is None else rig
        if last is None:
            raise RenderError(f"{rig_video}: no frame could be read for the side-by-side")
        width = max(2, round(last.shape[1] * size / last.shape[0]))
        scaled = cv2.resize(last, (width, size), interpolation=cv2.INTER_AREA)
        yield np.concatenate([scaled, frame], axis=1)


def summary_line(out: str | Path, result: dict) -> str:
    return (f"{out}: {result['frames']} frames at {result['fps']:g} fps "
            f"({result['seconds']:.1f} s)")

