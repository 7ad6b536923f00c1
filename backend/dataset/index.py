"""The prepared dataset on disk: `index.json` plus one motion file per clip segment.

    DATASET/
      index.json                 provenance and status of every source clip (see ClipRecord)
      clips/<segment_id>.npz     a motion file (retarget.motion_file) at 25 fps with extras:
                                   canonical (T, 478, 3) float32  canonical frame, pose removed
                                   neutral   (478, 3)   float32  the clip's neutral shape, canonical
                                   blink     (T, 2)     float32  eyelid aperture (right, left),
                                                                  lid gap / eye width
                                   head_scale (T,), head_rotation (T, 3, 3), head_translation (T, 3)
                                              float64 the fitted canonical->pixel similarity
                                   audio     (T * 640,) float32  16 kHz, loudness-normalised,
                                                                  sample 0 = frame 0
      features/<extractor>-25fps-<sha256>.npy  (T, dim) float32 speech features, cached by content
The segment's `pose` is relative to its first frame.
"""

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...retarget.atomic_file import atomic_open
from ...retarget.motion_file import Motion, load_motion

INDEX_NAME = "index.json"
INDEX_VERSION = 1


@dataclass
class SegmentRecord:
    segment_id: str
    file: str               # relative to the dataset folder
    frames: int
    start_s: float          # time of frame 0 in the source video
    features: dict[str, str] = field(default_factory=dict)  # extractor -> relative .npy path


@dataclass
class ClipRecord:
    clip_id: str
    video: str
    audio: str
    content_hash: str       # sha256 of the video and audio bytes and the pipeline version
    split: str = "train"
    speaker: str = ""
    license: str = ""
    source: str = ""        # e.g. "owner/repo@commit:path"
    language: str = ""      # of the speech, e.g. "en" (from the manifest; "" = not stated)
    status: str = "ok"      # "ok" or "failed"
    error: str = ""
    source_fps: float = 0.0
    source_frames: int = 0
    tracked_frames: int = 0
    faces_seen: int = 0
    segments: list[SegmentRecord] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return self.tracked_frames / self.source_frames if self.source_frames else 0.0

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.segments)


def load_index(dataset: str | Path) -> list[ClipRecord]:
    path = Path(dataset) / INDEX_NAME
    if not path.is_file():
        return []
    raw = json.loads(path.read_text())
    clips = []
    for item in raw["clips"]:
        segments = [SegmentRecord(**s) for s in item.pop("segments")]
        clips.append(ClipRecord(**item, segments=segments))
    return clips


def save_index(dataset: str | Path, clips: list[ClipRecord]) -> None:
    """Atomic write of index.json, clips sorted by id."""
    dataset = Path(dataset)
    dataset.mkdir(parents=True, exist_ok=True)
    payload = {"version": INDEX_VERSION,
               "clips": [asdict(c) for c in sorted(clips, key=lambda c: c.clip_id)]}
    with atomic_open(dataset / INDEX_NAME, "w") as handle:
        json.dump(payload, handle, indent=1)


def iter_segments(dataset: str | Path, split: str | None = None
                  ) -> Iterator[tuple[ClipRecord, SegmentRecord, Motion]]:
    """Every prepared segment of a split (all splits when None), with its motion file.

    A split is a manifest split ("train", "dev", "unseen") or a leave-source-out fold
    ("fold-K", "train-minus-fold-K"; backend.dataset.folds)."""
    from .folds import select_clips

    dataset = Path(dataset)
    clips = load_index(dataset)
    for clip in clips if split is None else select_clips(clips, split):
        if clip.status != "ok":
            continue
        for segment in clip.segments:
            yield clip, segment, load_motion(dataset / segment.file)


def load_features(dataset: str | Path, segment: SegmentRecord, extractor: str) -> np.ndarray:
    """(T, dim) float32 cached speech features of a segment ("a+b": both, side by side)."""
    if "+" in extractor:
        return np.concatenate([load_features(dataset, segment, part)
                               for part in extractor.split("+")], axis=1)
    if extractor not in segment.features:
        raise KeyError(f"segment {segment.segment_id} has no {extractor!r} features; "
                       f"re-run `dimitra prepare` with --features {extractor}")
    return np.load(Path(dataset) / segment.features[extractor])
