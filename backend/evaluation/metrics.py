"""The metrics of docs/EVAL.md on landmark sequences (numpy only).

Every function takes plain arrays; `evaluate` chains them for a predicted and a true Motion.
Units: landmarks after `normalise_sequence` and every mouth or lip quantity are in inter-ocular
distances (IOD, outer eye corners 33-263 of the sequence's first valid frame); head angles are
radians; lags are frames of the truth's frame rate; audio is 16 kHz mono with sample 0 at frame 0.

Conventions that keep the mean table usable (NaN means "this clip cannot measure it", and means
over clips skip NaN):
- a flat (constant) prediction scores aperture_corr 0, motion_energy 0, head_motion 0 and
  best_lag and best_lag_corr NaN; a flat truth makes aperture_corr, best_lag, best_lag_corr,
  motion_energy (or head_motion) NaN;
- closure_recall is NaN when the truth has no closure, closure_precision when the prediction
  has none;
- frames that are not finite (tracking lost) are left out of every statistic.
"""

from typing import NamedTuple

import numpy as np

from ...retarget.face import canonical, measures, pose, topology
from ...retarget.motion_file import Motion

# The speech mask and the loudness it reads live in backend.features.speech_activity; they
# are importable from here too, as the metrics' own definitions (docs/EVAL.md).
from ..features.speech_activity import AUDIO_RATE as AUDIO_RATE
from ..features.speech_activity import SILENCE_DB as SILENCE_DB
from ..features.speech_activity import SPEECH_RANGE_DB as SPEECH_RANGE_DB
from ..features.speech_activity import frame_loudness_db as frame_loudness_db
from ..features.speech_activity import speech_frames

METRIC_NAMES = ("aperture_corr", "best_lag", "best_lag_corr", "lve", "closure_recall",
                "closure_precision", "motion_energy", "head_motion")

# A standard deviation below this is "no motion" (IOD for mouths, radians for heads): far below
# tracker jitter (~1e-3 IOD), far above float round-off of a repeated frame (~1e-15).
FLAT_STD = 1e-6
MAX_LAG = 10
# Closures. On tracked dev clips (feifeili_clip1, deep_avsr_00022, pc-avs_741400104,
# video-retalking_4) the prominent minima of mouth_open during speech fall in two groups:
# lips touching at 0.001-0.018 IOD, and narrow slits from 0.021 IOD up. 0.025 IOD (about 2 mm)
# sits in that gap. Between two closures the mouth must reopen past twice that, so jitter around
# the threshold within one closure is not counted twice.
CLOSURE_THRESHOLD = 0.025
CLOSURE_REOPEN = 0.05
CLOSURE_TOLERANCE = 2



class NormalisedSequence(NamedTuple):
    landmarks: np.ndarray    # (T, 478, 3) IOD units, upright; NaN where the frame is invalid
    head_angles: np.ndarray  # (T, 3) radians, XYZ Euler of the head relative to the first frame


# ---------------------------------------------------------------------------------------------
# Normalisation and resampling
# ---------------------------------------------------------------------------------------------

def valid_frames(landmarks: np.ndarray) -> np.ndarray:
    """(T,) bool: frames that are finite and have distinct outer eye corners."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    finite = np.isfinite(landmarks).all(axis=(1, 2))
    eyes = landmarks[:, topology.LEFT_EYE_OUTER] - landmarks[:, topology.RIGHT_EYE_OUTER]
    with np.errstate(invalid="ignore"):
        return finite & (np.linalg.norm(eyes, axis=-1) > 1e-9)


def normalise_sequence(landmarks: np.ndarray,
                       canonical_face: np.ndarray | None = None) -> NormalisedSequence:
    """(T, 478, 3) landmarks in any frame (pixels) -> the EVAL.md canonical frame.

    Each frame gets the weighted similarity (rotation, translation and scale, so a face moving
    toward the camera does not open its mouth) that best takes its stable points onto those of
    the first valid frame; the result is centred on that frame's stable-point centroid and
    divided by its inter-ocular distance. The whole sequence is then turned into the upright
    canonical axes (x to the subject's left, y up, z out of the face) by the rotation that
    fits the first valid frame to `canonical_face` (the shipped one when None), so that lip
    motion is compared along the same axes whichever way each sequence's camera looked.
    The head angles are the rotation each frame had to undo, in the upright camera axes and
    Euler order of the motion file's `pose`.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    count = len(landmarks)
    normalised = np.full((count, topology.NUM_LANDMARKS, 3), np.nan)
    angles = np.full((count, 3), np.nan)
    valid = valid_frames(landmarks) if count else np.zeros(0, dtype=bool)
    if not valid.any():
        return NormalisedSequence(normalised, angles)
    if canonical_face is None:
        canonical_face = canonical.load_canonical_face()
    reference = landmarks[np.argmax(valid)]
    stable, weights = list(topology.STABLE_POINTS), topology.STABLE_WEIGHTS
    with np.errstate(invalid="ignore", divide="ignore"):
        to_reference = pose.fit_similarity(landmarks[valid][:, stable], reference[stable], weights)
        aligned = to_reference.apply(landmarks[valid])                          # (V, 478, 3)
    upright = pose.fit_similarity(reference[stable], canonical_face[stable], weights).rotation
    origin = weights @ reference[stable] / weights.sum()
    iod = np.linalg.norm(reference[topology.LEFT_EYE_OUTER] - reference[topology.RIGHT_EYE_OUTER])
    normalised[valid] = (aligned - origin) @ upright.T / iod
    # The head turned by Q = rotation^T since the reference (pixel axes); upright as in `pose`.
    turned = np.swapaxes(to_reference.rotation, -1, -2)
    angles[valid] = pose.rotation_to_euler_xyz(
        pose.PIXEL_FROM_UPRIGHT @ turned @ pose.PIXEL_FROM_UPRIGHT)
    return NormalisedSequence(normalised, angles)


def mouth_open(normalised: np.ndarray) -> np.ndarray:
    """(T, 478, 3) normalised landmarks -> (T,) inner-lip gap (points 13-14) in IOD."""
    return measures.inner_lip_gap(normalised)


def resample_to(pred_landmarks: np.ndarray, pred_fps: float, n_frames: int,
                fps: float) -> np.ndarray:
    """(T', ...) sampled at pred_fps -> (n_frames, ...) at fps, frame 0 on frame 0.

    Linear in time between the two nearest frames; past the prediction's end the last frame
    is held. Works for landmarks (T', 478, 3) as for any per-frame array.
    """
    source = np.asarray(pred_landmarks, dtype=np.float64)
    if len(source) == 0:
        raise ValueError("the prediction has no frames; nothing to resample")
    position = np.arange(n_frames) * (float(pred_fps) / float(fps))   # in prediction frames
    first = np.clip(np.floor(position + 1e-9).astype(int), 0, len(source) - 1)
    second = np.minimum(first + 1, len(source) - 1)
    fraction = np.where(first == second, 0.0, np.clip(position - first, 0.0, 1.0))
    resampled = source[first].copy()
    between = fraction > 1e-9   # exact frames stay exact (and NaN neighbours stay out)
    f = fraction[between].reshape((-1,) + (1,) * (source.ndim - 1))
    resampled[between] = (1.0 - f) * source[first[between]] + f * source[second[between]]
    return resampled


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def aperture_corr(pred_open: np.ndarray, true_open: np.ndarray) -> float:
    """Pearson r of predicted vs true mouth_open (T,) at lag 0.

    A flat prediction scores 0 (it follows nothing), a flat truth NaN (nothing to follow).
    """
    return _pearson(pred_open, true_open)


def best_lag(pred_open: np.ndarray, true_open: np.ndarray, max_lag: int = MAX_LAG) -> float:
    """The lag k in [-max_lag, max_lag] frames maximising Pearson r of pred[t + k] vs truth[t].

    Positive = the prediction is late: a prediction that is the truth delayed by k frames,
    pred[t] = truth[t - k], gives +k. Lags are capped at half the sequence so the overlap
    stays meaningful; ties go to the smaller |k|. NaN when either sequence is flat.
    """
    return best_lag_and_corr(pred_open, true_open, max_lag)[0]


def best_lag_and_corr(pred_open: np.ndarray, true_open: np.ndarray,
                      max_lag: int = MAX_LAG) -> tuple[float, float]:
    """(best_lag, Pearson r at that lag). Beside aperture_corr (lag 0), the r at the best lag
    tells a model that follows the mouth but mistimes it (a large gap between the two) from
    one that does not follow it at all (both low). Both NaN when either sequence is flat."""
    pred = np.asarray(pred_open, dtype=np.float64)
    truth = np.asarray(true_open, dtype=np.float64)
    if _is_flat(pred) or _is_flat(truth):
        return float("nan"), float("nan")
    count = min(len(pred), len(truth))
    limit = min(int(max_lag), count // 2)
    best, best_r = float("nan"), -np.inf
    for lag in sorted(range(-limit, limit + 1), key=abs):
        if lag >= 0:
            r = _pearson(pred[lag:count], truth[:count - lag])
        else:
            r = _pearson(pred[:count + lag], truth[-lag:count])
        if np.isfinite(r) and r > best_r:
            best, best_r = float(lag), r
    return best, (float(best_r) if np.isfinite(best_r) else float("nan"))


def lip_vertex_error(pred_normalised: np.ndarray, true_normalised: np.ndarray) -> float:
    """LVE: mean over frames of the largest lip-point distance (IOD), shapes minus their means.

    Each sequence (T, 478, 3) has its own mean lip shape removed first, so identity and the
    neutral pose do not count, only motion. Frames invalid in either are left out.
    """
    lips = list(topology.LIPS)
    pred = np.asarray(pred_normalised, dtype=np.float64)[:, lips]
    truth = np.asarray(true_normalised, dtype=np.float64)[:, lips]
    both = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(truth).all(axis=(1, 2))
    if not both.any():
        return float("nan")
    pred, truth = pred[both], truth[both]
    pred = pred - pred.mean(axis=0)
    truth = truth - truth.mean(axis=0)
    return float(np.linalg.norm(pred - truth, axis=-1).max(axis=-1).mean())


def closure_frames(opening: np.ndarray, speech: np.ndarray | None = None,
                   threshold: float = CLOSURE_THRESHOLD,
                   reopen: float = CLOSURE_REOPEN) -> np.ndarray:
    """(K,) frames where the lips close during speech: minima of opening (T,) under `threshold`.

    The sequence is cut into dips, maximal runs below `reopen`; a dip's closure is its lowest
    speech frame, if that is under `threshold`. A mouth that never opens past `reopen` has no
    closures: a closure is the lips meeting, which a frozen mouth never does.
    """
    values = np.asarray(opening, dtype=np.float64)
    in_speech = np.ones(len(values), dtype=bool) if speech is None else np.asarray(speech, bool)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        low = finite & (values < reopen)
        if not (finite & (values >= reopen)).any():
            return np.zeros(0, dtype=int)
    edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
    closures = []
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        frames = np.arange(start, end)[in_speech[start:end]]
        if len(frames) == 0:
            continue
        lowest = frames[np.argmin(values[frames])]
        if values[lowest] < threshold:
            closures.append(lowest)
    return np.asarray(closures, dtype=int)


def closure_recall_precision(pred_open: np.ndarray, true_open: np.ndarray,
                             speech: np.ndarray | None = None,
                             tolerance: int = CLOSURE_TOLERANCE) -> tuple[float, float]:
    """(recall, precision) of predicted lip closures against the true ones, within ±tolerance.

    Recall: share of true closures with a predicted closure at most `tolerance` frames away
    (NaN when the truth has none); precision: the converse (NaN when the prediction has none).
    """
    truth = closure_frames(true_open, speech)
    pred = closure_frames(pred_open, speech)
    return _matched_share(truth, pred, tolerance), _matched_share(pred, truth, tolerance)


def motion_energy(pred_open: np.ndarray, true_open: np.ndarray) -> float:
    """std(predicted mouth_open) / std(true mouth_open): 1 ideal, frozen << 1, flapping >> 1."""
    pred = np.asarray(pred_open, dtype=np.float64)
    truth = np.asarray(true_open, dtype=np.float64)
    both = np.isfinite(pred) & np.isfinite(truth)
    if both.sum() < 2:
        return float("nan")
    return _std_ratio(pred[both].std(), truth[both].std())


def head_motion(pred_angles: np.ndarray, true_angles: np.ndarray) -> float:
    """Pooled std of the predicted head angles (T, 3) over the true one's: 1 ideal.

    Pooled = root of the summed per-axis variances, so an axis the truth hardly turns about
    cannot blow the ratio up (a mean of per-axis ratios would). NaN when the truth's head is
    still.
    """
    pred = np.asarray(pred_angles, dtype=np.float64)
    truth = np.asarray(true_angles, dtype=np.float64)
    both = np.isfinite(pred).all(axis=-1) & np.isfinite(truth).all(axis=-1)
    if both.sum() < 2:
        return float("nan")
    return _std_ratio(np.sqrt(pred[both].var(axis=0).sum()), np.sqrt(truth[both].var(axis=0).sum()))


def evaluate(pred: Motion, truth: Motion, audio: np.ndarray | None = None) -> dict[str, float]:
    """Every METRIC_NAMES value for a predicted against a true motion.

    The prediction is resampled to the truth's fps and length. `audio` (16 kHz, sample 0 =
    frame 0) gives the speech mask for closures; when None the truth's `audio` extra is used,
    and without either every frame counts as speech.
    """
    count = truth.frame_count
    if audio is None:
        audio = truth.extras.get("audio")
    pred_landmarks = resample_to(pred.landmarks, pred.fps, count, truth.fps)
    true_norm, true_angles = normalise_sequence(truth.landmarks)
    pred_norm, pred_angles = normalise_sequence(pred_landmarks)
    true_open, pred_open = mouth_open(true_norm), mouth_open(pred_norm)
    speech = None if audio is None else speech_frames(audio, count, truth.fps)
    recall, precision = closure_recall_precision(pred_open, true_open, speech)
    lag, lag_corr = best_lag_and_corr(pred_open, true_open)
    return {
        "aperture_corr": aperture_corr(pred_open, true_open),
        "best_lag": lag,
        "best_lag_corr": lag_corr,
        "lve": lip_vertex_error(pred_norm, true_norm),
        "closure_recall": recall,
        "closure_precision": precision,
        "motion_energy": motion_energy(pred_open, true_open),
        "head_motion": head_motion(pred_angles, true_angles),
    }


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _is_flat(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return len(finite) < 2 or finite.std() <= FLAT_STD


def _std_ratio(pred_std: float, true_std: float) -> float:
    """pred_std / true_std; NaN for a flat truth, exactly 0 for a flat prediction."""
    if true_std <= FLAT_STD:
        return float("nan")
    return 0.0 if pred_std <= FLAT_STD else float(pred_std / true_std)


def _pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson r over frames finite in both; 0 for a flat prediction, NaN for a flat truth."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    both = np.isfinite(pred) & np.isfinite(truth)
    if both.sum() < 3:
        return float("nan")
    pred = pred[both] - pred[both].mean()
    truth = truth[both] - truth[both].mean()
    pred_std, true_std = np.sqrt(np.mean(pred * pred)), np.sqrt(np.mean(truth * truth))
    if true_std <= FLAT_STD:
        return float("nan")
    if pred_std <= FLAT_STD:
        return 0.0
    return float(np.clip(np.mean(pred * truth) / (pred_std * true_std), -1.0, 1.0))


def _matched_share(events: np.ndarray, others: np.ndarray, tolerance: int) -> float:
    """Share of `events` with one of `others` within ±tolerance frames; NaN without events."""
    if len(events) == 0:
        return float("nan")
    if len(others) == 0:
        return 0.0
    distance = np.abs(events[:, None] - others[None, :]).min(axis=1)
    return float(np.mean(distance <= tolerance))
