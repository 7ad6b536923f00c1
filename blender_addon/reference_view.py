"""The face's reference view: how Generate and `dimitra bake` both render the face and pick
the camera, so an artist gets what a batch bake gets.

    main thread (bpy)                       any thread (numpy, mathutils)
    -----------------                       -----------------------------
    render_objects + read_mesh  ------>     choose_view(rig, snapshot, detect)
    (the face meshes and the visible          for each likely view: render the snapshot,
     meshes near them: rest geometry,         find the 478 landmarks on the render (`detect`:
     material colours; a mesh at a time)      the backend's face tracker, in process for the
                                              bake, the service's `detect` for the add-on),
                                              cast rays from the camera through them onto the
                                              face, score how face-like the hits lie
                                              (face_misfit). The first good fit is taken,
                                              else the best, else the canonical-face fit.

The render is a small numpy rasteriser, not Workbench: Workbench must run on Blender's main
thread and took about 1 s for the first render of a session (0.1 s after), a frozen UI. It
shades like Workbench's solid mode (the materials' viewport colours, a studio key and fill
light, smooth or flat faces, 2x supersampling) from the same geometry the rays hit.
"""

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import bpy
import numpy as np
from mathutils.bvhtree import BVHTree

from ..retarget.correspond import Correspondence, fit_canonical, from_hits, ray_targets
from ..retarget.face import topology
from ..retarget.rig import RigDescription

RENDER_SIZE = 512
SUPERSAMPLE = 2
LENS_MM, SENSOR_MM = 85.0, 36.0
# Cameras tried: (looking along, up), ordered per rig by likely_views.
VIEWS = (((0, 1, 0), (0, 0, 1)), ((0, -1, 0), (0, 0, 1)), ((-1, 0, 0), (0, 0, 1)),
         ((1, 0, 0), (0, 0, 1)), ((0, 0, -1), (0, 1, 0)), ((0, 0, 1), (0, 1, 0)))
MIN_HITS = 300   # of the 468 face points: fewer means the rays found some other face
GOOD_FIT = 0.12  # face_misfit below which a view is taken without trying others
DEFAULT_COLOUR = (0.8, 0.8, 0.8)      # a mesh without material, as Workbench shows it
BACKGROUND = (0.5, 0.5, 0.5)          # linear grey
NEAR_FACE = 1.0                       # other meshes within this many face mesh sizes are drawn

# PNG bytes -> (478, 2+) landmarks in its pixels, or None when no usable face is found.
Detector = Callable[[bytes], "np.ndarray | None"]


# ---------------------------------------------------------------------------------------------
# What is drawn: read on the main thread, used anywhere
# ---------------------------------------------------------------------------------------------

@dataclass
class MeshPart:
    vertices: np.ndarray        # (V, 3) float64 scene space, rest (as read_rig reads it)
    triangles: np.ndarray       # (F, 3) int32
    colours: np.ndarray         # (F, 3) float64 linear RGB
    smooth: np.ndarray          # (F,) bool


@dataclass
class Snapshot:
    """The meshes a reference render draws, copied out of Blender (safe in any thread)."""
    parts: list[MeshPart] = field(default_factory=list)

    def merged(self) -> MeshPart:
        offsets = np.cumsum([0] + [len(p.vertices) for p in self.parts])
        return MeshPart(np.concatenate([p.vertices for p in self.parts]),
                        np.concatenate([p.triangles + o for p, o in zip(self.parts, offsets)]),
                        np.concatenate([p.colours for p in self.parts]),
                        np.concatenate([p.smooth for p in self.parts]))

    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        for part in self.parts:
            for array in (part.vertices, part.triangles, part.colours, part.smooth):
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def render_objects(rig: RigDescription, face_meshes: list) -> list:
    """The mesh objects a render draws: the face meshes, then every other mesh shown in the
    viewport and in renders whose bounds come near them (eyes, teeth, hair, body). Cheap:
    bounding boxes only."""
    low, high = rig.vertices.min(0), rig.vertices.max(0)
    margin = NEAR_FACE * float(np.max(high - low))
    low, high = low - margin, high + margin
    chosen = list(face_meshes)
    for obj in bpy.data.objects:
        if obj.type != "MESH" or obj in chosen or obj.hide_render or not _visible(obj):
            continue
        corners = np.array([tuple(c) for c in obj.bound_box], dtype=np.float64)
        matrix = np.array(obj.matrix_world, dtype=np.float64)
        corners = corners @ matrix[:3, :3].T + matrix[:3, 3]
        if np.all(corners.max(0) >= low) and np.all(corners.min(0) <= high):
            chosen.append(obj)
    return chosen


def read_mesh(obj) -> MeshPart | None:
    """One object's rest geometry in scene space (its own vertices, as read_rig reads them:
    no modifiers, no shape key mix) and each triangle's viewport colour; None if it has no
    faces."""
    mesh = obj.data
    if not len(mesh.polygons):
        return None
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    vertices = co.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    mesh.calc_loop_triangles()
    count = len(mesh.loop_triangles)
    triangles = np.empty(3 * count, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", triangles)
    material = np.empty(count, dtype=np.int32)
    mesh.loop_triangles.foreach_get("material_index", material)
    smooth = np.ones(count, dtype=bool)
    try:
        mesh.loop_triangles.foreach_get("use_smooth", smooth)
    except (AttributeError, RuntimeError, TypeError):
        pass    # a Blender without the property: smooth, the usual look of a face
    palette = [tuple(slot.material.diffuse_color)[:3] if slot.material is not None
               else DEFAULT_COLOUR for slot in obj.material_slots] or [DEFAULT_COLOUR]
    palette = np.array(palette, dtype=np.float64)
    colours = palette[np.clip(material, 0, len(palette) - 1)]
    return MeshPart(vertices, triangles.reshape(-1, 3), colours, smooth)


def read_snapshot(rig: RigDescription, face_meshes: list) -> Snapshot:
    """Everything at once (the bake; the add-on reads a mesh per tick instead)."""
    parts = (read_mesh(obj) for obj in render_objects(rig, face_meshes))
    return Snapshot([part for part in parts if part is not None])


def _visible(obj) -> bool:
    try:
        return bool(obj.visible_get())
    except (RuntimeError, ReferenceError):
        return False


# ---------------------------------------------------------------------------------------------
# Cameras and the render
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Camera:
    """A square perspective camera: `axes` columns are its right, up and backward in the scene."""
    origin: np.ndarray
    axes: np.ndarray
    half_tan: float
    size: int = RENDER_SIZE

    @property
    def forward(self) -> np.ndarray:
        return -self.axes[:, 2]

    def rays(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) image pixels (x right, y down) -> (origins, directions) in the scene."""
        x = (pixels[:, 0] / self.size - 0.5) * 2 * self.half_tan
        y = (0.5 - pixels[:, 1] / self.size) * 2 * self.half_tan
        directions = np.stack([x, y, -np.ones_like(x)], 1) @ self.axes.T
        return np.broadcast_to(self.origin, directions.shape), directions


def camera_for(rig: RigDescription, forward: np.ndarray, up: np.ndarray) -> Camera:
    """An 85 mm camera looking along `forward` that frames the face region with a margin."""
    forward, up = np.asarray(forward, float), np.asarray(up, float)
    right = np.cross(forward, up)
    basis = np.stack([right, up, forward], 1)
    local = rig.vertices[face_region(rig)] @ basis
    low, high = local.min(0), local.max(0)
    size = 1.5 * max(high[0] - low[0], high[1] - low[1])
    half_tan = SENSOR_MM / 2 / LENS_MM
    distance = size / 2 / half_tan + (high[2] - low[2]) / 2
    centre = basis @ ((low + high) / 2)
    return Camera(centre - forward * distance, np.stack([right, up, -forward], 1), half_tan)


def render(snapshot: Snapshot, camera: Camera) -> np.ndarray:
    """(size, size, 3) uint8 sRGB: the snapshot as Workbench's solid mode shows it, both sides
    of every face drawn. Numpy only: runs in any thread."""
    mesh = snapshot.merged()
    size = camera.size * SUPERSAMPLE
    local = (mesh.vertices - camera.origin) @ camera.axes         # camera space, -z ahead
    depth = -local[:, 2]
    ahead = (depth > 1e-9)[mesh.triangles].all(1)    # a face partly behind the camera is left out
    triangles, colours, smooth = (mesh.triangles[ahead], mesh.colours[ahead], mesh.smooth[ahead])
    safe = np.maximum(depth, 1e-9)
    x = (local[:, 0] / safe / (2 * camera.half_tan) + 0.5) * size
    y = (0.5 - local[:, 1] / safe / (2 * camera.half_tan)) * size
    face, b1, b2 = _rasterise(x[triangles], y[triangles], 1.0 / safe[triangles], size)
    image = np.empty((size * size, 3))
    image[:] = BACKGROUND
    hit = np.flatnonzero(face >= 0)
    if len(hit):
        image[hit] = _shade(local, triangles, colours, smooth, face[hit], b1[hit], b2[hit],
                            1.0 / safe[triangles])
    image = _srgb(image).reshape(camera.size, SUPERSAMPLE, camera.size, SUPERSAMPLE, 3)
    return (np.clip(image.mean((1, 3)), 0, 1) * 255 + 0.5).astype(np.uint8)


def _rasterise(px: np.ndarray, py: np.ndarray, inverse_depth: np.ndarray, size: int,
               chunk: int = 1 << 19) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffered triangles (F, 3) in pixels -> per pixel (size², ) the nearest triangle (-1:
    none) and its screen-space barycentric coordinates 1 and 2. Pixel centres at +0.5."""
    x0 = np.clip(np.floor(px.min(1) - 0.5).astype(np.int64), 0, size)
    x1 = np.clip(np.ceil(px.max(1) - 0.5).astype(np.int64) + 1, 0, size)
    y0 = np.clip(np.floor(py.min(1) - 0.5).astype(np.int64), 0, size)
    y1 = np.clip(np.ceil(py.max(1) - 0.5).astype(np.int64) + 1, 0, size)
    width, height = np.maximum(x1 - x0, 0), np.maximum(y1 - y0, 0)
    area = ((px[:, 1] - px[:, 0]) * (py[:, 2] - py[:, 0])
            - (px[:, 2] - px[:, 0]) * (py[:, 1] - py[:, 0]))
    todo = np.flatnonzero((width * height > 0) & (np.abs(area) > 1e-12))
    counts = (width * height)[todo]
    ends = np.cumsum(counts)
    nearest = np.zeros(size * size)                       # 1 / depth; 0: nothing drawn
    face = np.full(size * size, -1, dtype=np.int64)
    bary1, bary2 = np.zeros(size * size), np.zeros(size * size)
    start = 0
    while start < len(todo):    # chunks of about `chunk` candidate pixels (bounded memory)
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + chunk, side="right")), start + 1)
        ids, count = todo[start:stop], counts[start:stop]
        start = stop
        t = np.repeat(ids, count)
        offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        cx = x0[t] + offset % width[t]
        cy = y0[t] + offset // width[t]
        dx, dy = cx + 0.5 - px[t, 0], cy + 0.5 - py[t, 0]
        b1 = (dx * (py[t, 2] - py[t, 0]) - dy * (px[t, 2] - px[t, 0])) / area[t]
        b2 = ((px[t, 1] - px[t, 0]) * dy - (py[t, 1] - py[t, 0]) * dx) / area[t]
        inside = (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1)
        t, b1, b2 = t[inside], b1[inside], b2[inside]
        pixel = cy[inside] * size + cx[inside]
        z = (1 - b1 - b2) * inverse_depth[t, 0] + b1 * inverse_depth[t, 1] \
            + b2 * inverse_depth[t, 2]
        order = np.lexsort((-z, pixel))                  # per pixel, the nearest first
        pixel, z, t, b1, b2 = pixel[order], z[order], t[order], b1[order], b2[order]
        first = np.ones(len(pixel), dtype=bool)
        first[1:] = pixel[1:] != pixel[:-1]
        closer = first.copy()
        closer[first] = z[first] > nearest[pixel[first]]
        pixel = pixel[closer]
        nearest[pixel], face[pixel] = z[closer], t[closer]
        bary1[pixel], bary2[pixel] = b1[closer], b2[closer]
    return face, bary1, bary2


_KEY = np.array([-0.4, 0.5, 0.75]) / np.linalg.norm([-0.4, 0.5, 0.75])   # camera space
_FILL = np.array([0.6, 0.1, 0.8]) / np.linalg.norm([0.6, 0.1, 0.8])


def _shade(local, triangles, colours, smooth, face, b1, b2, inverse_depth) -> np.ndarray:
    """Linear RGB of the drawn pixels: diffuse key + fill + ambient, a soft highlight."""
    corners = local[triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    vertex_normals = np.zeros_like(local)
    for k in range(3):
        np.add.at(vertex_normals, triangles[:, k], normals)
    vertex_normals /= np.maximum(np.linalg.norm(vertex_normals, axis=1, keepdims=True), 1e-12)
    # Perspective-correct weights of the three corners.
    weights = np.stack([(1 - b1 - b2), b1, b2], 1) * inverse_depth[face]
    weights /= weights.sum(1, keepdims=True)
    tri = triangles[face]
    normal = np.einsum("nk,nkd->nd", weights, vertex_normals[tri])
    normal = np.where(smooth[face, None], normal, normals[face])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    point = np.einsum("nk,nkd->nd", weights, local[tri])
    view = -point / np.maximum(np.linalg.norm(point, axis=1, keepdims=True), 1e-12)
    normal *= np.where((normal * view).sum(1) < 0, -1.0, 1.0)[:, None]   # both sides lit
    light = 0.25 + 0.65 * np.clip(normal @ _KEY, 0, 1) + 0.25 * np.clip(normal @ _FILL, 0, 1)
    half = _KEY + view
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    highlight = 0.15 * np.clip((normal * half).sum(1), 0, 1) ** 30
    return colours[face] * light[:, None] + highlight[:, None]


def _srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> a PNG file's bytes (standard library only: Blender has no Pillow)."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], 1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# Choosing the view
# ---------------------------------------------------------------------------------------------

@dataclass
class ViewChoice:
    """The chosen view and what it gave. image None: no view showed a face the rays could
    use, and the correspondence is the canonical-face fit seen from `forward`."""
    forward: tuple[float, float, float]
    up: tuple[float, float, float]
    correspondence: Correspondence
    image: bytes | None = None          # the render (PNG) to generate from
    misfit: float | None = None
    tried: list[dict] = field(default_factory=list)   # each view: forward and what it gave

    @property
    def method(self) -> str:
        return self.correspondence.method


def choose_view(rig: RigDescription, snapshot: Snapshot, detect: Detector,
                before_view: Callable[[int, int], None] | None = None,
                views: list | None = None) -> ViewChoice:
    """The view to take the reference from, tried from the likeliest front (likely_views).

    A detection counts when its ray hits lie like a face (a profile or the back of a head can
    fool the detector): the first that fits well (GOOD_FIT) is taken, else the best fitting,
    else the canonical-face fit. before_view(index, count) is called before each view (it may
    raise to stop); `views` ((forward, up) pairs) replaces likely_views. Runs in any thread.
    """
    views = likely_views(rig) if views is None else views
    best: ViewChoice | None = None
    tried: list[dict] = []
    for index, (forward, up) in enumerate(views):
        if before_view is not None:
            before_view(index, len(views))
        camera = camera_for(rig, forward, up)
        image = png_bytes(render(snapshot, camera))
        landmarks = detect(image)
        outcome = {"forward": tuple(float(v) for v in forward)}
        tried.append(outcome)
        if landmarks is None:
            outcome["found"] = "no face"
            continue
        correspondence = cast_rays(rig, camera.rays(ray_targets(np.asarray(landmarks))))
        hits = int(correspondence.valid[:topology.NUM_MESH_LANDMARKS].sum())
        outcome["hits"] = hits
        if hits < MIN_HITS:
            outcome["found"] = "another surface"
            continue
        misfit = face_misfit(rig, correspondence)
        outcome["found"], outcome["misfit"] = "face", round(misfit, 4)
        if best is None or misfit < best.misfit:
            best = ViewChoice(_as_tuple(forward), _as_tuple(up), correspondence, image, misfit)
        if misfit < GOOD_FIT:
            break
    if best is None:
        forward, up = views[0]
        correspondence, _ = fit_canonical(rig, forward, up)
        best = ViewChoice(_as_tuple(forward), _as_tuple(up), correspondence)
    best.tried = tried
    return best


def _as_tuple(vector) -> tuple[float, float, float]:
    return tuple(float(v) for v in vector)


def likely_views(rig: RigDescription) -> list[tuple[np.ndarray, np.ndarray]]:
    """VIEWS ordered by how well each looks at the face region from outside the head: the face
    lies on the front of the surface, so its centroid is off the whole surface's toward it."""
    toward_face = rig.vertices[face_region(rig)].mean(0) - rig.vertices.mean(0)
    scored = []
    for forward, up in VIEWS:
        forward, up = np.array(forward, float), np.array(up, float)
        sideways = toward_face - up * (toward_face @ up)
        # Blender's Z-up first; then looking at the face: forward against the face's side.
        scored.append((up[2] != 1, sideways @ forward, forward, up))
    scored.sort(key=lambda item: item[:2])
    return [(forward, up) for *_, forward, up in scored]


def face_misfit(rig: RigDescription, correspondence: Correspondence) -> float:
    """RMS distance (inter-ocular units) of the landmarks' rig points from the best similarity
    of the canonical face: small for a face seen from the front."""
    from ..retarget.face.canonical import load_canonical_face
    from ..retarget.face.pose import fit_similarity

    valid = np.flatnonzero(correspondence.valid[:topology.NUM_MESH_LANDMARKS])
    canonical = load_canonical_face()[valid]
    points = correspondence.points(rig)[valid]
    fit = fit_similarity(canonical, points)
    residual = np.linalg.norm(fit.apply(canonical) - points, axis=1)
    return float(np.sqrt((residual ** 2).mean()) / fit.scale)


def cast_rays(rig: RigDescription, rays: tuple[np.ndarray, np.ndarray]) -> Correspondence:
    """First hits of (N, 3) rays on the face surface -> correspondence (misses are invalid)."""
    tree = BVHTree.FromPolygons(rig.vertices.tolist(), rig.triangles.tolist(), all_triangles=True)
    origins, directions = rays
    triangles = np.full(len(directions), -1, dtype=np.int32)
    points = np.zeros((len(directions), 3))
    for i, (origin, direction) in enumerate(zip(origins, directions)):
        location, _, index, _ = tree.ray_cast(origin.tolist(), direction.tolist())
        if location is not None:
            triangles[i], points[i] = index, location
    return from_hits(rig, triangles, points)


def face_region(rig: RigDescription) -> np.ndarray:
    """(V,) bool: the vertices any shape key moves (the face), else the jaw's, else all."""
    moved = np.zeros(len(rig.vertices), dtype=bool)
    for key in rig.shape_keys:
        moved |= np.abs(key.deltas).max(1) > 1e-5 * rig.size()
    if moved.sum() >= 20:
        return moved
    jaw = rig.bones.get("jaw")
    if jaw is not None and jaw.face_weights is not None and (jaw.face_weights > 0).sum() >= 20:
        # The jaw's vertices are the lower face: grow the box up to take in the eyes.
        lower = rig.vertices[jaw.face_weights > 0]
        low, high = lower.min(0), lower.max(0)
        up_axis = np.argmax(np.abs(jaw.head - lower.mean(0)))
        high[up_axis] = max(high[up_axis], jaw.head[up_axis] + (high - low)[up_axis])
        return np.all((rig.vertices >= low) & (rig.vertices <= high), axis=1)
    return np.ones(len(rig.vertices), dtype=bool)


def canonical_reference() -> bytes:
    """A one-frame motion file (.npz bytes) of the canonical face, the reference for
    characters no view shows a face of."""
    import io

    from ..retarget.face.canonical import load_canonical_face
    from ..retarget.face.pose import PIXEL_FROM_UPRIGHT
    from ..retarget.motion_file import Motion, write_motion

    face = load_canonical_face()
    pixels = face @ PIXEL_FROM_UPRIGHT.T * 150 + [256.0, 256.0, 0.0]
    buffer = io.BytesIO()
    write_motion(buffer, Motion(pixels[None].astype(np.float32), np.zeros((1, 6), np.float32),
                                25.0, {"image_size": [512, 512]},
                                {"neutral": face.astype(np.float32)}))
    return buffer.getvalue()
