"""Render comparison: the rig's last take beside the photoreal take, with the sound, as one video.

What runs where: Blender renders the rig's take with Workbench from the scene camera (with the
sequencer's sound), here, on the main thread. The photoreal take needs OpenCV and
onnxruntime, which the extension does not carry, so it is made by `dimitra render` in a
separate process of the Python where Dimitra is installed on this machine (the Local backend's
Python in the preferences): it animates the picture the last Generate sent as the reference
(the rig's own render) with that Generate's motion, and lays the rig's video on the left. A
Remote server renders no video; the button says so rather than pretending.
"""

import subprocess
import tempfile
from pathlib import Path

import bpy
from bpy.props import StringProperty

from ..retarget.motion_file import save_motion
from . import preferences
from .operators import dimitra_result
from .preview import render_preview
from .scene_inputs import InputError
from .scene_state import temporarily

SIZE = 256                  # each half of the comparison, pixels (the renderer's real-time size)
TIMEOUT_S = 3600.0


def local_python(explicit: str, context) -> str:
    """The Python that runs `dimitra render`: `explicit`, else the Local backend's."""
    if explicit:
        return bpy.path.abspath(explicit)
    prefs = preferences.addon_preferences(context)
    if prefs is not None and prefs.backend == "LOCAL" and prefs.python:
        return bpy.path.abspath(prefs.python)
    raise InputError("Render comparison runs `dimitra render` on this machine: choose the Local "
                     "backend and its Python in Preferences > Add-ons > Dimitra (a Remote "
                     "server renders no video)")


def render_comparison(result, out: Path, python: str, scene) -> Path:
    """Write `out` (.mp4): the rig's take (Workbench, left) beside the photoreal take (right)."""
    view = result.view
    if view is None or view.image is None:
        raise InputError("the last Generate found no face in the rig's render (it used the "
                         "canonical face), so there is no picture to animate; Generate again "
                         "with the face in view")
    frames = result.motion.frame_count
    with tempfile.TemporaryDirectory(prefix="dimitra-comparison-") as folder:
        work = Path(folder)
        save_motion(work / "take.npz", result.motion)
        (work / "reference.png").write_bytes(view.image)
        rig_video = work / "rig.mp4"
        with temporarily([(scene, "frame_start", result.start_frame),
                          (scene, "frame_end", result.start_frame + frames - 1)]):
            render_preview(rig_video, SIZE)
        # The rig's video carries the sequencer's sound from the take's first frame: the speech.
        command = [python, "-m", "dimitra.backend.cli", "render", str(work / "take.npz"),
                   "--ref", str(work / "reference.png"), "--out", str(out), "--audio",
                   str(rig_video), "--side-by-side", str(rig_video), "--size", str(SIZE)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  check=False)
        except OSError as error:
            raise InputError(f"{python}: cannot run it ({error.strerror}); set the Local "
                             "backend's Python in Preferences > Add-ons > Dimitra") from error
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise InputError(lines[-1] if lines else f"dimitra render failed ({done.returncode})")
    return out


class DIMITRA_OT_render_comparison(bpy.types.Operator):
    """Write a video of the last take: the rig (Workbench) beside the reference picture
    animated photoreally by `dimitra render`, with the sound"""
    bl_idname = "dimitra.render_comparison"
    bl_label = "Render comparison"
    action: StringProperty(name="Action", description="the take (default: the active one)")
    filepath: StringProperty(name="Output", subtype="FILE_PATH",
                             description="the .mp4 to write (default: beside the .blend, "
                                         "named after the take)")
    python: StringProperty(name="Python", subtype="FILE_PATH",
                           description="the Python with Dimitra installed (default: the Local "
                                       "backend's)")

    def execute(self, context):
        try:
            action, result = dimitra_result(context, self.action)
            python = local_python(self.python, context)
            if not (self.filepath or bpy.data.filepath):
                raise InputError("Render comparison: give the output .mp4 (filepath), or save "
                                 "the .blend first to write it beside it")
            out = Path(bpy.path.abspath(self.filepath or
                                        f"//{bpy.path.clean_name(action.name)}_comparison.mp4"))
            render_comparison(result, out, python, context.scene)
        except (InputError, OSError, ValueError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Dimitra: comparison written to {out}")
        return {"FINISHED"}


def draw_button(panel, context) -> None:
    """Appended to the Dimitra panel: the button, under the take's other tools."""
    panel.layout.operator(DIMITRA_OT_render_comparison.bl_idname, icon="RENDER_ANIMATION")


def register() -> None:
    from .panel import DIMITRA_PT_generate

    bpy.utils.register_class(DIMITRA_OT_render_comparison)
    DIMITRA_PT_generate.append(draw_button)


def unregister() -> None:
    from .panel import DIMITRA_PT_generate

    DIMITRA_PT_generate.remove(draw_button)
    bpy.utils.unregister_class(DIMITRA_OT_render_comparison)
