"""The panel's settings, stored on the scene, and the job's progress on the window manager.

The generation and solve settings are declared once (`tuning_properties`) and given both to
the scene's settings and to the `dimitra.generate` operator, so a script can pass any of them.
The generation options come from the protocol's option table (backend/protocol/options.py:
range, default and help defined there once); the per-region strengths are those of
`dimitra bake` (--mouth, --eyes, --gaze, --brows, --head).
"""

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from ..backend.protocol.options import BY_NAME, Option
from ..retarget.key_names import REGIONS
from .scene_inputs import GenerateSettings

# The rows of the option table the panel offers (what GenerateSettings sends to `animate`).
PANEL_OPTIONS = ("expressiveness", "head_motion", "blink", "seed")
# Re-solve changes these without the backend; each face region also scales by `strength`.
STRENGTH_REGIONS = (*REGIONS, "head")
RESOLVE_SETTINGS = ("strength", *STRENGTH_REGIONS, "smoothing")


def option_property(option: Option):
    """A Blender property for one row of the option table: its default, range and help."""
    label = option.name.replace("_", " ").capitalize()
    description = option.help[:1].upper() + option.help[1:]
    if option.type is bool:
        if option.default:   # the table's help describes the CLI's --no-NAME flag
            description = f"Off: {option.help}"
        return BoolProperty(name=label, default=option.default, description=description)
    bounds = {bound: value for bound, value in (("min", option.low), ("max", option.high))
              if value is not None}
    if option.type is int:
        return IntProperty(name=label, default=option.default, description=description,
                           **{k: int(v) for k, v in bounds.items()})
    return FloatProperty(name=label, default=option.default, description=description, **bounds)


def strength_property(region: str):
    if region == "head":
        description = ("Scales the head and neck bones' rotation (Re-solve changes it; Head "
                       "motion changes the generated motion itself)")
    else:
        description = (f"Strength of the {region} (their shape keys and bones), times "
                       "Strength (Re-solve changes it)")
    return FloatProperty(name=region.capitalize(), default=1.0, min=0.0, soft_max=3.0,
                         description=description)


def tuning_properties() -> dict:
    return {
        **{name: option_property(BY_NAME[name]) for name in PANEL_OPTIONS},
        "strength": FloatProperty(
            name="Strength", default=1.0, min=0.0, max=3.0,
            description="Scales the face's shape keys, jaw and eyes (Re-solve changes it "
                        "without calling the backend)"),
        **{region: strength_property(region) for region in STRENGTH_REGIONS},
        "smoothing": FloatProperty(
            name="Smoothing", default=0.03, min=0.0, max=0.5, unit="TIME_ABSOLUTE",
            description="Seconds of smoothing over time (Re-solve changes it)"),
        "keys": EnumProperty(
            name="Shape keys", default="auto",
            description="Which key set a face with two (ARKit and visemes) is animated with; "
                        "the other stays at 0",
            items=[("auto", "Auto", "ARKit when the face has the 52 ARKit keys, else "
                                    "visemes, else every key"),
                   ("arkit", "ARKit", "The ARKit keys (the jaw opens through jawOpen); "
                                      "visemes stay at 0"),
                   ("visemes", "Visemes", "The viseme keys for the mouth; ARKit mouth keys "
                                          "stay at 0"),
                   ("all", "All", "Every key (two sets may fight over the mouth)")]),
    }


def _is_mesh(self, obj):
    return obj.type == "MESH"


def _is_armature(self, obj):
    return obj.type == "ARMATURE"


class DimitraSceneSettings(bpy.types.PropertyGroup):
    __annotations__ = {
        "mesh": PointerProperty(name="Face", type=bpy.types.Object, poll=_is_mesh,
                                description="The face mesh (default: the active object)"),
        "armature": PointerProperty(
            name="Armature", type=bpy.types.Object, poll=_is_armature,
            description="Head/jaw/eye bones (default: the armature deforming the face)"),
        "audio_source": EnumProperty(
            name="Audio", default="STRIP",
            items=[("STRIP", "Strip", "A sound strip of the sequencer"),
                   ("FILE", "File", "An audio file; a sound strip is added at the start frame")]),
        "audio_strip": StringProperty(name="Sound strip"),
        "audio_file": StringProperty(name="Audio file", subtype="FILE_PATH"),
        "use_strip_start": BoolProperty(
            name="Start at the strip", default=True,
            description="Key from the strip's start, so the animation plays with the sound"),
        "start_frame": IntProperty(name="Start frame", default=1),
        **tuning_properties(),
    }


def settings_from_scene(scene) -> GenerateSettings:
    s = scene.dimitra
    use_strip = s.audio_source == "STRIP"
    start = None if use_strip and s.use_strip_start else s.start_frame
    return GenerateSettings(
        mesh=s.mesh.name if s.mesh else "", armature=s.armature.name if s.armature else "",
        audio_strip=s.audio_strip if use_strip else "",
        audio_file=s.audio_file if not use_strip else "", start_frame=start,
        **{name: getattr(s, name) for name in tuning_properties()})


CLASSES = (DimitraSceneSettings,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.dimitra = PointerProperty(type=DimitraSceneSettings)
    bpy.types.WindowManager.dimitra_stage = StringProperty(name="Dimitra stage")
    bpy.types.WindowManager.dimitra_progress = FloatProperty(
        name="Dimitra progress", min=0.0, max=1.0, subtype="FACTOR")


def unregister() -> None:
    del bpy.types.WindowManager.dimitra_progress
    del bpy.types.WindowManager.dimitra_stage
    del bpy.types.Scene.dimitra
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
