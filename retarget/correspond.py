"""Where each of the 478 landmarks sits on the rig's face surface (barycentric coordinates).

Three ways to get it:
- `from_hits`: rays from the reference render's camera through the landmarks detected on the
  render, cast onto the mesh by the caller (Blender) — the usual case;
- `fit_canonical`: for faces the detector does not find (stylised characters), the canonical
  face aligned to the mesh (similarity, then iterated nearest-surface projection), optionally
  anchored by a few picked points (`picked`);
- `load_correspondence`: one saved for the character and reused for every later take.
A correspondence belongs to one rig surface (its vertex and triangle counts are checked).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic_file import atomic_open
from .face import topology
from .face.canonical import load_canonical_face
from .face.pose import Similarity, fit_similarity
from .rig import RigDescription, RigError

FORMAT_VERSION = 1


@dataclass
class Correspondence:
    triangles: np.ndarray      # (478,) int32 triangle index into the rig's triangles, -1: none
    barycentric: np.ndarray    # (478, 3) float64 weights of the triangle's corners
    method: str                # "render", "canonical_fit", "picked", "vertices"
    vertex_count: int          # of the rig surface it was made on
    triangle_count: int

    @property
    def valid(self) -> np.ndarray:
        """(478,) bool: landmarks that have a point on the rig."""
        return self.triangles >= 0

    def points(self, rig: RigDescription, values: np.ndarray | None = None) -> np.ndarray:
        """Per-vertex values (..., V, 3) (default: rest positions) at the landmarks: (..., 478, 3).

        Landmarks without a point get zeros; mask them with `valid`.
        """
        self.check(rig)
        values = rig.vertices if values is None else values
        corners = rig.triangles[np.maximum(self.triangles, 0)]          # (478, 3)
        out = np.einsum("nc,...ncd->...nd", self.barycentric, values[..., corners, :])
        out[..., ~self.valid, :] = 0.0
        return out

    def scalar(self, rig: RigDescription, values: np.ndarray) -> np.ndarray:
        """Per-vertex scalars (V,) at the landmarks: (478,), zero where not valid."""
        corners = rig.triangles[np.maximum(self.triangles, 0)]
        return np.where(self.valid, (self.barycentric * values[corners]).sum(-1), 0.0)

    def check(self, rig: RigDescription) -> None:
        if (self.vertex_count, self.triangle_count) != (len(rig.vertices), len(rig.triangles)):
            raise RigError(
                f"this correspondence was made for a face surface of {self.vertex_count} vertices "
                f"and {self.triangle_count} triangles, the rig has {len(rig.vertices)} and "
                f"{len(rig.triangles)}; the mesh changed: make the correspondence again")


def ray_targets(landmarks_px: np.ndarray, into_lip: float = 0.3) -> np.ndarray:
    """(478, 2) image points to cast each landmark's ray through, from (478, 2+) landmarks.

    On a closed mouth the upper and lower inner-lip points sit on the same seam, and their
    rays could both land on one lip; each is moved `into_lip` of the way toward its outer-lip
    partner, so it lands inside its own lip (the corners stay).
    """
    targets = np.array(landmarks_px[:, :2], dtype=np.float64)
    inner, outer = np.array(topology.LIPS_INNER), np.array(topology.LIPS_OUTER)
    lips = [i for i in range(len(inner)) if i not in (0, len(inner) // 2)]   # not the corners
    targets[inner[lips]] += into_lip * (targets[outer[lips]] - targets[inner[lips]])
    return targets


def from_hits(rig: RigDescription, triangle_index: np.ndarray, hit_points: np.ndarray,
              method: str = "render") -> Correspondence:
    """From ray hits: (478,) triangle index (-1 for a miss) and (478, 3) hit points, scene space."""
    triangle_index = np.asarray(triangle_index, dtype=np.int32)
    hit_points = np.asarray(hit_points, dtype=np.float64)
    safe = np.maximum(triangle_index, 0)
    corners = rig.vertices[rig.triangles[safe]]                          # (478, 3, 3)
    barycentric = _barycentric(hit_points, corners)
    barycentric = np.clip(barycentric, 0.0, None)
    barycentric /= np.maximum(barycentric.sum(-1, keepdims=True), 1e-12)
    return Correspondence(triangle_index, barycentric, method, len(rig.vertices),
                          len(rig.triangles))


def from_vertices(rig: RigDescription, vertex_index: np.ndarray) -> Correspondence:
    """Landmark i sits exactly on vertex `vertex_index[i]` (-1: none) — rigs on the 478 topology."""
    vertex_index = np.asarray(vertex_index)
    first_triangle = np.full(len(rig.vertices), -1, dtype=np.int32)
    flat = rig.triangles.ravel()
    order = np.argsort(flat, kind="stable")
    first_triangle[flat[order[::-1]]] = (order[::-1] // 3).astype(np.int32)
    triangles = np.where(vertex_index >= 0, first_triangle[np.maximum(vertex_index, 0)], -1)
    barycentric = np.zeros((len(vertex_index), 3))
    corner = rig.triangles[np.maximum(triangles, 0)] == vertex_index[:, None]
    barycentric[corner] = 1.0
    return Correspondence(triangles.astype(np.int32), barycentric, "vertices",
                          len(rig.vertices), len(rig.triangles))


def fit_canonical(rig: RigDescription, forward: np.ndarray, up: np.ndarray,
                  picked: dict[int, np.ndarray] | None = None, iterations: int = 8,
                  region: np.ndarray | None = None) -> tuple[Correspondence, Similarity]:
    """The canonical face laid onto the rig's surface; also returns the canonical -> scene fit.

    forward (3,): the direction the camera looks at the face (into the face); up (3,): the
    face's up. `region` (V,) bool: the vertices of the face proper (default: those any shape
    key moves, else all). `picked`: landmark index -> scene point, three or more, which fix
    the alignment instead of the bounding-box guess and keep their weight while it is refined.
    """
    canonical = load_canonical_face()
    mesh_points = np.arange(topology.NUM_MESH_LANDMARKS)
    if picked and len(picked) >= 3:
        ids = np.array(sorted(picked))
        target = np.array([picked[i] for i in ids], dtype=np.float64)
        transform = fit_similarity(canonical[ids], target)
    else:
        transform = _initial_alignment(rig, canonical, forward, up, region)
    for _ in range(iterations):
        placed = transform.apply(canonical[mesh_points])
        _, nearest = closest_points(rig, placed)
        source, target = canonical[mesh_points], nearest
        weights = np.ones(len(mesh_points))
        if picked:
            ids = np.array(sorted(picked))
            source = np.concatenate([source, canonical[ids]])
            target = np.concatenate([target, np.array([picked[i] for i in ids])])
            weights = np.concatenate([weights, np.full(len(ids), 50.0)])
        transform = fit_similarity(source, target, weights)
    triangle_index, points = closest_points(rig, transform.apply(canonical))
    correspondence = from_hits(rig, triangle_index, points,
                               "picked" if picked else "canonical_fit")
    return correspondence, transform


def _initial_alignment(rig: RigDescription, canonical: np.ndarray, forward: np.ndarray,
                       up: np.ndarray, region: np.ndarray | None) -> Similarity:
    """Canonical face centred on the face region's front, scaled to its width."""
    forward = np.asarray(forward, dtype=np.float64) / np.linalg.norm(forward)
    up = np.asarray(up, dtype=np.float64)
    up = up - forward * (up @ forward)
    up /= np.linalg.norm(up)
    toward_camera = -forward
    left = np.cross(up, toward_camera)           # canonical x = y × z
    rotation = np.stack([left, up, toward_camera], axis=1)   # columns: canonical axes in scene
    if region is None:
        moved = np.zeros(len(rig.vertices), dtype=bool)
        for key in rig.shape_keys:
            moved |= np.linalg.norm(key.deltas, axis=1) > 1e-6 * max(rig.size(), 1e-12)
        region = moved if moved.sum() >= 20 else np.ones(len(rig.vertices), dtype=bool)
    local = rig.vertices[region] @ rotation                  # scene -> canonical axes
    low, high = local.min(0), local.max(0)
    canonical_width = np.ptp(canonical[:, 0])
    scale = (high[0] - low[0]) / canonical_width
    centre = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, high[2]])
    canonical_centre = np.array([(canonical[:, 0].min() + canonical[:, 0].max()) / 2,
                                 (canonical[:, 1].min() + canonical[:, 1].max()) / 2,
                                 canonical[:, 2].max()])
    translation = rotation @ (centre - scale * canonical_centre)
    return Similarity(np.float64(scale), rotation, translation)


def closest_points(rig: RigDescription, points: np.ndarray,
                   chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Nearest surface point for each of (N, 3) points: (N,) triangle index and (N, 3) points.

    Searches the triangles around the few nearest vertices (exact for reasonable meshes).
    """
    points = np.asarray(points, dtype=np.float64)
    around = _vertex_triangles(rig)                                        # (V, D), -1 padded
    best_triangle = np.zeros(len(points), dtype=np.int32)
    best_point = np.zeros_like(points)
    nearest_count = min(4, len(rig.vertices))
    for begin in range(0, len(points), chunk):
        block = points[begin:begin + chunk]                                  # (n, 3)
        distance = ((block[:, None, :] - rig.vertices[None]) ** 2).sum(-1)  # (n, V)
        nearest = np.argpartition(distance, nearest_count - 1, axis=1)[:, :nearest_count]
        candidates = around[nearest].reshape(len(block), -1)                 # (n, C)
        corners = rig.vertices[rig.triangles[np.maximum(candidates, 0)]]     # (n, C, 3, 3)
        on_triangle = closest_point_on_triangles(block[:, None, :], corners)  # (n, C, 3)
        gap = ((on_triangle - block[:, None, :]) ** 2).sum(-1)
        gap[candidates < 0] = np.inf
        pick = np.argmin(gap, axis=1)
        rows = np.arange(len(block))
        best_triangle[begin:begin + len(block)] = candidates[rows, pick]
        best_point[begin:begin + len(block)] = on_triangle[rows, pick]
    return best_triangle, best_point


def _vertex_triangles(rig: RigDescription) -> np.ndarray:
    """(V, D) the triangles around each vertex, padded with -1 to the largest degree D."""
    flat = rig.triangles.ravel()
    order = np.argsort(flat, kind="stable")
    vertex = flat[order]
    starts = np.searchsorted(vertex, np.arange(len(rig.vertices)))
    slot = np.arange(len(flat)) - starts[vertex]
    around = np.full((len(rig.vertices), max(int(slot.max()) + 1, 1)), -1, dtype=np.int32)
    around[vertex, slot] = order // 3
    return around


def closest_point_on_triangles(point: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Closest points to `point` (..., 3) on triangles (..., 3, 3), broadcast: (..., 3)."""
    a, b, c = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    normal = np.cross(b - a, c - a)
    normal = normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-300)
    projected = point - ((point - a) * normal).sum(-1, keepdims=True) * normal
    inside = (_barycentric(projected, corners) >= 0).all(-1)
    best = np.where(inside[..., None], projected, np.inf)
    best_gap = np.where(inside, ((projected - point) ** 2).sum(-1), np.inf)
    for start, end in ((a, b), (b, c), (c, a)):
        edge = end - start
        t = np.clip(((point - start) * edge).sum(-1)
                    / np.maximum((edge * edge).sum(-1), 1e-300), 0.0, 1.0)
        on_edge = start + t[..., None] * edge
        gap = ((on_edge - point) ** 2).sum(-1)
        closer = gap < best_gap
        best = np.where(closer[..., None], on_edge, best)
        best_gap = np.where(closer, gap, best_gap)
    return best


def _barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric weights (..., 3) of (..., 3) points in (..., 3, 3) triangles (projected)."""
    a, b, c = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    denominator = d00 * d11 - d01 * d01
    denominator = np.where(np.abs(denominator) < 1e-300, 1e-300, denominator)
    v = (d11 * d20 - d01 * d21) / denominator
    w = (d00 * d21 - d01 * d20) / denominator
    return np.stack([1.0 - v - w, v, w], axis=-1)


def save_correspondence(path: str | Path, correspondence: Correspondence) -> Path:
    """Write as `.npz` (atomically) to reuse for every later take of the same character."""
    meta = {"format_version": FORMAT_VERSION, "method": correspondence.method,
            "vertex_count": correspondence.vertex_count,
            "triangle_count": correspondence.triangle_count}
    with atomic_open(path) as handle:
        np.savez(handle, triangles=correspondence.triangles,
                 barycentric=correspondence.barycentric, meta=np.array(json.dumps(meta)))
    return Path(path)


def load_correspondence(path: str | Path) -> Correspondence:
    path = Path(path)
    if not path.is_file():
        raise RigError(f"{path}: no such correspondence file")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            result = Correspondence(data["triangles"].astype(np.int32),
                                    data["barycentric"].astype(np.float64), meta["method"],
                                    int(meta["vertex_count"]), int(meta["triangle_count"]))
    except (KeyError, OSError, ValueError) as error:
        raise RigError(f"{path}: not a correspondence file ({error}); see docs/FORMATS.md") \
            from error
    if result.triangles.shape != (topology.NUM_LANDMARKS,):
        raise RigError(f"{path}: a correspondence holds 478 landmarks, "
                       f"this one {result.triangles.shape}")
    return result
