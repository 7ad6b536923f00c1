"""The two baselines every result is shown beside (docs/EVAL.md).

- static: the reference (first valid) frame repeated, the mouth never moves;
- amplitude: the reference frame with the jaw opened in proportion to the smoothed loudness,
  which is what simple lip-sync tools do. The jaw turns about the line through the ears
  (points 234 and 454) in the subject's own upright canonical frame, so the mouth opens down
  and back as a real jaw does, then the face is mapped back to the reference's pixel frame.
  The jaw angle counts from the closed mouth: a reference frame caught mid-word is first
  closed (jaw turned up until the inner lips 13 and 14 meet), so silence closes the lips as a
  lip-sync tool's rest pose would; otherwise the baseline could never score a closure.
Neither looks at the truth beyond its first frame, frame rate and length.
"""

import numpy as np

from ...retarget.face import canonical, pose, topology
from ...retarget.motion_file import Motion
from ..features.speech_activity import SILENCE_DB, SPEECH_RANGE_DB, frame_loudness_db
from .metrics import valid_frames

# Jaw rotation at full loudness. Chosen on the canonical face, not on any evaluated clip: the
# lower inner lip (14) sits about 1.0 IOD from the ear axis, so 0.27 rad (15.5°) opens the
# inner lips by about 0.27 IOD, the size of the widest openings in tracked speech (99th
# percentile of mouth_open on four dev clips: 0.12-0.30 IOD).
MAX_JAW_ANGLE_RAD = 0.27
# Loudness (frame RMS, dB) maps to jaw opening 0 at the 10th percentile of the clip's audible
# frames (never lower than 30 dB under the loud frames, the speech range), 1 at the 95th.
ENVELOPE_LOW_PERCENTILE = 10.0
ENVELOPE_HIGH_PERCENTILE = 95.0
ENVELOPE_SMOOTHING_FRAMES = 3
# Jaw weights: full below the lip line (reached 0.03 IOD under it), fading to nothing from
# 0.05 IOD beyond the mouth corners out to the ears.
_BELOW_LIP_RAMP = 0.03
_CORNER_MARGIN = 0.05
# The lip loops run corner, lower lip, other corner (index 10), upper lip.
_LIP_CORNERS = (topology.LIPS_OUTER[0], topology.LIPS_OUTER[10],
                topology.LIPS_INNER[0], topology.LIPS_INNER[10])
_LOWER_LIP = topology.LIPS_OUTER[1:10] + topology.LIPS_INNER[1:10]
_UPPER_LIP = topology.LIPS_OUTER[11:] + topology.LIPS_INNER[11:]
_EARS = (234, 454)


def reference_frame(truth: Motion) -> np.ndarray:
    """(478, 3) pixel landmarks of the truth's first valid frame."""
    valid = valid_frames(truth.landmarks)
    if not valid.any():
        raise ValueError("the true motion has no valid (finite) frame to start a baseline from")
    return np.asarray(truth.landmarks[np.argmax(valid)], dtype=np.float64)


def static_baseline(truth: Motion) -> Motion:
    """The reference frame repeated for the truth's length, head pose zero."""
    count = truth.frame_count
    landmarks = np.repeat(reference_frame(truth)[None], count, axis=0).astype(np.float32)
    return Motion(landmarks, np.zeros((count, 6), np.float32), truth.fps,
                  meta={"method": "static"})


def amplitude_baseline(truth: Motion, audio_16k: np.ndarray,
                       canonical_face: np.ndarray | None = None) -> Motion:
    """The reference frame, lips closed, with the jaw opened by the smoothed loudness.

    audio_16k (N,) 16 kHz mono, sample 0 = frame 0; canonical_face (478, 3) defaults to the
    shipped one (only its orientation matters: it finds the subject's upright axes).
    """
    count = truth.frame_count
    envelope = loudness_envelope(audio_16k, count, truth.fps)
    landmarks = open_jaw(reference_frame(truth), MAX_JAW_ANGLE_RAD * envelope, canonical_face,
                         from_closed=True)
    return Motion(landmarks.astype(np.float32), np.zeros((count, 6), np.float32), truth.fps,
                  meta={"method": "amplitude", "max_jaw_angle_rad": MAX_JAW_ANGLE_RAD})


def loudness_envelope(audio_16k: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """(T,) jaw opening in [0, 1]: frame loudness mapped by the clip's percentiles, smoothed."""
    level = frame_loudness_db(audio_16k, n_frames, fps)
    audible = level > SILENCE_DB
    if not audible.any():
        return np.zeros(n_frames)
    low, high = np.percentile(level[audible], [ENVELOPE_LOW_PERCENTILE, ENVELOPE_HIGH_PERCENTILE])
    low = max(low, high - SPEECH_RANGE_DB)
    if high - low < 1e-6:   # a steady tone: open where it sounds
        opening = audible.astype(np.float64)
    else:
        opening = np.clip((level - low) / (high - low), 0.0, 1.0)
    half = ENVELOPE_SMOOTHING_FRAMES // 2
    padded = np.pad(opening, half, mode="edge")
    kernel = np.full(ENVELOPE_SMOOTHING_FRAMES, 1.0 / ENVELOPE_SMOOTHING_FRAMES)
    return np.convolve(padded, kernel, mode="valid")


def open_jaw(reference_px: np.ndarray, angles: np.ndarray,
             canonical_face: np.ndarray | None = None, from_closed: bool = False) -> np.ndarray:
    """(T, 478, 3) pixel landmarks: reference_px (478, 3) with the jaw turned by angles (T,) rad.

    Positive angles open the mouth. Each point turns about the ear axis by its jaw weight
    times the angle; the skull (upper lip, nose, eyes, stable points) does not move. With
    from_closed, the angles count from the closed mouth: the jaw first turns until the lower
    inner lip (14) lines up with the upper (13), and the jaw-weighted points then shift by
    what is left of the gap, so angle 0 has the inner lips touching.
    """
    if canonical_face is None:
        canonical_face = canonical.load_canonical_face()
    reference_px = np.asarray(reference_px, dtype=np.float64)
    head_pose = pose.fit_head_pose(reference_px, canonical_face)     # canonical -> pixel
    face = pose.to_canonical(reference_px, head_pose)                # (478, 3) upright, IOD
    weights = jaw_weights(face)                                      # (478,)
    pivot = face[list(_EARS)].mean(axis=0)
    if from_closed:
        upper = face[topology.UPPER_INNER_LIP] - pivot
        lower = face[topology.LOWER_INNER_LIP] - pivot
        closing = np.arctan2(upper[2], upper[1]) - np.arctan2(lower[2], lower[1])
        face = _turn_jaw(face, weights, pivot, np.array([closing]))[0]
        rest = face[topology.UPPER_INNER_LIP] - face[topology.LOWER_INNER_LIP]
        face = face + weights[:, None] * rest / weights[topology.LOWER_INNER_LIP]
    return head_pose.apply(_turn_jaw(face, weights, pivot, np.asarray(angles, dtype=np.float64)))


def _turn_jaw(face: np.ndarray, weights: np.ndarray, pivot: np.ndarray,
              angles: np.ndarray) -> np.ndarray:
    """(478, 3) canonical face -> (T, 478, 3), each point turned about +x through pivot."""
    turn = angles[:, None] * weights                                 # (T, 478)
    cos, sin = np.cos(turn), np.sin(turn)
    dy, dz = face[:, 1] - pivot[1], face[:, 2] - pivot[2]
    turned = np.broadcast_to(face, turn.shape + (3,)).copy()         # (T, 478, 3)
    # +x rotation carries the chin (below and in front of the ears) down and back.
    turned[..., 1] = pivot[1] + dy * cos - dz * sin
    turned[..., 2] = pivot[2] + dy * sin + dz * cos
    return turned


def jaw_weights(face: np.ndarray) -> np.ndarray:
    """(478,) share of the jaw rotation each point of an upright canonical face (478, 3) takes.

    1 on the lower lip and below the lip line near the midline, 0 on and above the upper lip,
    half at the mouth corners, fading out sideways toward the ears.
    """
    x, y = face[:, 0], face[:, 1]
    right_corner, left_corner = face[topology.LIPS_INNER[0]], face[topology.LIPS_INNER[10]]
    middle = (face[topology.UPPER_INNER_LIP] + face[topology.LOWER_INNER_LIP]) / 2
    # The lip line: a parabola through the inner corners and the middle of the inner lips,
    # flat beyond the corners.
    line = np.polyfit([right_corner[0], middle[0], left_corner[0]],
                      [right_corner[1], middle[1], left_corner[1]], 2)
    lip_line = np.polyval(line, np.clip(x, right_corner[0], left_corner[0]))
    below = np.clip((lip_line - y) / _BELOW_LIP_RAMP, 0.0, 1.0)
    half_width = max(abs(right_corner[0] - middle[0]), abs(left_corner[0] - middle[0]))
    ear = np.abs(face[list(_EARS), 0] - middle[0]).mean()
    side = np.abs(x - middle[0])
    fade = np.clip((ear - side) / (ear - half_width - _CORNER_MARGIN), 0.0, 1.0)
    fade = fade * fade * (3.0 - 2.0 * fade)                          # smoothstep
    weights = below
    weights[list(_LOWER_LIP)] = 1.0
    weights[list(_UPPER_LIP)] = 0.0
    weights[list(_LIP_CORNERS)] = 0.5
    weights = weights * fade
    weights[list(topology.STABLE_POINTS)] = 0.0
    weights[topology.NUM_MESH_LANDMARKS:] = 0.0                       # irises
    return weights
