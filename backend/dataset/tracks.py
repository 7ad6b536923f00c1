"""From per-frame tracking results to clean 25 fps landmark segments.

Frames where the face was missed are NaN. Gaps up to `max_gap` frames are bridged by linear
interpolation (a blink of the tracker, not of the face); longer gaps split the clip, because
inventing half a second of motion would teach the model motion nobody made.
"""

from dataclasses import dataclass

import numpy as np

MODEL_FPS = 25.0
MAX_GAP_FRAMES = 5
MIN_SEGMENT_S = 0.5


@dataclass
class Segment:
    times_s: np.ndarray        # (T,) seconds, evenly spaced at the target fps
    landmarks: np.ndarray      # (T, 478, 3) float32


def split_tracks(times_s: np.ndarray, landmarks: np.ndarray, max_gap: int = MAX_GAP_FRAMES
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bridge short gaps and cut at long ones.

    times_s (F,) source frame times; landmarks (F, 478, 3) with NaN rows for missed frames.
    Returns [(times (F_i,), landmarks (F_i, 478, 3))] with no NaN, one per tracked run.
    """
    found = np.isfinite(landmarks).all(axis=(1, 2))
    runs, start, missed = [], None, 0
    for i, ok in enumerate(found):
        if ok:
            if start is None:
                start = i
            missed = 0
        elif start is not None:
            missed += 1
            if missed > max_gap:
                runs.append((start, i - missed + 1))
                start, missed = None, 0
    if start is not None:
        end = len(found) - missed  # trailing misses are dropped, not extrapolated
        runs.append((start, end))
    out = []
    for a, b in runs:
        t, points = times_s[a:b], landmarks[a:b].copy()
        hole = ~np.isfinite(points).all(axis=(1, 2))
        if hole.any():
            # Runs start and end on tracked frames, so every hole has a tracked frame each side.
            known_t, known = t[~hole], points[~hole]
            right = np.searchsorted(known_t, t[hole])
            weight = ((t[hole] - known_t[right - 1]) / (known_t[right] - known_t[right - 1]))[:, None, None]
            points[hole] = known[right - 1] * (1 - weight) + known[right] * weight
        out.append((t, points))
    return out


def resample_track(times_s: np.ndarray, landmarks: np.ndarray, fps: float = MODEL_FPS) -> Segment:
    """Linear resampling of a gap-free track onto an even grid starting at its first frame."""
    count = int(np.floor((times_s[-1] - times_s[0]) * fps + 1e-6)) + 1
    grid = times_s[0] + np.arange(count) / fps
    right = np.clip(np.searchsorted(times_s, grid, side="right"), 1, len(times_s) - 1)
    left = right - 1
    span = np.maximum(times_s[right] - times_s[left], 1e-9)
    weight = np.clip((grid - times_s[left]) / span, 0.0, 1.0)[:, None, None]
    if len(times_s) == 1:
        return Segment(grid, landmarks[:1].astype(np.float32))
    points = landmarks[left] * (1 - weight) + landmarks[right] * weight
    return Segment(grid, points.astype(np.float32))


def clean_segments(times_s: np.ndarray, landmarks: np.ndarray, fps: float = MODEL_FPS,
                   max_gap: int = MAX_GAP_FRAMES, min_seconds: float = MIN_SEGMENT_S
                   ) -> list[Segment]:
    """split_tracks + resample_track, dropping pieces shorter than `min_seconds`."""
    segments = [resample_track(t, p, fps) for t, p in split_tracks(times_s, landmarks, max_gap)]
    return [s for s in segments if len(s.times_s) >= round(min_seconds * fps)]
