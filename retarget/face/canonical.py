"""The canonical face: the mean neutral shape of real speakers, in the canonical frame.

Built from data by `build_canonical_face` (generalised Procrustes over per-clip neutral
shapes) and shipped as `data/canonical_face.npy` (478, 3) float64: x toward the subject's left,
y up, z toward the camera, origin at the weighted centroid of the stable points, outer eye
corners exactly 1 apart. `python -m dimitra.backend.dataset.canonical_face DATASET` rebuilds it.
"""

from pathlib import Path

import numpy as np

from . import topology
from .pose import PIXEL_FROM_UPRIGHT, fit_similarity

CANONICAL_FACE_PATH = Path(__file__).resolve().parent / "data" / "canonical_face.npy"


def load_canonical_face() -> np.ndarray:
    """(478, 3) float64 canonical face."""
    return np.load(CANONICAL_FACE_PATH)


def inter_ocular_distance(landmarks: np.ndarray) -> np.ndarray:
    """(...,) distance between the outer eye corners of (..., 478, 3) landmarks."""
    return np.linalg.norm(landmarks[..., topology.LEFT_EYE_OUTER, :]
                          - landmarks[..., topology.RIGHT_EYE_OUTER, :], axis=-1)


def build_canonical_face(shapes_px: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Mean shape of (K, 478, 3) neutral faces given in pixel-frame axes (y down, z away).

    Generalised Procrustes on the stable points, then the mean is put in upright canonical
    axes: x along the outer eye corners, y from chin to forehead, unit inter-ocular distance.
    """
    shapes = np.asarray(shapes_px, dtype=np.float64)
    stable, weights = list(topology.STABLE_POINTS), topology.STABLE_WEIGHTS
    mean = _upright(PIXEL_FROM_UPRIGHT @ shapes[0].T).T
    for _ in range(iterations):
        to_mean = fit_similarity(shapes[:, stable], mean[stable], weights)
        mean = _upright(to_mean.apply(shapes).mean(0).T).T
    return mean


def _upright(points: np.ndarray) -> np.ndarray:
    """(3, 478) roughly upright face -> exactly the canonical frame (see module docstring)."""
    points = points.T
    x_axis = points[topology.LEFT_EYE_OUTER] - points[topology.RIGHT_EYE_OUTER]
    x_axis /= np.linalg.norm(x_axis)
    up = points[topology.FOREHEAD] - points[topology.CHIN]
    y_axis = up - x_axis * (up @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    axes = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])
    origin = topology.STABLE_WEIGHTS @ points[list(topology.STABLE_POINTS)] / topology.STABLE_WEIGHTS.sum()
    upright = (points - origin) @ axes.T
    return (upright / inter_ocular_distance(upright)).T
