"""Blender's conventions: greyed buttons that say why, online access before a Remote connect,
Generate as one undo step, File > Export, Re-solve after the .blend is saved and reopened, the
CLI's per-region strengths in the panel.

Undo works in bpy as a module (background mode): `ed.undo` walks the same memfile steps
Ctrl+Z does. What differs from the UI is where the step is pushed: in the UI the job pushes it
on the tick that writes its last key (generate_job), in background mode the operator pushes it
when the job returns; both after the keys are complete.
"""

import numpy as np
import pytest

from tests.addon.conftest import curve_values, scene_state

pytestmark = pytest.mark.timeout(300)
JAW = 'key_blocks["jawOpen"].value'
BLINK = 'key_blocks["eyeBlinkLeft"].value'


def in_the_viewport(call):
    """`call()` with the context of the 3D Viewport's sidebar, where the panel's buttons are."""
    import bpy

    screen = bpy.context.window.screen
    area = next(a for a in screen.areas if a.type == "VIEW_3D")
    with bpy.context.temp_override(area=area):
        return call()


def greyed_out(operator, reason: str, viewport: bool = False) -> None:
    """The button's poll fails; pressed anyway, it says `reason` (its tooltip's text)."""
    def check():
        assert not operator.poll()
        with pytest.raises(RuntimeError, match=reason):
            operator()
    in_the_viewport(check) if viewport else check()


def test_buttons_that_cannot_run_are_greyed_out_with_the_reason(rig, speech_file):
    import bpy

    ops = bpy.ops.dimitra
    settings = bpy.context.scene.dimitra
    # The sample rig is active but the panel has no audio yet.
    greyed_out(ops.generate, "No audio: pick a sound strip", viewport=True)
    settings.audio_source, settings.audio_file = "FILE", str(speech_file)
    assert in_the_viewport(ops.generate.poll)
    bpy.context.view_layer.objects.active = None
    greyed_out(ops.generate, "No face mesh: pick the face mesh", viewport=True)
    # A script names its inputs as arguments: the panel's state does not grey it out there.
    assert ops.generate.poll()

    greyed_out(ops.resolve, "No Dimitra take: Generate first")
    greyed_out(ops.show_landmarks, "No Dimitra take: Generate first")
    greyed_out(ops.cancel, "No Dimitra job is running")
    assert ops.export_fbx.poll()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    greyed_out(ops.export_fbx, "Nothing to export: the scene has no armature and no mesh "
                               "with shape keys")
    mesh = bpy.data.meshes.new("plain")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    plain = bpy.data.objects.new("plain", mesh)
    bpy.context.scene.collection.objects.link(plain)
    bpy.context.view_layer.objects.active = plain
    greyed_out(ops.generate, "'plain' has no shape keys and no armature with head or jaw "
                             "bones: nothing to animate", viewport=True)


def test_while_a_job_runs_only_cancel_is_available(rig, speech_file):
    import bpy

    from dimitra.blender_addon import generate_job
    from dimitra.blender_addon.generate_job import Backend, GenerateJob
    from dimitra.blender_addon.scene_inputs import GenerateSettings, audio_input, face_inputs

    settings = GenerateSettings(audio_file=str(speech_file))
    job = GenerateJob(settings, face_inputs(settings, bpy.context),
                      audio_input(settings, bpy.context.scene),
                      Backend(address="tcp://127.0.0.1:9"), bpy.context.scene)
    generate_job.start(job, use_timer=False)      # started, not yet ticked
    ops = bpy.ops.dimitra
    greyed_out(ops.generate, "A Dimitra job is running: wait for it or cancel it")
    greyed_out(ops.resolve, "A Dimitra job is running")
    assert ops.cancel.poll()
    assert ops.cancel() == {"FINISHED"}
    job.tick()
    assert job.state == "cancelled"
    greyed_out(ops.cancel, "No Dimitra job is running")


def test_remote_server_is_refused_while_online_access_is_off(rig, speech_file):
    import bpy

    system = bpy.context.preferences.system
    remote = "tcp://192.0.2.10:5555"              # TEST-NET: never a real machine
    before = scene_state()
    assert not bpy.app.online_access              # bpy's default, as Blender's first start
    with pytest.raises(RuntimeError, match=r"Remote server tcp://192\.0\.2\.10:5555: Blender's "
                       r"online access is off.*Preferences > System > Network > Allow Online "
                       "Access"):
        bpy.ops.dimitra.generate(audio_file=str(speech_file), server=remote)
    assert scene_state() == before
    system.use_online_access = True
    try:
        # Allowed, it is tried: nothing answers there, which is a backend error, not a refusal.
        with pytest.raises(RuntimeError, match="no Dimitra server answered at tcp://192.0.2.10"):
            bpy.ops.dimitra.generate(audio_file=str(speech_file), server=remote)
    finally:
        system.use_online_access = False
    assert scene_state() == before


@pytest.mark.parametrize(("address", "network"), [
    ("tcp://gpu-box:5555", True), ("tcp://10.0.0.7:5555", True),
    ("tcp://127.0.0.1:5599", False), ("tcp://localhost:5555", False),
    ("tcp://[::1]:5555", False), ("ipc:///tmp/dimitra.sock", False)])
def test_only_addresses_off_this_machine_need_online_access(addon, address, network):
    from dimitra.blender_addon.generate_job import Backend
    from dimitra.blender_addon.operators import refuse_offline
    from dimitra.blender_addon.scene_inputs import InputError

    if network:
        with pytest.raises(InputError, match="online access is off"):
            refuse_offline(Backend(address=address))
    else:
        refuse_offline(Backend(address=address))
    refuse_offline(Backend(builtin=True))            # started by the add-on, on this machine


def test_generate_is_one_undo_step(rig, server, speech_file):
    import bpy

    keys = rig["face"].data.shape_keys
    keys.key_blocks["jawOpen"].value = 0.7
    keys.key_blocks["jawOpen"].keyframe_insert("value", frame=5)
    keys.animation_data.action.name = "artist lip sync"
    bpy.ops.ed.undo_push(message="Insert keyframe")     # as the UI does after an edit
    before = scene_state()
    assert bpy.ops.dimitra.generate(audio_file=str(speech_file), server=server,
                                    start_frame=1) == {"FINISHED"}
    generated = scene_state()
    assert "Dimitra line_one" in generated["actions"]
    assert generated["playing"]["Key"][0] == "Dimitra line_one"       # artist's on the NLA

    assert bpy.ops.ed.undo() == {"FINISHED"}                         # Ctrl+Z, once
    assert scene_state() == before
    keys = bpy.data.objects["sample_face"].data.shape_keys
    assert keys.animation_data.action.name == "artist lip sync"
    assert not keys.animation_data.nla_tracks
    assert bpy.ops.ed.redo() == {"FINISHED"}                         # Ctrl+Shift+Z
    assert scene_state() == generated


def test_resolve_after_the_file_is_saved_and_reopened(rig, server, speech_file, tmp_path):
    import bpy

    from dimitra.blender_addon import generate_job

    assert bpy.ops.dimitra.generate(audio_file=str(speech_file), server=server,
                                    start_frame=1) == {"FINISHED"}
    action = rig["face"].data.shape_keys.animation_data.action
    jaw = curve_values(action, JAW)[1]
    blink = curve_values(action, BLINK)[1]
    saved = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    bpy.ops.wm.save_mainfile()               # saved again: the stored take is written over

    bpy.ops.wm.read_factory_settings(use_empty=True)   # another file in between
    bpy.ops.wm.open_mainfile(filepath=str(saved), load_ui=False)
    assert generate_job.RESULTS == {}                  # nothing carried over in memory
    bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
    assert bpy.ops.dimitra.resolve.poll()
    assert bpy.ops.dimitra.resolve(mouth=0.5) == {"FINISHED"}
    keys = bpy.data.objects["sample_face"].data.shape_keys
    action = keys.animation_data.action
    assert sorted(a.name for a in bpy.data.actions) == ["Dimitra line_one"]
    moving = jaw > 0.05
    np.testing.assert_allclose(curve_values(action, JAW)[1][moving], 0.5 * jaw[moving],
                               rtol=0.15, atol=0.02)
    np.testing.assert_allclose(curve_values(action, BLINK)[1], blink, atol=0.02)  # eyes kept
    # The whole face, then the head alone, from the same stored take.
    assert bpy.ops.dimitra.resolve(mouth=1.0, strength=0.0, head=0.0) == {"FINISHED"}
    action = keys.animation_data.action
    assert np.abs(curve_values(action, JAW)[1]).max() < 0.02
    head_w = curve_values(bpy.data.objects["sample_face_rig"].animation_data.action,
                          'pose.bones["head"].rotation_quaternion', 0)[1]
    np.testing.assert_allclose(np.abs(head_w), 1.0, atol=1e-4)
    assert bpy.ops.dimitra.show_landmarks() == {"FINISHED"}

    # Reopened again, the face edited before Re-solve: the stored correspondence no longer
    # fits that surface; nothing changes.
    import bmesh

    bpy.ops.wm.open_mainfile(filepath=str(saved), load_ui=False)
    face = bpy.data.objects["sample_face"]
    edit = bmesh.new()
    edit.from_mesh(face.data)
    edit.verts.new((0.0, 0.0, 0.0))
    edit.to_mesh(face.data)
    edit.free()
    before = scene_state()
    with pytest.raises(RuntimeError, match="correspondence was made for a face surface of"):
        bpy.ops.dimitra.resolve(mouth=0.7)
    assert scene_state() == before

    # A damaged stored take: one line saying so, nothing changed.
    bpy.ops.wm.open_mainfile(filepath=str(saved), load_ui=False)
    action = bpy.data.actions["Dimitra line_one"]
    del action["_dimitra_motion"]
    action["_dimitra_motion"] = b"not a motion file"
    before = scene_state()
    with pytest.raises(RuntimeError, match="Action 'Dimitra line_one': its stored take is "
                                           "unreadable .*Generate again"):
        bpy.ops.dimitra.resolve(mouth=0.7)
    assert scene_state() == before


def test_an_action_without_its_take_greys_out_resolve(rig):
    import bpy

    action = bpy.data.actions.new("Dimitra old line")   # made before takes were kept
    action["dimitra"] = True
    greyed_out(bpy.ops.dimitra.resolve, "No Dimitra take: Generate first")


def test_fbx_export_is_in_file_export(addon):
    import bpy

    from dimitra.blender_addon import operators

    assert operators.export_menu_entry in bpy.types.TOPBAR_MT_file_export._dyn_ui_initialize()


def test_panel_offers_the_option_table_and_the_cli_region_strengths(addon):
    import bpy

    from dimitra.backend.protocol.options import BY_NAME

    settings = bpy.context.scene.dimitra
    for name in ("expressiveness", "head_motion"):
        setattr(settings, name, 99.0)             # clamped to the table's range
        assert getattr(settings, name) == BY_NAME[name].high
    assert settings.bl_rna.properties["seed"].default == BY_NAME["seed"].default
    operator = bpy.ops.dimitra.resolve.get_rna_type().properties
    for region in ("mouth", "eyes", "gaze", "brows", "head"):   # dimitra bake --mouth ...
        assert settings.bl_rna.properties[region].default == 1.0
        assert region in operator
