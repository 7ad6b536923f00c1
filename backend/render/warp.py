"""The reference picture moved along the face mesh: the photoreal renderer's first stage.

No learning: identity holds by construction, because every output pixel is a reference pixel.
Everything happens in one fixed square crop per take (a per-frame crop would jitter), taken
from the reference landmarks. The output is covered by three kinds of triangles:
- the 852 face-mesh triangles, with the eye holes filled by fans through the iris centres and
  the mouth hole by a strip between the inner lips (stretched when the mouth opens: the
  network of mouth_net.py paints what a warp cannot, the teeth and the inside of the mouth);
- an outer ring between the face oval and a ring 1.3 times its size that follows the head's
  2D similarity (hair, ears, neck), and the crop's border, which stays still;
- drawn far to near by the triangles' mean depth (a depth test at triangle granularity), so a
  turned face's far cheek goes behind its nose.
Each pixel's reference position comes from its triangle's affine map; `cv2.remap` samples.
Numpy and OpenCV only: the inference path needs no torch.
"""

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ...retarget.face import topology

CROP_SCALE = 1.8        # crop side / the larger side of the face mesh's bounding box
CROP_RAISE = 0.06       # the crop centre sits this share of the face height above the mesh's
RING_SCALE = 1.3        # outer ring = face oval scaled about its centre
BORDER_STEPS = 4        # points per crop edge that hold the border still
_SHIFT = 4              # OpenCV fixed-point bits for sub-pixel triangle edges


@dataclass(frozen=True)
class Crop:
    """A square of the reference picture: x0, y0 and side in its pixels, drawn `size` px wide."""

    x0: float
    y0: float
    side: float
    size: int

    @property
    def scale(self) -> float:
        """Output pixels per reference pixel."""
        return self.size / self.side

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) reference pixel frame -> (..., 3) crop pixels (z scaled alike)."""
        points = np.asarray(points, dtype=np.float64)
        offset = np.array([self.x0, self.y0, 0.0])
        return (points - offset) * self.scale

    def cut(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 picture -> (size, size, 3) uint8, edges replicated past the picture."""
        image = np.asarray(image, dtype=np.uint8)
        if self.scale < 1.0:  # shrink with area averaging first, so fine detail does not alias
            small = cv2.resize(image, None, fx=self.scale, fy=self.scale,
                               interpolation=cv2.INTER_AREA)
            sx = small.shape[1] / image.shape[1]
            sy = small.shape[0] / image.shape[0]
            matrix = np.array([[self.scale / sx, 0, -self.x0 * self.scale],
                               [0, self.scale / sy, -self.y0 * self.scale]])
            image = small
        else:
            matrix = np.array([[self.scale, 0, -self.x0 * self.scale],
                               [0, self.scale, -self.y0 * self.scale]])
        return cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)


def crop_around_face(landmarks_px: np.ndarray, size: int) -> Crop:
    """The take's crop from the reference landmarks (478, 3), pixel frame."""
    points = np.asarray(landmarks_px, dtype=np.float64)[:topology.NUM_MESH_LANDMARKS, :2]
    low, high = points.min(axis=0), points.max(axis=0)
    extent = high - low
    side = CROP_SCALE * float(extent.max())
    centre_x = (low[0] + high[0]) / 2
    centre_y = (low[1] + high[1]) / 2 - CROP_RAISE * extent[1]
    return Crop(centre_x - side / 2, centre_y - side / 2, side, int(size))


# ---------------------------------------------------------------------------------------------
# Triangles
# ---------------------------------------------------------------------------------------------

def _strip(lower: tuple[int, ...], upper: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles between two point chains of the same length that share their end points."""
    triangles = []
    for i in range(len(lower) - 1):
        triangles.append((lower[i], lower[i + 1], upper[i + 1]))
        triangles.append((lower[i], upper[i + 1], upper[i]))
    return [t for t in triangles if len(set(t)) == 3]


def _fan(centre: int, loop: tuple[int, ...]) -> list[tuple[int, int, int]]:
    return [(centre, loop[i], loop[(i + 1) % len(loop)]) for i in range(len(loop))]


def hole_triangles() -> np.ndarray:
    """(K, 3) triangles filling the eye holes (fans through the iris centres) and the mouth
    (a strip from the left corner to the right between the inner lips)."""
    inner = topology.LIPS_INNER           # 78 ... 14 ... 308 ... 13 ... 191
    corner = inner.index(308)
    lower = inner[:corner + 1]
    upper = (inner[0],) + tuple(reversed(inner[corner:]))
    triangles = _strip(lower, upper)
    for upper_lid, lower_lid, iris in ((topology.RIGHT_UPPER_LID, topology.RIGHT_LOWER_LID,
                                        topology.RIGHT_IRIS),
                                       (topology.LEFT_UPPER_LID, topology.LEFT_LOWER_LID,
                                        topology.LEFT_IRIS)):
        loop = upper_lid + tuple(reversed(lower_lid[1:-1]))
        triangles += _fan(iris[0], loop)
    return np.asarray(triangles, dtype=np.int32)


@dataclass(frozen=True)
class WarpTopology:
    """The triangles of one take, over points = 478 landmarks, then ring, then border."""

    face_triangles: np.ndarray    # (F, 3) int32, mesh and holes, indices into the landmarks
    outer_triangles: np.ndarray   # (G, 3) int32, indices into [oval, ring, border] points
    ring_reference: np.ndarray    # (R, 2) float64, ring points in crop pixels of the reference
    border: np.ndarray            # (B, 2) float64, fixed points on the crop's edge
    oval_centre: np.ndarray       # (2,) reference oval centre, crop pixels


def build_topology(reference_crop_px: np.ndarray, size: int) -> WarpTopology:
    """reference_crop_px: (478, 3) reference landmarks in crop pixels."""
    oval_index = list(topology.FACE_OVAL)
    oval = reference_crop_px[oval_index, :2]
    centre = oval.mean(axis=0)
    ring = centre + RING_SCALE * (oval - centre)
    edge = np.linspace(0, size, BORDER_STEPS + 1)
    border = np.unique(np.concatenate([
        np.stack([edge, np.zeros_like(edge)], 1), np.stack([edge, np.full_like(edge, size)], 1),
        np.stack([np.zeros_like(edge), edge], 1), np.stack([np.full_like(edge, size), edge], 1)]),
        axis=0)
    points = np.concatenate([oval, ring, border])
    triangles = Delaunay(points).simplices
    centroids = points[triangles].mean(axis=1)
    polygon = oval.astype(np.float32).reshape(-1, 1, 2)
    outside = np.array([cv2.pointPolygonTest(polygon, (float(x), float(y)), False) < 0
                        for x, y in centroids])
    face = np.concatenate([topology.triangles(), hole_triangles()])
    return WarpTopology(face.astype(np.int32), triangles[outside].astype(np.int32), ring, border,
                        centre)


# ---------------------------------------------------------------------------------------------
# Warping
# ---------------------------------------------------------------------------------------------

def similarity_2d(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, shift) taking source (N, 2)
    onto target (N, 2)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    s, t = source - source_mean, target - target_mean
    a = (s * t).sum() / max((s * s).sum(), 1e-12)
    b = (s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum() / max((s * s).sum(), 1e-12)
    linear = np.array([[a, -b], [b, a]])
    return np.concatenate([linear, (target_mean - linear @ source_mean)[:, None]], axis=1)


class FaceWarp:
    """Warps one reference crop to any driving landmarks of the same face, frame by frame."""

    def __init__(self, reference_crop: np.ndarray, reference_crop_px: np.ndarray):
        """reference_crop: (S, S, 3) uint8; reference_crop_px: (478, 3) its landmarks, crop px."""
        self.image = np.ascontiguousarray(reference_crop)
        self.size = reference_crop.shape[0]
        self.reference = np.asarray(reference_crop_px, dtype=np.float64)
        self.topology = build_topology(self.reference, self.size)
        self._stable = list(topology.STABLE_POINTS)
        ys, xs = np.mgrid[0:self.size, 0:self.size].astype(np.float32)
        self._grid = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size, np.float32)], 1)  # (P, 3)
        self._outer_reference = self._outer_points(self.reference, np.eye(2, 3))

    def _outer_points(self, landmarks: np.ndarray, head: np.ndarray) -> np.ndarray:
        """(O, 2) oval points of `landmarks`, ring moved by `head` (2, 3), the fixed border."""
        ring = self.topology.ring_reference @ head[:, :2].T + head[:, 2]
        return np.concatenate([landmarks[list(topology.FACE_OVAL), :2], ring,
                               self.topology.border])

    def maps(self, driving_crop_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(478, 3) driving landmarks in crop px -> (map_x, map_y), each (S, S) float32: where
        each output pixel samples the reference crop."""
        driving = np.asarray(driving_crop_px, dtype=np.float64)
        head = similarity_2d(self.reference[self._stable, :2], driving[self._stable, :2])
        outer_out = self._outer_points(driving, head)
        faces = self.topology.face_triangles
        outer = self.topology.outer_triangles
        # Far to near: the outer ring first, then face triangles by decreasing mean depth.
        order = np.argsort(-driving[faces, 2].mean(axis=1), kind="stable")
        target = np.concatenate([outer_out[outer], driving[faces[order], :2]])          # (N, 3, 2)
        source = np.concatenate([self._outer_reference[outer],
                                 self.reference[faces[order], :2]])                     # (N, 3, 2)
        affine, drawable = _affine_maps(target, source)
        index = np.zeros((self.size, self.size), np.int32)   # 0: no triangle, the pixel stays
        fixed = np.round(target * (1 << _SHIFT)).astype(np.int32)
        for k in np.flatnonzero(drawable):
            cv2.fillConvexPoly(index, fixed[k], int(k) + 1, cv2.LINE_8, _SHIFT)
        table = np.concatenate([np.array([[1, 0, 0, 0, 1, 0]], np.float32),
                                affine.reshape(-1, 6).astype(np.float32)])               # (N+1, 6)
        per_pixel = table[index.ravel()]                                                 # (P, 6)
        map_x = np.einsum("pk,pk->p", per_pixel[:, :3], self._grid)
        map_y = np.einsum("pk,pk->p", per_pixel[:, 3:], self._grid)
        return map_x.reshape(self.size, self.size), map_y.reshape(self.size, self.size)

    def warp(self, driving_crop_px: np.ndarray) -> np.ndarray:
        """(478, 3) driving landmarks in crop px -> (S, S, 3) uint8 warped reference."""
        if not np.isfinite(driving_crop_px).all():   # no face in this frame: the reference
            return self.image.copy()
        map_x, map_y = self.maps(driving_crop_px)
        return cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)


def _affine_maps(target: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle the (2, 3) affine taking target corners (N, 3, 2) onto source (N, 3, 2);
    and which triangles have area enough to draw (N,) bool."""
    corners = np.concatenate([target, np.ones(target.shape[:2] + (1,))], axis=2)   # (N, 3, 3)
    det = np.linalg.det(corners)
    drawable = np.abs(det) > 1e-3
    corners[~drawable] = np.eye(3)
    solved = np.linalg.solve(corners, source)                                       # (N, 3, 2)
    return np.swapaxes(solved, 1, 2), drawable
