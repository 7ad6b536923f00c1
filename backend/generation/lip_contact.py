"""Lip contact: lips that nearly meet, meet.

A diffusion model averages over plausible mouths, so a bilabial (p, b, m) often comes out as
a narrow slit instead of a seal. Real lips are soft and press together once they touch; this
models that contact: an inner-lip gap g under `reach` is narrowed to g * s(g / reach), with
s(x) = x^2 (3 - 2x) (smooth, equal to 1 at the reach, so wider mouths are untouched). Upper
and lower lip each travel half of the closing, the lip centre most, the corners not at all.
Lips that have passed through each other (the upper inner lip below the lower one, by up to
0.02 in the model's output) come back the right way round, to the gap a gap of that size
would seal to. (Not to exactly 0: that makes runs of tied minima, and a closure is the
lowest frame of a dip, the first of a tie, so closures land early and fewer are matched;
docs/MODEL_CARD.md, "Sharpening near closures".)
"""

import numpy as np

from ...retarget.face import topology

# Upper and lower lip points with how far they follow the closing (corners 61/291/78/308: 0).
UPPER_LIP = {13: 1.0, 82: 0.9, 312: 0.9, 81: 0.7, 311: 0.7, 80: 0.45, 310: 0.45, 191: 0.2, 415: 0.2,
             0: 0.8, 37: 0.75, 267: 0.75, 39: 0.55, 269: 0.55, 40: 0.35, 270: 0.35, 185: 0.15, 409: 0.15}
LOWER_LIP = {14: 1.0, 87: 0.9, 317: 0.9, 178: 0.7, 402: 0.7, 88: 0.45, 318: 0.45, 95: 0.2, 324: 0.2,
             17: 0.8, 84: 0.75, 314: 0.75, 181: 0.55, 405: 0.55, 91: 0.35, 321: 0.35, 146: 0.15, 375: 0.15}


def apply_lip_contact(canonical: np.ndarray, reach: float = 0.05, in_place: bool = False
                      ) -> np.ndarray:
    """canonical (T, 478, 3), inter-ocular units -> the same with near-closures sealed
    (a new array, or `canonical` itself changed when in_place: long audio saves a copy)."""
    if reach <= 0:
        return canonical
    out = canonical if in_place else canonical.copy()
    opening = out[:, topology.UPPER_INNER_LIP] - out[:, topology.LOWER_INNER_LIP]
    gap = np.linalg.norm(opening, axis=-1)                                   # (T,)
    x = np.clip(gap / reach, 0.0, 1.0)
    closing = gap - gap * x * x * (3 - 2 * x)                                # (T,) >= 0
    crossed = opening[:, 1] < 0                                              # canonical y is up
    closing = np.where(crossed, 2 * gap - closing, closing)                  # through 0 and back
    direction = opening / np.maximum(gap, 1e-9)[:, None]                     # lower -> upper
    step = (0.5 * closing)[:, None] * direction                              # (T, 3)
    for point, weight in UPPER_LIP.items():
        out[:, point] -= weight * step
    for point, weight in LOWER_LIP.items():
        out[:, point] += weight * step
    return out
