"""Training windows streamed from a prepared dataset.

Only `buffer_clips` segments are in memory at once, so the dataset may be far larger than
memory (VoxCeleb2 scale): segments are visited in a shuffled order, each rank of a multi-GPU
run reads its own share of them, and windows are drawn from the segments in the buffer.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ...retarget.face import topology
from ...retarget.face.measures import inner_lip_gap
from ...retarget.motion_file import load_motion
from ..dataset.folds import select_clips
from ..dataset.index import ClipRecord, SegmentRecord, load_features, load_index
from ..features.speech_activity import speech_frames
from ..model.motion_space import MotionSpace
from .av_offsets import shift_features

CLOSED_GAP = 0.025   # inter-ocular units: lips touching (the eval's closure threshold)


@dataclass
class TrainingSegment:
    motion_raw: np.ndarray      # (T, D) lower/upper PCA coefficients, pose relative to clip start
    features: np.ndarray        # (T, F)
    variants: list[np.ndarray]  # [(T, F)] the features of changed copies of the audio
    identity: np.ndarray        # (K_i,) whitened identity code
    neutral_lip_gap: np.ndarray  # (3,) neutral[13] - neutral[14], canonical frame
    closed: np.ndarray          # (T,) bool: lips together during speech


def list_segments(dataset: str | Path, split: str) -> list[tuple[ClipRecord, SegmentRecord]]:
    """The (clip, segment) pairs of a split or leave-source-out fold (backend.dataset.folds)."""
    return [(c, s) for c in select_clips(load_index(dataset), split) for s in c.segments]


def load_training_segment(dataset: str | Path, segment: SegmentRecord, space: MotionSpace,
                          extractor: str, with_variants: bool = False,
                          offset: int = 0) -> TrainingSegment:
    """with_variants: also load the segment's voice-variant features ("EXTRACTOR~VARIANT",
    backend.features.voice_variants) that the dataset holds. offset: the clip's audio-video
    offset in frames (backend.training.av_offsets); motion frame t gets the features of
    frame t + offset."""
    motion = load_motion(Path(dataset) / segment.file)
    canonical, neutral = motion.extras["canonical"], motion.extras["neutral"]
    raw = space.encode(canonical, neutral, motion.pose) * space.motion_std
    features = shift_features(load_features(dataset, segment, extractor), offset)
    variants = [shift_features(load_features(dataset, segment, name), offset).astype(np.float32)
                for name in sorted(segment.features)
                if with_variants and name.startswith(extractor + "~")]
    gap = inner_lip_gap(canonical)
    speech = speech_frames(motion.extras["audio"], len(canonical), motion.fps)
    return TrainingSegment(raw.astype(np.float32), features.astype(np.float32), variants,
                           space.identity_code(neutral),
                           (neutral[topology.UPPER_INNER_LIP] - neutral[topology.LOWER_INNER_LIP]).astype(np.float32),
                           (gap < CLOSED_GAP) & speech)


@dataclass
class WindowSettings:
    window: int = 100
    context: int = 16
    context_probability: float = 0.5
    augment: bool = True
    tempo_range: float = 0.1         # time-stretch by up to ±10% (features and motion together)
    feature_noise: float = 0.1       # Gaussian noise, as a share of the features' spread
    identity_noise: float = 0.2      # in whitened identity units
    voice_variants: float = 0.0      # share of windows whose features come from a voice variant


def sample_window(segment: TrainingSegment, space: MotionSpace, settings: WindowSettings,
                  rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One training example: whitened motion (L, D), features (L, F), masks (L,)."""
    length = settings.window
    frames = len(segment.motion_raw)
    tempo = 1.0
    if settings.augment:
        tempo = rng.uniform(1 - settings.tempo_range, 1 + settings.tempo_range)
    span = min(frames, max(2, round(length * tempo)))
    start = int(rng.integers(0, frames - span + 1))
    # Resample `span` source frames onto min(length, span / tempo) output frames.
    out_len = min(length, max(2, round(span / tempo)))
    positions = start + np.linspace(0, span - 1, out_len)
    motion = _interpolate(segment.motion_raw, positions)
    source = segment.features
    if settings.augment and segment.variants and rng.random() < settings.voice_variants:
        source = segment.variants[int(rng.integers(len(segment.variants)))]
    features = _interpolate(source, positions)
    closed = segment.closed[np.round(positions).astype(int)]
    pose = space.region_slices()["pose"]
    motion[:, pose] -= motion[0, pose]
    motion /= space.motion_std
    identity = segment.identity.copy()
    if settings.augment:
        features = features + rng.normal(0, settings.feature_noise * features.std(), features.shape)
        identity = identity + rng.normal(0, settings.identity_noise, identity.shape)

    valid = np.zeros(length, bool)
    valid[:out_len] = True
    context_mask = np.zeros(length, np.float32)
    if rng.random() < settings.context_probability and out_len > settings.context:
        context_mask[:settings.context] = 1
    return {
        "motion": torch.from_numpy(_pad(motion, length)).float(),
        "features": torch.from_numpy(_pad(features, length)).float(),
        "identity": torch.from_numpy(identity).float(),
        "neutral_lip_gap": torch.from_numpy(segment.neutral_lip_gap),
        "closed": torch.from_numpy(_pad(closed, length)),
        "valid": torch.from_numpy(valid),
        "context_mask": torch.from_numpy(context_mask),
    }


class WindowStream(IterableDataset):
    """Endless random windows from a split, `buffer_clips` segments in memory at a time."""

    def __init__(self, dataset, split: str, space: MotionSpace, extractor: str,
                 settings: WindowSettings, seed: int = 0, rank: int = 0, world: int = 1,
                 buffer_clips: int = 64, windows_per_load: int = 16,
                 offsets: dict[str, int] | None = None):
        self.dataset, self.space, self.extractor = Path(dataset), space, extractor
        self.offsets = offsets or {}   # segment_id -> audio-video offset, frames
        self.settings, self.seed = settings, seed
        segments = list_segments(dataset, split)
        if not segments:
            raise ValueError(f"{dataset}: no prepared {split!r} segments; run `dimitra prepare` "
                             f"with clips in the {split!r} split first")
        # Each rank reads its own share; with fewer segments than ranks they share them all
        # (their windows still differ: the seed includes the rank).
        self.segments = segments[rank::world] if len(segments) >= world else segments
        self.buffer_clips, self.windows_per_load = buffer_clips, windows_per_load

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # With DataLoader workers, each reads its own share of this rank's segments.
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        segments = self.segments[worker::workers] or self.segments
        rng = np.random.default_rng(self.seed if workers == 1 else [self.seed, worker])
        buffer: list[TrainingSegment] = []
        while True:
            for index in rng.permutation(len(segments)):
                loaded = load_training_segment(
                    self.dataset, segments[index][1], self.space, self.extractor,
                    with_variants=self.settings.augment and self.settings.voice_variants > 0,
                    offset=self.offsets.get(segments[index][1].segment_id, 0))
                if len(buffer) < self.buffer_clips:
                    buffer.append(loaded)
                else:
                    buffer[int(rng.integers(len(buffer)))] = loaded
                if len(buffer) < min(self.buffer_clips, len(segments)):
                    continue
                # Long segments hold more windows: draw in proportion to length.
                weights = np.array([len(s.motion_raw) for s in buffer], dtype=np.float64)
                for _ in range(self.windows_per_load):
                    choice = buffer[int(rng.choice(len(buffer), p=weights / weights.sum()))]
                    yield sample_window(choice, self.space, self.settings, rng)


def _interpolate(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    left = np.floor(positions).astype(int)
    right = np.minimum(left + 1, len(values) - 1)
    weight = (positions - left)[:, None]
    return (values[left] * (1 - weight) + values[right] * weight).astype(np.float32)


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    if len(values) >= length:
        return values[:length]
    pad = [(0, length - len(values))] + [(0, 0)] * (values.ndim - 1)
    return np.pad(values, pad)
