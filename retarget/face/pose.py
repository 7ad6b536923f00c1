"""Head pose: weighted rigid fit (Kabsch/Umeyama with scale) of landmarks to the canonical face.

Frames and units:
- pixel frame: MediaPipe landmarks scaled to the image, x right, y down, z away from the camera
  (MediaPipe's z, in the same units as x);
- canonical frame: the canonical face's, x toward the subject's left (image right), y up,
  z out of the face toward the camera, in inter-ocular units (outer eye corners 1 apart).
The two differ by a 180° turn about x (`PIXEL_FROM_UPRIGHT`), so a frontal upright face has
head rotation identity. Rotations are matrices acting on column vectors; Euler angles follow
Blender's 'XYZ' mode (R = Rz @ Ry @ Rx), so head bones can take them directly.
"""

from dataclasses import dataclass

import numpy as np

from . import topology

PIXEL_FROM_UPRIGHT = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Similarity:
    """x' = scale * rotation @ x + translation; fields batched over leading dims (...)."""

    scale: np.ndarray        # (...,)
    rotation: np.ndarray     # (..., 3, 3), det +1
    translation: np.ndarray  # (..., 3)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """points (..., N, 3) -> (..., N, 3)."""
        # points @ (s R)^T: a batched matmul, 6x faster than einsum on a take's (T, 478, 3)
        scaled_rotation_t = self.scale[..., None, None] * np.swapaxes(self.rotation, -1, -2)
        return points @ scaled_rotation_t + self.translation[..., None, :]

    def inverse(self) -> "Similarity":
        rotation_t = np.swapaxes(self.rotation, -1, -2)
        scale = 1.0 / self.scale
        translation = -scale[..., None] * np.einsum("...ij,...j->...i", rotation_t, self.translation)
        return Similarity(scale, rotation_t, translation)

    def compose(self, first: "Similarity") -> "Similarity":
        """The transform that applies `first`, then `self`."""
        return Similarity(
            self.scale * first.scale,
            self.rotation @ first.rotation,
            self.scale[..., None] * np.einsum("...ij,...j->...i", self.rotation, first.translation)
            + self.translation,
        )

    def __getitem__(self, index) -> "Similarity":
        return Similarity(self.scale[index], self.rotation[index], self.translation[index])


def fit_similarity(source: np.ndarray, target: np.ndarray,
                   weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity taking source (..., N, 3) onto target (..., N, 3).

    Weighted Umeyama: rotation by SVD with the reflection removed, so det(rotation) = +1.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    w = np.ones(source.shape[-2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    source_mean = np.einsum("n,...nd->...d", w, source)
    target_mean = np.einsum("n,...nd->...d", w, target)
    source_c = source - source_mean[..., None, :]
    target_c = target - target_mean[..., None, :]
    covariance = np.einsum("n,...ni,...nj->...ij", w, target_c, source_c)
    u, singular, vt = np.linalg.svd(covariance)
    flip = np.sign(np.linalg.det(u @ vt))
    correction = np.ones(singular.shape)
    correction[..., 2] = flip
    rotation = (u * correction[..., None, :]) @ vt
    source_var = np.einsum("n,...nd,...nd->...", w, source_c, source_c)
    scale = (singular * correction).sum(-1) / source_var
    translation = target_mean - scale[..., None] * np.einsum("...ij,...j->...i", rotation, source_mean)
    return Similarity(scale, rotation, translation)


def fit_head_pose(landmarks_px: np.ndarray, canonical_face: np.ndarray) -> Similarity:
    """Per-frame transform canonical -> pixel frame, fitted on the stable points.

    landmarks_px (..., 478, 3) pixel frame; canonical_face (478, 3) canonical frame.
    """
    stable = list(topology.STABLE_POINTS)
    return fit_similarity(canonical_face[stable], landmarks_px[..., stable, :],
                          topology.STABLE_WEIGHTS)


def to_canonical(landmarks_px: np.ndarray, head_pose: Similarity) -> np.ndarray:
    """(..., 478, 3) pixel frame -> canonical frame, pose and scale removed."""
    return head_pose.inverse().apply(landmarks_px)


def head_rotation(head_pose: Similarity) -> np.ndarray:
    """(..., 3, 3) rotation of the head in upright axes; identity for a frontal upright face."""
    return PIXEL_FROM_UPRIGHT @ head_pose.rotation


def relative_pose(head_pose: Similarity, reference: Similarity) -> np.ndarray:
    """(T, 6) head rotation XYZ (radians) and translation relative to a reference pose.

    Rotation: R(t) @ R(ref)^T in upright axes (how far the head turned, seen from the camera).
    Translation: displacement of the head origin in upright axes, in canonical units of the
    reference (inter-ocular distances).
    """
    rotation = head_rotation(head_pose) @ np.swapaxes(head_rotation(reference), -1, -2)
    shift_px = head_pose.translation - reference.translation
    shift = np.einsum("ij,...j->...i", PIXEL_FROM_UPRIGHT, shift_px) / reference.scale[..., None]
    return np.concatenate([rotation_to_euler_xyz(rotation), shift], axis=-1)


def pose_from_relative(pose: np.ndarray, reference: Similarity) -> Similarity:
    """Inverse of `relative_pose` (scale taken from the reference): (T, 6) -> Similarity."""
    rotation = euler_xyz_to_rotation(pose[..., :3]) @ head_rotation(reference)
    shift_px = np.einsum("ij,...j->...i", PIXEL_FROM_UPRIGHT, pose[..., 3:]) * reference.scale[..., None]
    scale = np.broadcast_to(reference.scale, pose.shape[:-1]).astype(np.float64)
    return Similarity(scale, PIXEL_FROM_UPRIGHT @ rotation, reference.translation + shift_px)


def euler_xyz_to_rotation(angles: np.ndarray) -> np.ndarray:
    """(..., 3) radians (x, y, z) -> (..., 3, 3), R = Rz @ Ry @ Rx (Blender 'XYZ')."""
    ax, ay, az = (np.asarray(angles, dtype=np.float64)[..., i] for i in range(3))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    return np.stack([
        np.stack([cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx], -1),
        np.stack([sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx], -1),
        np.stack([-sy, cy * sx, cy * cx], -1),
    ], -2)


def rotation_to_euler_xyz(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) radians, inverse of `euler_xyz_to_rotation` for |y| < 90°."""
    sy = np.clip(-rotation[..., 2, 0], -1.0, 1.0)
    return np.stack([
        np.arctan2(rotation[..., 2, 1], rotation[..., 2, 2]),
        np.arcsin(sy),
        np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0]),
    ], -1)
