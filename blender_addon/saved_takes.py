"""A take's motion kept in the .blend, so Re-solve and Show landmarks work after it is reopened.

Generate keeps what Re-solve needs in memory (generate_job.RESULTS). When the file is saved,
each Dimitra Action gets it as hidden ID properties (a leading "_" keeps them out of the
Custom Properties panel):

    _dimitra_motion           bytes  the motion file (docs/FORMATS.md, "Motion file")
    _dimitra_correspondence   bytes  the correspondence file (docs/FORMATS.md)
    _dimitra_take             str    JSON: face meshes, armature, start frame, audio name,
                                     the take's settings, the reference view's direction

The rig is not stored: the face meshes and armature are in the file already, and are read
again the first time a reopened take is needed (the correspondence checks they still match).
"""

import json
import tempfile
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from ..retarget.correspond import load_correspondence, save_correspondence
from ..retarget.motion_file import load_motion, save_motion
from ..retarget.rig import RigError
from . import generate_job
from .generate_job import GeneratedResult
from .reference_view import ViewChoice
from .rig_reader import read_rig
from .scene_inputs import GenerateSettings, InputError

MOTION, CORRESPONDENCE, TAKE = "_dimitra_motion", "_dimitra_correspondence", "_dimitra_take"


def has_take(action) -> bool:
    """Whether Re-solve can use `action`: a Dimitra Action with its take here or in the file."""
    return bool(action.get("dimitra")) and (action.name in generate_job.RESULTS
                                            or TAKE in action)


def store(action, result: GeneratedResult) -> None:
    """Write `result` into `action`'s ID properties."""
    with tempfile.TemporaryDirectory(prefix="dimitra-take-") as work:
        motion = save_motion(Path(work) / "motion.npz", result.motion).read_bytes()
        correspondence = save_correspondence(Path(work) / "correspondence.npz",
                                             result.correspondence).read_bytes()
    view = result.view
    take = {"mesh_names": list(result.mesh_names), "armature_name": result.armature_name,
            "start_frame": int(result.start_frame), "audio_name": result.audio_name,
            "settings": asdict(result.settings),
            "view": None if view is None else {"forward": list(view.forward),
                                               "up": list(view.up), "misfit": view.misfit}}
    for name, value in ((MOTION, motion), (CORRESPONDENCE, correspondence),
                        (TAKE, json.dumps(take))):
        if name in action:   # assigned over, a bytes property keeps only up to its first NUL
            del action[name]
        action[name] = value


def load(action) -> GeneratedResult:
    """The take stored in `action`; InputError when it has none or its face is gone."""
    if TAKE not in action:
        raise InputError(f"Action {action.name!r}: its motion is not in this file (it was made "
                         "before Dimitra kept takes in the .blend); Generate again")
    try:
        take = json.loads(action[TAKE])
        with tempfile.TemporaryDirectory(prefix="dimitra-take-") as work:
            motion_path = Path(work) / "motion.npz"
            motion_path.write_bytes(bytes(action[MOTION]))
            correspondence_path = Path(work) / "correspondence.npz"
            correspondence_path.write_bytes(bytes(action[CORRESPONDENCE]))
            motion = load_motion(motion_path)
            correspondence = load_correspondence(correspondence_path)
    except (KeyError, ValueError, zipfile.BadZipFile) as error:   # a cut blob: BadZipFile
        raise InputError(f"Action {action.name!r}: its stored take is unreadable ({error}); "
                         "Generate again") from error
    meshes = []
    for name in take["mesh_names"]:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "MESH":
            raise InputError(f"face mesh {name!r} of this Dimitra take is gone; Generate again")
        meshes.append(obj)
    armature = bpy.data.objects.get(take["armature_name"]) if take["armature_name"] else None
    if take["armature_name"] and armature is None:
        raise InputError(f"armature {take['armature_name']!r} of this take is gone; Generate "
                         "again")
    try:
        rig = read_rig(meshes, armature)
    except RigError as error:
        raise InputError(str(error)) from error
    known = {f.name for f in fields(GenerateSettings)}
    settings = GenerateSettings(**{k: v for k, v in take["settings"].items() if k in known})
    view = take["view"]
    if view is not None:
        view = ViewChoice(tuple(view["forward"]), tuple(view["up"]), correspondence,
                          misfit=view["misfit"])
    return GeneratedResult(motion, correspondence, rig, [o.name for o in meshes],
                           armature.name if armature is not None else None,
                           take["start_frame"], take["audio_name"], settings, view=view)


@persistent
def store_before_saving(*_args) -> None:
    """save_pre: every Dimitra Action whose take is in memory keeps it in the file."""
    for name, result in generate_job.RESULTS.items():
        action = bpy.data.actions.get(name)
        if action is not None and action.get("dimitra") and action.library is None:
            store(action, result)


@persistent
def forget_after_loading(*_args) -> None:
    """load_post: takes in memory belong to the file that was open; the new file's own are
    read from it (an Action of the same name there is another take)."""
    generate_job.RESULTS.clear()


def register() -> None:
    bpy.app.handlers.save_pre.append(store_before_saving)
    bpy.app.handlers.load_post.append(forget_after_loading)


def unregister() -> None:
    for handlers, handler in ((bpy.app.handlers.save_pre, store_before_saving),
                              (bpy.app.handlers.load_post, forget_after_loading)):
        if handler in handlers:
            handlers.remove(handler)
