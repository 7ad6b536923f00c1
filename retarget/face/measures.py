"""Measurements on canonical landmarks that several parts need (dataset, retarget, eval)."""

import numpy as np

from . import topology


def eyelid_aperture(canonical: np.ndarray) -> np.ndarray:
    """(T, 478, 3) canonical -> (T, 2) lid gap / eye width for the (right, left) eye.

    About 0.25–0.35 for an open eye, under 0.1 when closed.
    """
    out = []
    for (upper, lower), (outer, inner) in ((topology.RIGHT_LID_MIDDLE, topology.RIGHT_EYE_CORNERS),
                                           (topology.LEFT_LID_MIDDLE, topology.LEFT_EYE_CORNERS)):
        gap = np.linalg.norm(canonical[..., upper, :] - canonical[..., lower, :], axis=-1)
        width = np.linalg.norm(canonical[..., outer, :] - canonical[..., inner, :], axis=-1)
        out.append(gap / np.maximum(width, 1e-9))
    return np.stack(out, axis=-1).astype(np.float32)


def inner_lip_gap(canonical: np.ndarray) -> np.ndarray:
    """(T, 478, 3) canonical -> (T,) distance of the inner lip mid points 13-14 (IOD units)."""
    return np.linalg.norm(canonical[..., topology.UPPER_INNER_LIP, :]
                          - canonical[..., topology.LOWER_INNER_LIP, :], axis=-1)


def neutral_shape(canonical: np.ndarray) -> np.ndarray:
    """(T, 478, 3) canonical -> (478, 3): the face at rest (mouth closed-ish, eyes open).

    Median over the frames whose mouth is among the least open fifth and whose eyes are not
    mid-blink; the median keeps single odd frames out.
    """
    gap = inner_lip_gap(canonical)
    eyes = eyelid_aperture(canonical).mean(-1)
    quiet = (gap <= np.quantile(gap, 0.2)) & (eyes >= 0.8 * np.median(eyes))
    if quiet.sum() < 3:
        quiet = gap <= np.quantile(gap, 0.2)
    return np.median(canonical[quiet], axis=0).astype(np.float32)
