"""Rotation matrices, quaternions and axis-angle, batched over leading dims (numpy only).

Matrices act on column vectors; quaternions are (w, x, y, z) as Blender stores them.
"""

import numpy as np


def axis_angle_to_matrix(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """axis (..., 3) (normalised here), angle (...,) radians -> (..., 3, 3) (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-300)
    angle = np.asarray(angle, dtype=np.float64)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros(np.broadcast(x, angle).shape)
    cross = np.stack([np.stack([zero, -z + zero, y + zero], -1),
                      np.stack([z + zero, zero, -x + zero], -1),
                      np.stack([-y + zero, x + zero, zero], -1)], -2)
    sin, cos = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + sin * cross + (1 - cos) * (cross @ cross)


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 4) unit (w, x, y, z), w >= 0, stable for every rotation."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate formulas; each is accurate where its leading term is largest.
    candidates = np.stack([
        np.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                  m[..., 1, 0] - m[..., 0, 1]], -1),
        np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                  m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                  1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                  m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)                                                                 # (..., 4, 4)
    leading = np.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1).argmax(-1)
    q = np.take_along_axis(candidates, leading[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return q * np.where(q[..., :1] < 0, -1.0, 1.0)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) (w, x, y, z) -> (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = (q[..., i] for i in range(4))
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def continuous_quaternions(q: np.ndarray) -> np.ndarray:
    """(T, 4) with signs flipped so consecutive quaternions stay on one side (no 360° jumps)."""
    q = np.array(q, dtype=np.float64)
    flips = np.sign(np.einsum("ti,ti->t", q[1:], q[:-1]))
    flips[flips == 0] = 1
    q[1:] *= np.cumprod(flips)[:, None]
    return q


def rotation_fraction(rotation: np.ndarray, fraction: float) -> np.ndarray:
    """(..., 3, 3): the same axis, `fraction` of the angle (shortest way)."""
    q = matrix_to_quaternion(rotation)
    half = np.arccos(np.clip(q[..., 0], -1.0, 1.0))
    axis = q[..., 1:] / np.maximum(np.sin(half), 1e-12)[..., None]
    return axis_angle_to_matrix(axis, 2 * half * fraction)


def rotation_angle(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (...,) angle in radians."""
    trace = np.trace(rotation, axis1=-2, axis2=-1)
    return np.arccos(np.clip((trace - 1) / 2, -1.0, 1.0))
