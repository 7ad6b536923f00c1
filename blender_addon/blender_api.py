"""The one place for differences between Blender versions (4.2 LTS, 4.5 LTS, 5.0).

- 4.4 brought slotted actions: one Action animates several datablocks through slots, and its
  F-curves live in channelbags (layer -> strip -> channelbag per slot). 5.0 removed
  `Action.fcurves`; before 4.4 there are no slots and each datablock needs its own Action.
- 5.0 renamed the sequencer's `sequences` to `strips`.
- EEVEE's engine id is `BLENDER_EEVEE_NEXT` on 4.2–4.5 and `BLENDER_EEVEE` on 5.0.
- 5.0 picks video output through `ImageFormatSettings.media_type` before `file_format`.
Everything here is a plain function, usable from operators, the UI and headless bakes alike.
"""

import bpy
import numpy as np

VERSION = bpy.app.version
SLOTTED_ACTIONS = VERSION >= (4, 4, 0)
LINEAR = 1   # index of 'LINEAR' in Keyframe.interpolation's enum (CONSTANT, LINEAR, BEZIER)


def eevee_engine() -> str:
    return "BLENDER_EEVEE" if VERSION >= (5, 0, 0) else "BLENDER_EEVEE_NEXT"


def new_action_for(id_data, name: str, action=None):
    """Give `id_data` a new Action to key into, never touching the animation it had.

    An Action it already plays is pushed onto a new NLA track first (kept and still evaluated
    underneath; the artist can mute it). With slotted actions (4.4+) pass `action` to share one
    Action between several datablocks (each gets its own slot), which glTF and FBX export keep
    together. Returns (action, slot); slot is None before 4.4.
    """
    anim = id_data.animation_data or id_data.animation_data_create()
    if anim.action is not None:
        push_to_nla(id_data)
    if action is None or not SLOTTED_ACTIONS:
        action = bpy.data.actions.new(name)
    slot = None
    if SLOTTED_ACTIONS:
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        anim.action = action
        anim.action_slot = slot
    else:
        anim.action = action
    return action, slot


def push_to_nla(id_data) -> None:
    """Move the Action `id_data` plays onto a new NLA track at its own frames (nothing lost)."""
    anim = id_data.animation_data
    old = anim.action
    track = anim.nla_tracks.new()
    track.name = f"{old.name} (before Dimitra)"
    start = int(old.frame_range[0])
    strip = track.strips.new(old.name, start, old)
    if SLOTTED_ACTIONS and anim.action_slot is not None:
        strip.action_slot = anim.action_slot
    anim.action = None


def new_fcurve(action, slot, data_path: str, index: int = 0, group: str | None = None):
    """An F-curve for `data_path[index]` in the right place for this Blender version."""
    if SLOTTED_ACTIONS:
        layer = action.layers[0] if action.layers else action.layers.new("Layer")
        strip = layer.strips[0] if layer.strips else layer.strips.new(type="KEYFRAME")
        channelbag = strip.channelbag(slot, ensure=True)
        fcurve = channelbag.fcurves.new(data_path, index=index)
        if group:
            groups = channelbag.groups
            fcurve.group = groups.get(group) or groups.new(group)
        return fcurve
    return action.fcurves.new(data_path, index=index, action_group=group or "")


def action_fcurves(action, slot=None) -> list:
    """All F-curves of `action` (for `slot` when slotted)."""
    if SLOTTED_ACTIONS:
        curves = []
        for layer in action.layers:
            for strip in layer.strips:
                for bag in strip.channelbags:
                    if slot is None or bag.slot == slot:
                        curves.extend(bag.fcurves)
        return curves
    return list(action.fcurves)


def write_keys(fcurve, frames: np.ndarray, values: np.ndarray) -> None:
    """Key (N,) values at (N,) frames in one go (`foreach_set`), linear between keys."""
    count = len(frames)
    points = fcurve.keyframe_points
    points.add(count)
    co = np.empty(2 * count, dtype=np.float32)
    co[0::2], co[1::2] = frames, values
    points.foreach_set("co", co)
    points.foreach_set("interpolation", np.full(count, LINEAR, dtype=np.int32))
    fcurve.update()


def sequences(scene):
    """The scene's sequencer strips collection (created if needed)."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    return editor.strips if VERSION >= (5, 0, 0) else editor.sequences


def add_sound_strip(scene, path: str, frame: int, name: str = "Dimitra audio"):
    """The sound at `path` in the sequencer, starting at `frame`, on the first free channel."""
    strips = sequences(scene)
    used = {s.channel for s in strips}
    channel = next(c for c in range(1, 129) if c not in used)
    return strips.new_sound(name, filepath=str(path), channel=channel, frame_start=int(frame))


def set_video_output(scene) -> None:
    """Render animations to an H.264 MP4 with the sequencer's sound as AAC."""
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    ffmpeg = scene.render.ffmpeg
    ffmpeg.format, ffmpeg.codec, ffmpeg.audio_codec = "MPEG4", "H264", "AAC"
    ffmpeg.constant_rate_factor = "MEDIUM"


def remember_animation(id_data) -> tuple:
    """What `new_action_for` may change on `id_data`, for `restore_animation`."""
    anim = id_data.animation_data
    if anim is None:
        return (False, None, None, 0)
    slot = anim.action_slot if SLOTTED_ACTIONS else None
    return (True, anim.action, slot, len(anim.nla_tracks))


def restore_animation(id_data, remembered: tuple) -> None:
    """Undo `new_action_for`: the Action (and slot) it played, no NLA tracks added since."""
    had_data, action, slot, track_count = remembered
    if not had_data:
        id_data.animation_data_clear()
        return
    anim = id_data.animation_data
    while len(anim.nla_tracks) > track_count:
        anim.nla_tracks.remove(anim.nla_tracks[-1])
    anim.action = action
    if SLOTTED_ACTIONS and action is not None and slot is not None:
        anim.action_slot = slot
