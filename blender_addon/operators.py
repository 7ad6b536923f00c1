"""Operators: Generate, Cancel, Re-solve, Show landmarks, Export FBX.

Operators only gather settings (one GenerateSettings) and hand them to a GenerateJob; the work
is in generate_job, key_writer and landmark_points. In background mode (`blender -b`, or bpy
as a module) Generate and Re-solve run to completion before they return, so pipelines can
script them: `bpy.ops.dimitra.generate(mesh="Face", audio_file="line.wav")`; an error raises
RuntimeError with the message.

A button that cannot run is greyed out with the reason (`poll` + `poll_message_set`). Generate's
poll checks the panel's face and audio only where the panel is (the 3D Viewport): a script
passes them as arguments, and `execute` checks those.
"""

from dataclasses import fields, replace
from pathlib import Path
from urllib.parse import urlsplit

import bpy
from bpy.props import IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import generate_job, saved_takes
from .bake import export
from .generate_job import Backend, GenerateJob
from .landmark_points import show_landmarks
from .preferences import backend_for
from .properties import RESOLVE_SETTINGS, settings_from_scene, tuning_properties
from .rig_reader import find_armature
from .scene_inputs import FaceInputs, InputError, audio_input, face_inputs

NO_START_FRAME = -(2 ** 31)   # the operator's "not given": the strip's or the scene's start


def _show_progress(job: GenerateJob) -> None:
    """The job's stage and fraction where the panel shows them."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    wm.dimitra_stage = job.message if job.finished else job.stage
    wm.dimitra_progress = job.fraction
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def _run(operator, context, job: GenerateJob) -> set[str]:
    """Start `job`: to completion in background mode, else on timers (+ Esc when invoked)."""
    job.on_tick = _show_progress
    try:
        generate_job.start(job, use_timer=not bpy.app.background)
    except RuntimeError as error:
        operator.report({"ERROR"}, str(error))
        return {"CANCELLED"}
    if bpy.app.background:
        job.run_to_completion()
        generate_job.stop_all()
        if job.state == "done":   # in the UI the job pushes this step itself, on its last tick
            _undo_step(f"Dimitra {operator.bl_label}")
        return _finished(operator, job)
    return {"FINISHED"}


def _undo_step(message: str) -> None:
    """One undo step for a finished job, so Ctrl+Z (ed.undo) takes the whole take back."""
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:   # a Blender started without an undo stack: nothing to undo into
        pass


def _finished(operator, job: GenerateJob) -> set[str]:
    for warning in job.warnings:
        operator.report({"WARNING"}, warning)
    if job.state == "done":
        operator.report({"INFO"}, job.message)
        return {"FINISHED"}
    operator.report({"ERROR"} if job.state == "failed" else {"WARNING"}, job.message)
    return {"CANCELLED"}


def _job_running() -> bool:
    job = generate_job.active_job()
    return job is not None and not job.finished


def _refuse(operator_class, reason: str) -> bool:
    """poll's answer for a button that cannot run: greyed out, `reason` in its tooltip."""
    operator_class.poll_message_set(reason)
    return False


def generate_blocker(context) -> str | None:
    """Why Generate cannot run with the panel's face and audio, or None."""
    settings = context.scene.dimitra
    active = context.view_layer.objects.active if context.view_layer else None
    mesh = settings.mesh or (active if active is not None and active.type == "MESH" else None)
    if mesh is None:
        return "No face mesh: pick the face mesh in the Dimitra panel, or make it active"
    if mesh.data.shape_keys is None and settings.armature is None \
            and find_armature([mesh]) is None:
        return (f"{mesh.name!r} has no shape keys and no armature with head or jaw bones: "
                "nothing to animate; pick the face mesh")
    if settings.audio_source == "STRIP" and not settings.audio_strip:
        return "No audio: pick a sound strip of the sequencer (or an audio file)"
    if settings.audio_source == "FILE" and not settings.audio_file:
        return "No audio: pick an audio file (or a sound strip of the sequencer)"
    return None


def off_this_machine(address: str) -> bool:
    """Whether a backend address is on another machine: a tcp host other than loopback."""
    scheme, _, rest = address.partition("://")
    if scheme != "tcp":
        return False   # ipc (or no address: a backend this add-on starts here)
    host = urlsplit("//" + rest).hostname or ""
    return not (host == "localhost" or host == "::1" or host.startswith("127."))


def refuse_offline(backend: Backend) -> None:
    """InputError when Blender's online access is off and the backend is on another machine."""
    if bpy.app.online_access or not off_this_machine(backend.address):
        return
    raise InputError(f"Remote server {backend.address}: Blender's online access is off, and a "
                     "Remote backend sends the audio over the network. Allow it in "
                     "Preferences > System > Network > Allow Online Access (or start Blender "
                     "with --online-mode), or use a backend on this machine")


class _WatchesEsc:
    """Invoked from the UI: the job runs on timers while this modal handler watches for Esc."""

    def invoke(self, context, event):
        result = self.execute(context)
        job = generate_job.active_job()
        if "FINISHED" not in result or job is None or job.finished:
            return result
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = generate_job.active_job()
        if event.type == "ESC" and event.value == "PRESS" and job is not None:
            job.cancel()
        if job is None or job.finished:
            context.window_manager.event_timer_remove(self._timer)
            return _finished(self, job) if job is not None else {"CANCELLED"}
        return {"PASS_THROUGH"}


class DIMITRA_OT_generate(_WatchesEsc, bpy.types.Operator):
    """Generate lip sync, expression, blinks and head motion from speech into a new Action"""
    bl_idname = "dimitra.generate"
    bl_label = "Generate"
    __annotations__ = {
        "mesh": StringProperty(name="Face mesh", description="Mesh name(s), comma-separated "
                               "(default: the panel's, else the active object)"),
        "armature": StringProperty(name="Armature"),
        "audio_strip": StringProperty(name="Sound strip"),
        "audio_file": StringProperty(name="Audio file", subtype="FILE_PATH"),
        "start_frame": IntProperty(name="Start frame", default=NO_START_FRAME),
        "server": StringProperty(name="Server", description="tcp://HOST:PORT (default: the "
                                 "preferences' backend)"),
        "server_key": StringProperty(name="Server public key", subtype="FILE_PATH"),
        "client_key": StringProperty(name="Client secret key", subtype="FILE_PATH"),
        **tuning_properties(),
    }

    @classmethod
    def poll(cls, context):
        if _job_running():
            return _refuse(cls, "A Dimitra job is running: wait for it or cancel it (Esc)")
        if context.area is not None and context.area.type == "VIEW_3D":
            reason = generate_blocker(context)
            if reason is not None:
                return _refuse(cls, reason)
        return True

    def settings(self, context):
        settings = settings_from_scene(context.scene)
        given = {f.name for f in fields(settings) if self.properties.is_property_set(f.name)}
        for name in given:
            setattr(settings, name, getattr(self, name))
        if "audio_file" in given and "audio_strip" not in given:
            settings.audio_strip = ""
        if "audio_strip" in given and "audio_file" not in given:
            settings.audio_file = ""
        if settings.start_frame == NO_START_FRAME:
            settings.start_frame = None
        return settings

    def execute(self, context):
        try:
            settings = self.settings(context)
            face = face_inputs(settings, context)
            audio = audio_input(settings, context.scene)
            backend = backend_for(settings.server, settings.server_key, settings.client_key,
                                  context)
            refuse_offline(backend)
        except InputError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return _run(self, context, GenerateJob(settings, face, audio, backend, context.scene))


class DIMITRA_OT_resolve(_WatchesEsc, bpy.types.Operator):
    """Solve the cached landmarks again with new strength and smoothing (no backend call)"""
    bl_idname = "dimitra.resolve"
    bl_label = "Re-solve"
    __annotations__ = {
        "action": StringProperty(name="Action", description="A Dimitra Action (default: the "
                                 "active object's)"),
        **{name: tuning_properties()[name] for name in RESOLVE_SETTINGS},
    }

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        try:
            action, result = dimitra_result(context, self.action)
            settings = replace(result.settings)
            scene_settings = context.scene.dimitra
            for name in RESOLVE_SETTINGS:
                given = self.properties.is_property_set(name)
                setattr(settings, name, getattr(self if given else scene_settings, name))
            face = cached_face(result)
        except InputError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        job = GenerateJob(settings, face, None, None, context.scene, cached=result,
                          replacing=action)
        return _run(self, context, job)


class DIMITRA_OT_cancel(bpy.types.Operator):
    """Cancel the running Dimitra job (nothing is changed)"""
    bl_idname = "dimitra.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return _job_running() or _refuse(cls, "No Dimitra job is running")

    def execute(self, context):
        job = generate_job.active_job()
        if job is not None and not job.finished:
            job.cancel()
        return {"FINISHED"}


class DIMITRA_OT_show_landmarks(bpy.types.Operator):
    """Add an animated mesh of the 478 generated landmarks, for inspection"""
    bl_idname = "dimitra.show_landmarks"
    bl_label = "Show landmarks"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 - Blender reads a plain set
    action: StringProperty(name="Action")

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        try:
            _, result = dimitra_result(context, self.action)
            obj = show_landmarks(result, context.scene)
        except (InputError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Dimitra: landmarks in {obj.name!r}")
        return {"FINISHED"}


class DIMITRA_OT_export_fbx(bpy.types.Operator, ExportHelper):
    """Export the scene as FBX with the options that round-trip exactly"""
    bl_idname = "dimitra.export_fbx"
    bl_label = "Export FBX"
    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        if any(o.type == "ARMATURE" or (o.type == "MESH" and o.data.shape_keys is not None)
               for o in context.scene.objects):
            return True
        return _refuse(cls, "Nothing to export: the scene has no armature and no mesh with "
                            "shape keys")

    def execute(self, context):
        path = Path(bpy.path.abspath(self.filepath))
        if path.suffix.lower() != ".fbx":
            path = path.with_suffix(".fbx")
        try:
            export(path)
        except (OSError, RuntimeError) as error:
            self.report({"ERROR"}, f"Export FBX to {path}: {error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Dimitra: exported {path}")
        return {"FINISHED"}


def _take_poll(operator_class, context) -> bool:
    """Re-solve and Show landmarks: a take to work on, and no job running."""
    if _job_running():
        return _refuse(operator_class, "A Dimitra job is running: wait for it or cancel it")
    if _take_action(context) is None:
        return _refuse(operator_class, "No Dimitra take: Generate first (or select the face "
                                       "Dimitra animated)")
    return True


def dimitra_result(context, action_name: str = ""):
    """(Action, its GeneratedResult) for Re-solve and Show landmarks: from this session, else
    read from the file (saved_takes)."""
    action = bpy.data.actions.get(action_name) if action_name else _take_action(context)
    if action is None:
        if action_name:
            raise InputError(f"Action {action_name!r}: no Action of that name")
        raise InputError("no Dimitra Action: select the face (or armature) Dimitra animated, "
                         "or Generate first")
    if not action.get("dimitra"):
        raise InputError(f"Action {action.name!r} was not made by Dimitra; pick a Dimitra "
                         "Action")
    result = generate_job.RESULTS.get(action.name)
    if result is None:
        result = generate_job.RESULTS[action.name] = saved_takes.load(action)
    return action, result


def _take_action(context):
    """The Dimitra Action the active object plays, else the newest take in the file."""
    obj = context.view_layer.objects.active if context.view_layer else None
    owners = []
    if obj is not None:
        owners.append(obj)
        if obj.type == "MESH" and obj.data.shape_keys is not None:
            owners.insert(0, obj.data.shape_keys)
    for owner in owners:
        anim = owner.animation_data
        if anim is not None and anim.action is not None and saved_takes.has_take(anim.action):
            return anim.action
    in_session = [n for n in generate_job.RESULTS if n in bpy.data.actions]
    if in_session:
        return bpy.data.actions[in_session[-1]]
    return next((a for a in reversed(bpy.data.actions) if saved_takes.has_take(a)), None)


def cached_face(result) -> FaceInputs:
    meshes = []
    for name in result.mesh_names:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "MESH":
            raise InputError(f"face mesh {name!r} of this Dimitra take is gone; Generate again")
        meshes.append(obj)
    armature = bpy.data.objects.get(result.armature_name) if result.armature_name else None
    if result.armature_name and armature is None:
        raise InputError(f"armature {result.armature_name!r} of this take is gone; Generate "
                         "again")
    return FaceInputs(meshes, armature, result.rig)


CLASSES = (DIMITRA_OT_generate, DIMITRA_OT_resolve, DIMITRA_OT_cancel,
           DIMITRA_OT_show_landmarks, DIMITRA_OT_export_fbx)


def export_menu_entry(self, context):
    """File > Export > Dimitra FBX."""
    self.layout.operator(DIMITRA_OT_export_fbx.bl_idname, text="Dimitra FBX (.fbx)")


def register_menus() -> None:
    bpy.types.TOPBAR_MT_file_export.append(export_menu_entry)


def unregister_menus() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(export_menu_entry)
