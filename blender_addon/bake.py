"""`dimitra bake AUDIO --rig RIG --out OUT`: speech onto a face rig, headless (bpy as a module).

1. open the rig (.blend, .fbx, .glb/.gltf) and find its face meshes and armature;
2. render the face with Workbench from a temporary front camera, find the 478 landmarks on
   the render and cast rays from the camera through them onto the face surface (the
   correspondence); a face the detector misses gets the canonical-face fit instead;
3. generate the motion from the audio with the render as reference (or take `--motion`);
4. solve the rig's channels (retarget.solve) and key them into a new Action — an Action the
   rig already played is pushed onto the NLA, never overwritten — and put the sound in the
   sequencer at the start frame;
5. export OUT (.blend, .fbx, .glb) atomically, with the options that round-trip exactly.
Batch baking runs the backend in this process (the model is loaded once for a manifest); the
add-on's UI goes through the server instead.
"""

import contextlib
import csv
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix
from mathutils.bvhtree import BVHTree

from retarget.atomic_file import atomic_path
from retarget.correspond import (
    Correspondence,
    fit_canonical,
    from_hits,
    load_correspondence,
    ray_targets,
    save_correspondence,
)
from retarget.face import topology
from retarget.motion_file import Motion, load_motion
from retarget.rig import RigDescription, RigError
from retarget.solve import RigAnimation, SolveOptions, solve

from . import blender_api
from .key_writer import KeyWriter, plan_curves
from .rig_reader import find_armature, find_face_meshes, read_rig
from .scene_state import temporarily

RIG_FORMATS = (".blend", ".fbx", ".glb", ".gltf")
OUT_FORMATS = (".blend", ".fbx", ".glb")
RENDER_SIZE = 512
LENS_MM, SENSOR_MM = 85.0, 36.0
# Cameras tried until the detector finds the face: (looking along, up). Blender's front first.
VIEWS = (((0, 1, 0), (0, 0, 1)), ((0, -1, 0), (0, 0, 1)), ((-1, 0, 0), (0, 0, 1)),
         ((1, 0, 0), (0, 0, 1)), ((0, 0, -1), (0, 1, 0)), ((0, 0, 1), (0, 1, 0)))
MIN_HITS = 300   # of the 468 face points: fewer means the rays found some other face
GOOD_FIT = 0.12  # face_misfit below which a view is taken without trying others


class BakeError(ValueError):
    """Bad input to a bake; the message names the input and what to do."""


@dataclass
class BakeSettings:
    meshes: list[str] | None = None          # face mesh names (default: found automatically)
    armature: str | None = None
    solve: SolveOptions = field(default_factory=SolveOptions)
    start_frame: int | None = None           # default: the scene's start frame
    correspondence: str | Path | None = None  # reuse this file if it exists, else save it there
    motion: str | Path | None = None         # bake this motion file instead of generating
    generation: dict = field(default_factory=dict)   # GenerationOptions fields
    model: str | Path | None = None


@dataclass
class BakeResult:
    out: Path
    frames: int
    fps: float
    shape_keys: int
    bones: int
    correspondence: Correspondence   # reused by the next lines of a manifest
    report: dict
    seconds: float


def bake(audio: str | Path, rig_path: str | Path, out: str | Path,
         settings: BakeSettings | None = None, animator=None,
         correspondence: Correspondence | None = None) -> BakeResult:
    """Bake one line; `animator` (backend Animator) is reused when given."""
    started = time.perf_counter()
    settings = settings or BakeSettings()
    audio, rig_path, out = Path(audio), Path(rig_path), Path(out)
    check_paths(audio, rig_path, out)
    open_rig(rig_path)
    scene = bpy.context.scene
    meshes = find_face_meshes(settings.meshes)
    armature = find_armature(meshes, settings.armature)
    rig = read_rig(meshes, armature)
    with tempfile.TemporaryDirectory(prefix="dimitra-bake-") as work:
        if correspondence is None and settings.correspondence \
                and Path(settings.correspondence).is_file():
            correspondence = load_correspondence(settings.correspondence)
        reference = None
        if correspondence is None or settings.motion is None:
            found, reference = correspond_by_render(rig, armature, Path(work))
            correspondence = correspondence or found
        correspondence.check(rig)
        if settings.correspondence and not Path(settings.correspondence).is_file():
            save_correspondence(settings.correspondence, correspondence)
        if settings.motion:
            motion = load_motion(settings.motion)
        else:
            motion = generate_motion(audio, reference, rig.fps, settings, animator)
    animation = solve(rig, correspondence, motion, settings.solve)
    start = scene.frame_start if settings.start_frame is None else settings.start_frame
    write_animation(animation, meshes, armature, start, f"Dimitra {audio.stem}")
    blender_api.add_sound_strip(scene, audio.resolve(), start)
    scene.frame_start, scene.frame_end = start, start + animation.frame_count - 1
    export(out)
    return BakeResult(out, animation.frame_count, animation.fps, len(animation.shape_keys),
                      len(animation.bone_rotations), correspondence, animation.report,
                      time.perf_counter() - started)


def check_paths(audio: Path, rig_path: Path, out: Path) -> None:
    """Refuse before anything is opened or written."""
    if not audio.is_file():
        raise BakeError(f"{audio}: no such audio file")
    if rig_path.suffix.lower() not in RIG_FORMATS:
        raise BakeError(f"--rig {rig_path}: a rig is {', '.join(RIG_FORMATS)}; "
                        "export it in one of those")
    if not rig_path.is_file():
        raise BakeError(f"--rig {rig_path}: no such file")
    if out.suffix.lower() not in OUT_FORMATS:
        raise BakeError(f"--out {out}: write .blend, .fbx or .glb")
    if out.exists():
        raise BakeError(f"--out {out} already exists; choose a new name or remove it first "
                        "(a bake never overwrites a file)")


def open_rig(path: Path) -> None:
    """Make `path` the open scene (a .blend is opened; FBX/glTF go into an empty scene)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".blend":
            bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
            return
        bpy.ops.wm.read_factory_settings(use_empty=True)
        if suffix == ".fbx":
            bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0.0)
        else:
            bpy.ops.import_scene.gltf(filepath=str(path))
    except RuntimeError as error:
        raise BakeError(f"--rig {path}: Blender cannot read it ({str(error).strip()}); "
                        "check the file opens in Blender") from error
    if not any(o.type == "MESH" for o in bpy.data.objects):
        raise BakeError(f"--rig {path}: the file holds no mesh; it is not a character rig")


# ---------------------------------------------------------------------------------------------
# Correspondence from a reference render
# ---------------------------------------------------------------------------------------------

def correspond_by_render(rig: RigDescription, armature,
                         work: Path) -> tuple[Correspondence, str | Path]:
    """(correspondence, reference for generation: the render, or a canonical-face motion file).

    Views are tried from the likeliest front; a detection counts when its ray hits lie like a
    face (a profile or the back of a head can fool the detector): the first that fits well is
    taken, else the best fitting one, else the canonical-face fit.
    """
    from backend.generation.reference import ReferenceFaceError, load_reference

    views = likely_views(rig)
    best = None
    for index, (forward, up) in enumerate(views):
        image = work / f"reference_{index}.png"
        rays = render_reference(rig, armature, forward, up, image)
        try:
            landmarks = load_reference(image).landmarks_px
        except ReferenceFaceError:
            continue
        correspondence = cast_rays(rig, rays(ray_targets(landmarks)))
        if correspondence.valid[:topology.NUM_MESH_LANDMARKS].sum() < MIN_HITS:
            continue
        misfit = face_misfit(rig, correspondence)
        if best is None or misfit < best[0]:
            best = (misfit, correspondence, image)
        if misfit < GOOD_FIT:
            break
    if best is not None:
        return best[1], best[2]
    correspondence, _ = fit_canonical(rig, *views[0])
    return correspondence, canonical_reference(work / "canonical_reference.npz")


def likely_views(rig: RigDescription) -> list[tuple[np.ndarray, np.ndarray]]:
    """VIEWS ordered by how well each looks at the face region from outside the head: the face
    lies on the front of the surface, so its centroid is off the whole surface's toward it."""
    toward_face = rig.vertices[_face_region(rig)].mean(0) - rig.vertices.mean(0)
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
    from retarget.face.canonical import load_canonical_face
    from retarget.face.pose import fit_similarity

    valid = np.flatnonzero(correspondence.valid[:topology.NUM_MESH_LANDMARKS])
    canonical = load_canonical_face()[valid]
    points = correspondence.points(rig)[valid]
    fit = fit_similarity(canonical, points)
    residual = np.linalg.norm(fit.apply(canonical) - points, axis=1)
    return float(np.sqrt((residual ** 2).mean()) / fit.scale)


def render_reference(rig: RigDescription, armature, forward: np.ndarray, up: np.ndarray,
                     image: Path):
    """Render the rest face from a temporary camera; returns pixels (N, 2) -> rays (origin, dir)."""
    scene = bpy.context.scene
    region = _face_region(rig)
    right = np.cross(forward, up)
    local = rig.vertices[region] @ np.stack([right, up, forward], 1)
    low, high = local.min(0), local.max(0)
    size = 1.5 * max(high[0] - low[0], high[1] - low[1])
    half_tan = SENSOR_MM / 2 / LENS_MM
    distance = size / 2 / half_tan + (high[2] - low[2]) / 2
    centre = np.stack([right, up, forward], 1) @ ((low + high) / 2)
    origin = centre - forward * distance
    axes = np.stack([right, up, -forward], 1)                  # camera local x, y, z in scene
    camera_data = bpy.data.cameras.new("Dimitra reference camera")
    camera_data.lens, camera_data.sensor_width, camera_data.sensor_fit = LENS_MM, SENSOR_MM, "HORIZONTAL"
    camera_data.clip_start, camera_data.clip_end = distance * 0.01, distance * 20
    camera = bpy.data.objects.new("Dimitra reference camera", camera_data)
    scene.collection.objects.link(camera)
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = axes, origin
    camera.matrix_world = Matrix(transform.tolist())
    try:
        rest_state = []   # the rest state: no pose, no shape key mix
        for obj in bpy.data.objects:
            if obj.type == "MESH" and obj.data.shape_keys is not None:
                rest_state += [(obj, "show_only_shape_key", True), (obj, "active_shape_key_index", 0)]
            if obj.type == "ARMATURE":
                rest_state.append((obj.data, "pose_position", "REST"))
        with temporarily(_render_settings(scene, camera, image) + rest_state), _quiet():
            bpy.ops.render.render(write_still=True)
    finally:
        bpy.data.objects.remove(camera)
        bpy.data.cameras.remove(camera_data)

    def rays(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (pixels[:, 0] / RENDER_SIZE - 0.5) * 2 * half_tan
        y = (0.5 - pixels[:, 1] / RENDER_SIZE) * 2 * half_tan
        directions = np.stack([x, y, -np.ones_like(x)], 1) @ axes.T
        return np.broadcast_to(origin, directions.shape), directions
    return rays


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


def canonical_reference(path: Path) -> Path:
    """A one-frame motion file of the canonical face, for characters the detector misses."""
    from retarget.face.canonical import load_canonical_face
    from retarget.face.pose import PIXEL_FROM_UPRIGHT
    from retarget.motion_file import save_motion

    face = load_canonical_face()
    pixels = face @ PIXEL_FROM_UPRIGHT.T * 150 + [256.0, 256.0, 0.0]
    return save_motion(path, Motion(pixels[None].astype(np.float32), np.zeros((1, 6), np.float32),
                                    25.0, {"image_size": [512, 512]},
                                    {"neutral": face.astype(np.float32)}))


def _face_region(rig: RigDescription) -> np.ndarray:
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


def _render_settings(scene, camera, image: Path) -> list[tuple]:
    render, shading = scene.render, scene.display.shading
    return [(render, "engine", "BLENDER_WORKBENCH"), (render, "resolution_x", RENDER_SIZE),
            (render, "resolution_y", RENDER_SIZE), (render, "resolution_percentage", 100),
            (render, "pixel_aspect_x", 1.0), (render, "pixel_aspect_y", 1.0),
            (render, "film_transparent", False), (render, "use_border", False),
            (render.image_settings, "file_format", "PNG"),
            (render.image_settings, "color_mode", "RGB"), (render, "filepath", str(image)),
            (scene.display, "render_aa", "FXAA"), (shading, "light", "STUDIO"),
            (shading, "color_type", "MATERIAL"), (scene, "camera", camera)]


@contextlib.contextmanager
def _quiet():
    """Blender prints a line per render; a batch log wants the per-line report only."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


# ---------------------------------------------------------------------------------------------
# Motion, keys, export
# ---------------------------------------------------------------------------------------------

def generate_motion(audio: Path, reference, fps: float, settings: BakeSettings,
                    animator=None) -> Motion:
    from backend.generation.animate import AnimateRequest, Animator
    from backend.generation.generator import GenerationOptions
    from backend.model.checkpoint import DEFAULT_MODEL

    animator = animator or Animator(settings.model or DEFAULT_MODEL)
    motion, _, _ = animator.animate(AnimateRequest(audio, reference,
                                                   GenerationOptions(**settings.generation), fps))
    return motion


def write_animation(animation: RigAnimation, meshes: list, armature, start_frame: int,
                    name: str) -> list[str]:
    """Key every channel into a new Action (one with a slot per datablock on 4.4+), in one go.

    Returns the names of the Actions made. Keys go to every face mesh with a key of that name.
    The add-on's KeyWriter does the writing, here without a time budget.
    """
    if armature is None:
        animation = replace(animation, bone_rotations={})
    modes = {bone: armature.pose.bones[bone].rotation_mode for bone in animation.bone_rotations}
    writer = KeyWriter(plan_curves(animation, modes), meshes, armature, start_frame, name)
    try:
        writer.begin()
        writer.step(float("inf"))
    except Exception:
        writer.rollback()
        raise
    return [action.name for action in writer.actions]


def export(out: Path) -> Path:
    """Write the open scene to `out` (.blend, .fbx, .glb) atomically."""
    suffix = out.suffix.lower()
    with atomic_path(out, keep_suffix=True) as tmp, _quiet():
        if suffix == ".blend":
            preferences = bpy.context.preferences.filepaths
            with temporarily([(preferences, "save_version", 0)]):   # no .blend1 beside it
                bpy.ops.wm.save_as_mainfile(filepath=str(tmp), check_existing=False, copy=True)
        elif suffix == ".fbx":
            bpy.ops.export_scene.fbx(
                filepath=str(tmp), check_existing=False, bake_anim=True,
                bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
                bake_anim_simplify_factor=0.0, bake_anim_force_startend_keying=True,
                add_leaf_bones=False)
        else:   # one glTF animation from the one Action with a slot per datablock
            bpy.ops.export_scene.gltf(
                filepath=str(tmp), check_existing=False, export_format="GLB",
                export_animations=True, export_animation_mode="ACTIONS", export_force_sampling=True,
                export_optimize_animation_size=False, export_frame_range=True, export_morph=True,
                export_morph_animation=True)
    return out


# ---------------------------------------------------------------------------------------------
# Many lines in one process
# ---------------------------------------------------------------------------------------------

def bake_manifest(manifest: str | Path, rig_path: str | Path, settings: BakeSettings | None = None,
                  progress: bool = True) -> list[dict]:
    """Bake every line of a CSV (`audio,out` columns; relative paths from the CSV's folder).

    The model is loaded once and the correspondence made once; a failed line is reported and
    the others still bake. Returns one report per line.
    """
    from tqdm import tqdm

    from backend.generation.animate import Animator
    from backend.model.checkpoint import DEFAULT_MODEL

    manifest = Path(manifest)
    settings = settings or BakeSettings()
    lines = read_manifest(manifest)
    animator = None if settings.motion else Animator(settings.model or DEFAULT_MODEL)
    correspondence, reports = None, []
    for number, (audio, out) in enumerate(tqdm(lines, desc="bake", unit="line",
                                               disable=not progress), start=2):
        try:
            result = bake(audio, rig_path, out, settings, animator, correspondence)
        except (BakeError, RigError, ValueError, RuntimeError, OSError) as error:
            reports.append({"line": number, "audio": str(audio), "out": str(out),
                            "status": "failed", "error": str(error)})
            continue
        correspondence = result.correspondence
        reports.append({"line": number, "audio": str(audio), "out": str(out), "status": "ok",
                        "frames": result.frames, "seconds": round(result.seconds, 2)})
    return reports


def read_manifest(manifest: Path) -> list[tuple[Path, Path]]:
    if not manifest.is_file():
        raise BakeError(f"--manifest {manifest}: no such file")
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"audio", "out"} <= set(rows[0]):
        raise BakeError(f"--manifest {manifest}: a CSV with a header row naming the columns "
                        "'audio' and 'out', one line to bake per row")
    base = manifest.parent
    return [(base / row["audio"].strip(), base / row["out"].strip()) for row in rows]
