"""`dimitra bake AUDIO --rig RIG --out OUT`: speech onto a face rig, headless (bpy as a module).

1. open the rig (.blend, .fbx, .glb/.gltf) and find its face meshes and armature;
2. choose the reference view as the add-on's Generate does (reference_view): render the face
   from the likeliest sides, find the 478 landmarks on each render and cast rays from the
   camera through them onto the face surface (the correspondence); the view whose hits lie
   most like a face wins, and a face the detector misses everywhere gets the canonical-face
   fit instead;
3. generate the motion from the audio with the render as reference (or take `--motion`);
4. solve the rig's channels (retarget.solve) and key them into a new Action — an Action the
   rig already played is pushed onto the NLA, never overwritten — and put the sound in the
   sequencer at the start frame;
5. export OUT (.blend, .fbx, .glb) atomically, with the options that round-trip exactly.
Batch baking runs the backend in this process (the model is loaded once for a manifest); the
add-on's UI goes through the server instead.
"""

import contextlib
import itertools
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import bpy

from ..retarget.atomic_file import atomic_path
from ..retarget.correspond import Correspondence, load_correspondence, save_correspondence
from ..retarget.motion_file import Motion, load_motion
from ..retarget.rig import RigDescription, RigError
from ..retarget.solve import RigAnimation, solve
from . import blender_api
from .bake_settings import BakeSettings
from .key_writer import KeyWriter, plan_curves
from .manifest import ManifestLine, read_manifest
from .reference_view import ViewChoice, canonical_reference, choose_view, read_snapshot
from .rig_reader import find_armature, find_face_meshes, read_rig
from .scene_state import temporarily

RIG_FORMATS = (".blend", ".fbx", ".glb", ".gltf")
OUT_FORMATS = (".blend", ".fbx", ".glb")


class BakeError(ValueError):
    """Bad input to a bake; the message names the input and what to do."""


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
    view: ViewChoice | None = None   # the reference view (None: correspondence and motion given)


def bake(audio: str | Path, rig_path: str | Path, out: str | Path,
         settings: BakeSettings | None = None, animator=None,
         correspondence: Correspondence | None = None,
         view: ViewChoice | None = None) -> BakeResult:
    """Bake one line; `animator` (backend Animator), `correspondence` and `view` (the reference
    view chosen for this rig) are reused when given."""
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
        if view is None and (correspondence is None or settings.motion is None):
            view = choose_reference_view(rig, meshes, Path(work))
        correspondence = correspondence or view.correspondence
        correspondence.check(rig)
        if settings.correspondence and not Path(settings.correspondence).is_file():
            save_correspondence(settings.correspondence, correspondence)
        if settings.motion:
            motion = load_motion(settings.motion)
        else:   # the chosen render, or the canonical face where no view showed one
            reference = view.image if view.image is not None else canonical_reference()
            motion = generate_motion(audio, reference, rig.fps, settings, animator)
    animation = solve(rig, correspondence, motion, settings.solve)
    start = scene.frame_start if settings.start_frame is None else settings.start_frame
    write_animation(animation, meshes, armature, start, f"Dimitra {audio.stem}")
    blender_api.add_sound_strip(scene, audio.resolve(), start)
    scene.frame_start, scene.frame_end = start, start + animation.frame_count - 1
    export(out)
    return BakeResult(out, animation.frame_count, animation.fps, len(animation.shape_keys),
                      len(animation.bone_rotations), correspondence, animation.report,
                      time.perf_counter() - started, view)


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
# The reference view (the add-on's Generate chooses it the same way: reference_view)
# ---------------------------------------------------------------------------------------------

def choose_reference_view(rig: RigDescription, meshes: list, work: Path) -> ViewChoice:
    """reference_view.choose_view with the backend's face tracker in this process; each render
    is kept in `work` as reference_<n>.png."""
    from ..backend.generation import reference

    numbers = itertools.count()

    def detect(image: bytes):
        path = work / f"reference_{next(numbers)}.png"
        path.write_bytes(image)
        try:
            return reference.load_reference(path).landmarks_px
        except reference.ReferenceFaceError:
            return None
    return choose_view(rig, read_snapshot(rig, meshes), detect)


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
    from ..backend.generation.animate import AnimateRequest, Animator
    from ..backend.generation.generator import GenerationOptions
    from ..backend.model.checkpoint import DEFAULT_MODEL

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

class LineBaker:
    """Bakes manifest lines one after another in this process: the model loaded once, the
    reference view and correspondence made once per rig. `bake_manifest` and each Ray worker
    (backend/scale/bake.py) bake through one."""

    def __init__(self, settings: BakeSettings | None = None):
        self.settings = settings or BakeSettings()
        self.animator = None
        self.rigs: dict[Path, tuple[Correspondence, ViewChoice | None]] = {}  # made per rig

    def load_model(self) -> None:
        """Load the model now (else the first line that generates does)."""
        from ..backend.generation.animate import Animator
        from ..backend.model.checkpoint import DEFAULT_MODEL

        if self.animator is None and not self.settings.motion:
            self.animator = Animator(self.settings.model or DEFAULT_MODEL)

    def bake_line(self, line: ManifestLine) -> dict:
        """Bake one line; a failure is reported in the result, never raised."""
        report = {"line": line.number, "audio": str(line.audio), "out": str(line.out),
                  "rig": str(line.rig)}
        try:
            self.load_model()
            correspondence, view = self.rigs.get(line.rig, (None, None))
            result = bake(line.audio, line.rig, line.out, self.settings, self.animator,
                          correspondence, view)
        except (BakeError, RigError, ValueError, RuntimeError, OSError) as error:
            return {**report, "status": "failed", "error": str(error)}
        self.rigs[line.rig] = (result.correspondence, result.view or view)
        return {**report, "status": "ok", "frames": result.frames,
                "seconds": round(result.seconds, 2)}


def bake_manifest(manifest: str | Path, rig_path: str | Path | None,
                  settings: BakeSettings | None = None, progress: bool = True,
                  out_dir: str | Path | None = None) -> list[dict]:
    """Bake every line of a CSV (manifest.py: `audio,out[,rig]` columns) in this process.

    A failed line is reported and the others still bake. Returns one report per line.
    """
    from tqdm import tqdm

    lines = read_manifest(manifest, rig_path, out_dir)
    baker = LineBaker(settings)
    baker.load_model()   # a model that does not load stops the run before any line
    return [baker.bake_line(line)
            for line in tqdm(lines, desc="bake", unit="line", disable=not progress)]
