"""The motion file: what `animate` writes, `bake` and the add-on read, and `eval` compares.

An `.npz` holding
  landmarks  (T, 478, 3) float32  pixel frame of the reference image: x right, y down (pixels),
                                  z MediaPipe depth in the same units as x;
  pose       (T, 6) float32       head rotation XYZ (radians, Blender 'XYZ' order, upright axes)
                                  relative to the reference, then translation in inter-ocular
                                  units of the reference (see retarget.face.pose.relative_pose);
  fps        () float64           frames per second;
  meta       () str               JSON object (source, model, options, provenance ...).
Any further arrays are extras (a prepared dataset clip adds canonical landmarks, audio ...).
Documented for users in docs/FORMATS.md.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .atomic_file import atomic_open
from .face.topology import NUM_LANDMARKS

FORMAT_VERSION = 1


class MotionFileError(ValueError):
    """A motion file that is missing, unreadable or not in the documented format."""


@dataclass
class Motion:
    landmarks: np.ndarray                 # (T, 478, 3) float32, pixel frame
    pose: np.ndarray                      # (T, 6) float32
    fps: float
    meta: dict = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        return len(self.landmarks)

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


def save_motion(path: str | Path, motion: Motion) -> Path:
    """Write atomically (temp file in the same folder, then rename): never a half-written file."""
    path = Path(path)
    _validate(motion, path)
    with atomic_open(path) as handle:
        write_motion(handle, motion)
    return path


def write_motion(handle: BinaryIO, motion: Motion) -> None:
    """The motion file's bytes into an open binary file (what the service sends for a job)."""
    _validate(motion, Path("<motion>"))
    arrays = {
        "landmarks": np.asarray(motion.landmarks, dtype=np.float32),
        "pose": np.asarray(motion.pose, dtype=np.float32),
        "fps": np.float64(motion.fps),
        "meta": np.array(json.dumps({"format_version": FORMAT_VERSION, **motion.meta})),
    }
    reserved = arrays.keys() & motion.extras.keys()
    if reserved:
        raise ValueError(f"extras may not reuse the names {sorted(reserved)}")
    np.savez(handle, **arrays, **motion.extras)


def load_motion(path: str | Path, extras: bool = True) -> Motion:
    path = Path(path)
    if not path.is_file():
        raise MotionFileError(f"{path}: no such motion file")
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle what we read
            missing = {"landmarks", "pose", "fps", "meta"} - set(data.files)
            if missing:
                raise MotionFileError(f"{path}: not a motion file, it lacks {sorted(missing)} "
                                      "(see docs/FORMATS.md)")
            motion = Motion(
                landmarks=data["landmarks"].astype(np.float32),
                pose=data["pose"].astype(np.float32),
                fps=float(data["fps"]),
                meta=json.loads(str(data["meta"])),
                extras={k: data[k] for k in data.files
                        if extras and k not in ("landmarks", "pose", "fps", "meta")},
            )
    except (OSError, ValueError, json.JSONDecodeError) as error:
        if isinstance(error, MotionFileError):
            raise
        raise MotionFileError(f"{path}: unreadable motion file ({error})") from error
    _validate(motion, path)
    return motion


def _validate(motion: Motion, path: Path) -> None:
    landmarks, pose = np.asarray(motion.landmarks), np.asarray(motion.pose)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 3):
        raise MotionFileError(f"{path}: landmarks must be (T, 478, 3), got {landmarks.shape}")
    if pose.shape != (len(landmarks), 6):
        raise MotionFileError(f"{path}: pose must be (T, 6) with T={len(landmarks)}, got {pose.shape}")
    if not (np.isfinite(motion.fps) and motion.fps > 0):
        raise MotionFileError(f"{path}: fps must be a positive number, got {motion.fps}")


def resample_motion(motion: Motion, fps: float) -> Motion:
    """The same motion at another frame rate (linear in time; 23.976 and 29.97 work).

    Frame k of the result is at k / fps seconds; the result covers the same duration.
    Extras that are per frame are resampled too; others are kept as they are.
    """
    if fps <= 0 or not np.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if abs(fps - motion.fps) < 1e-9:
        return motion
    count = max(1, int(np.floor(motion.duration_s * fps + 1e-6)))
    positions = np.minimum(np.arange(count) * motion.fps / fps, motion.frame_count - 1)
    left = np.floor(positions).astype(int)
    right = np.minimum(left + 1, motion.frame_count - 1)
    weight = positions - left

    def resample(values: np.ndarray) -> np.ndarray:
        w = weight.reshape(-1, *([1] * (values.ndim - 1)))
        return (values[left] * (1 - w) + values[right] * w).astype(values.dtype)

    extras = {k: resample(v) if v.ndim and len(v) == motion.frame_count else v
              for k, v in motion.extras.items()}
    return Motion(resample(motion.landmarks), resample(motion.pose), float(fps),
                  {**motion.meta, "resampled_from_fps": motion.fps}, extras)
