"""The space the cMDT generates in: whitened per-region PCA of canonical displacements + pose.

A frame of motion is one vector (D = lower + upper + 6):
  lower  lips, jaw and cheeks below the nose tip: PCA coefficients of the displacement of
         those points from the speaker's neutral shape (canonical frame, inter-ocular units);
  upper  eyes, lids, irises, brows, forehead: the same for the points above;
  pose   head rotation XYZ (radians) and translation (inter-ocular units) relative to the
         window's first frame.
Every coordinate is divided by its training standard deviation, so the diffusion sees unit
variance. Identity (the neutral shape) gets its own small PCA, used to condition the model and
to separate a reference's identity from its expression (`neutralise`).
Numpy only; stored with the model weights as plain arrays.
"""

from dataclasses import dataclass

import numpy as np

from ...retarget.face import topology

REGIONS = ("lower", "upper", "pose")
POSE_DIM = 6


def region_points(canonical_face: np.ndarray) -> dict[str, np.ndarray]:
    """Landmark indices of the lower and upper face: split at the height of the nose tip."""
    lower = canonical_face[:, 1] < canonical_face[topology.NOSE_TIP, 1]
    lower[topology.NUM_MESH_LANDMARKS:] = False  # irises move with the eyes
    return {"lower": np.flatnonzero(lower), "upper": np.flatnonzero(~lower)}


@dataclass
class MotionSpace:
    canonical_face: np.ndarray          # (478, 3)
    lower_points: np.ndarray            # (P_l,) int
    upper_points: np.ndarray            # (P_u,) int
    lower_basis: np.ndarray             # (K_l, P_l * 3) orthonormal rows
    upper_basis: np.ndarray             # (K_u, P_u * 3)
    motion_std: np.ndarray              # (D,) std of each coordinate before whitening
    identity_basis: np.ndarray          # (K_i, 478 * 3) orthonormal rows
    identity_std: np.ndarray            # (K_i,)

    @property
    def dims(self) -> dict[str, int]:
        return {"lower": len(self.lower_basis), "upper": len(self.upper_basis), "pose": POSE_DIM}

    @property
    def motion_dim(self) -> int:
        return sum(self.dims.values())

    def region_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name in REGIONS:
            out[name] = slice(start, start + self.dims[name])
            start += self.dims[name]
        return out

    # -- motion -------------------------------------------------------------------------------
    def encode(self, canonical: np.ndarray, neutral: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """canonical (T, 478, 3), neutral (478, 3), pose (T, 6) -> whitened motion (T, D)."""
        displacement = canonical - neutral
        lower = displacement[:, self.lower_points].reshape(len(canonical), -1) @ self.lower_basis.T
        upper = displacement[:, self.upper_points].reshape(len(canonical), -1) @ self.upper_basis.T
        raw = np.concatenate([lower, upper, pose], axis=1)
        return (raw / self.motion_std).astype(np.float32)

    def decode(self, motion: np.ndarray, neutral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """whitened motion (T, D), neutral (478, 3) -> canonical (T, 478, 3), pose (T, 6)."""
        # float32 throughout: an hour at 25 fps is (90000, 478, 3), 0.5 GB in float32.
        raw = (motion * self.motion_std).astype(np.float32)
        parts = self.region_slices()
        canonical = np.repeat(neutral[None].astype(np.float32), len(motion), axis=0)
        for name, points, basis in (("lower", self.lower_points, self.lower_basis),
                                    ("upper", self.upper_points, self.upper_basis)):
            basis = basis.astype(np.float32)
            for start in range(0, len(motion), 4096):   # bounded (frames, points * 3) offsets
                part = slice(start, start + 4096)
                offsets = raw[part, parts[name]] @ basis
                canonical[part, points] += offsets.reshape(len(offsets), -1, 3)
        return canonical, raw[:, parts["pose"]]

    def lip_gap_basis(self) -> np.ndarray:
        """(K_l, 3): how raw lower-face coefficients move the inner-lip gap (point 13 minus
        point 14, canonical frame); gap = neutral[13] - neutral[14] + raw_lower @ this."""
        position = {p: i for i, p in enumerate(self.lower_points)}
        basis = self.lower_basis.reshape(len(self.lower_basis), -1, 3)
        return (basis[:, position[topology.UPPER_INNER_LIP]]
                - basis[:, position[topology.LOWER_INNER_LIP]])

    # -- identity -----------------------------------------------------------------------------
    def identity_code(self, neutral: np.ndarray) -> np.ndarray:
        """neutral (478, 3) -> whitened identity coefficients (K_i,)."""
        offset = (neutral - self.canonical_face).reshape(-1)
        return (self.identity_basis @ offset / self.identity_std).astype(np.float32)

    def neutralise(self, face: np.ndarray, noise: float = 0.01) -> np.ndarray:
        """A speaker's neutral shape from one canonical frame that may be mid-expression.

        face - canonical_face is explained jointly by identity and expression components
        (MAP estimate: coefficients in units of their training spread with a unit Gaussian
        prior, `noise` the per-coordinate spread, in inter-ocular units, of what neither
        explains); the expression part is removed. A reference photo caught mid-word thus
        gets its mouth closed.
        """
        expression = np.zeros((self.motion_dim - POSE_DIM, 478 * 3))
        parts = self.region_slices()
        for name, points, basis in (("lower", self.lower_points, self.lower_basis),
                                    ("upper", self.upper_points, self.upper_basis)):
            block = np.zeros((len(basis), 478, 3))
            block[:, points] = basis.reshape(len(basis), -1, 3)
            expression[parts[name]] = block.reshape(len(basis), -1) * self.motion_std[parts[name], None]
        identity = self.identity_basis * self.identity_std[:, None]
        design = np.concatenate([identity, expression]).T          # (1434, K_i + K_e)
        target = (face - self.canonical_face).reshape(-1)
        coeffs = np.linalg.solve(design.T @ design + noise**2 * np.eye(design.shape[1]),
                                 design.T @ target)
        expression_part = coeffs[len(identity):] @ expression
        return (face - expression_part.reshape(478, 3)).astype(np.float32)

    # -- storage ------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f"motion_space.{k}": np.ascontiguousarray(v, dtype=np.float32 if v.dtype.kind == "f" else np.int64)
                for k, v in vars(self).items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "MotionSpace":
        prefix = "motion_space."
        fields = {k[len(prefix):]: np.asarray(v) for k, v in arrays.items() if k.startswith(prefix)}
        for key in ("canonical_face", "lower_basis", "upper_basis", "motion_std",
                    "identity_basis", "identity_std"):
            fields[key] = fields[key].astype(np.float64)
        return cls(**fields)


def fit_motion_space(canonical_frames: np.ndarray, neutrals_per_frame: np.ndarray,
                     window_poses: np.ndarray, clip_neutrals: np.ndarray, canonical_face: np.ndarray,
                     lower_dim: int = 24, upper_dim: int = 16, identity_dim: int = 10) -> MotionSpace:
    """Learn the space from training data.

    canonical_frames (N, 478, 3) and their clips' neutrals (N, 478, 3); window_poses (M, 6)
    poses relative to a window start (for their spread); clip_neutrals (C, 478, 3).
    """
    points = region_points(canonical_face)
    displacement = canonical_frames - neutrals_per_frame
    bases, coefficients = {}, []
    for name, dim in (("lower", lower_dim), ("upper", upper_dim)):
        flat = displacement[:, points[name]].reshape(len(displacement), -1)
        # Principal directions of displacement about zero (the neutral), not about the mean:
        # a speaker's rest shape must decode to zero motion.
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        bases[name] = vt[:dim]
        coefficients.append(flat @ vt[:dim].T)
    coefficients.append(window_poses)
    motion_std = np.concatenate([c.std(0) for c in coefficients])
    motion_std = np.maximum(motion_std, 1e-6)
    identity = (clip_neutrals - canonical_face).reshape(len(clip_neutrals), -1)
    _, _, vt_id = np.linalg.svd(identity - identity.mean(0), full_matrices=False)
    identity_basis = vt_id[:min(identity_dim, len(clip_neutrals) - 1)]
    identity_std = np.maximum((identity @ identity_basis.T).std(0), 1e-6)
    return MotionSpace(canonical_face, points["lower"], points["upper"], bases["lower"],
                       bases["upper"], motion_std, identity_basis, identity_std)
