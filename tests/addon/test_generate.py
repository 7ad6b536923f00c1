"""Generate on the sample rig against a real backend, as a pipeline script would call it."""

import numpy as np
import pytest

from tests.addon.conftest import SPEECH_SECONDS, curve_values, scene_state

pytestmark = pytest.mark.timeout(300)
START = 12


def generate(server, audio, **settings):
    import bpy

    return bpy.ops.dimitra.generate(audio_file=str(audio), server=server, **settings)


@pytest.fixture(scope="module")
def take(sample_blend, addon, server, speech_file):
    """One Generate on the sample rig (3 s speech, 1 s silence) from frame START."""
    import bpy

    from dimitra.blender_addon import generate_job

    generate_job.RESULTS.clear()
    bpy.ops.wm.open_mainfile(filepath=str(sample_blend), load_ui=False)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 20
    bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
    assert generate(server, speech_file, start_frame=START) == {"FINISHED"}
    face, armature = bpy.data.objects["sample_face"], bpy.data.objects["sample_face_rig"]
    return {"face": face, "armature": armature, "fps": scene.render.fps,
            "action": face.data.shape_keys.animation_data.action}


def test_shape_keys_follow_the_speech(take):
    action, fps = take["action"], take["fps"]
    assert action.name == "Dimitra line_one"
    frames, jaw = curve_values(action, 'key_blocks["jawOpen"].value')
    assert frames[0] == START
    assert len(frames) == pytest.approx((SPEECH_SECONDS + 1) * fps, abs=2)
    speaking = int(SPEECH_SECONDS * fps)
    silent = slice(speaking + int(0.3 * fps), None)    # the mouth settles after the last word
    mouth = [curve_values(action, f'key_blocks["{name}"].value')[1]
             for name in ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker")]
    for name, values in zip(("jawOpen",), mouth):
        assert values.min() >= 0.0 and values.max() <= 1.0, name
    speech_motion = np.mean([v[:speaking].std() for v in mouth])
    silence_motion = np.mean([v[silent].std() for v in mouth])
    assert jaw[:speaking].max() > 0.15                 # the mouth opens while speaking
    assert speech_motion > 2 * silence_motion
    for block in take["face"].data.shape_keys.key_blocks[1:]:
        values = curve_values(action, f'key_blocks["{block.name}"].value')[1]
        assert block.slider_min - 1e-6 <= values.min() <= values.max() <= block.slider_max + 1e-6


def test_head_bone_rotates(take):
    from dimitra.blender_addon import blender_api

    armature_action = take["armature"].animation_data.action
    paths = {c.data_path for c in blender_api.action_fcurves(armature_action)}
    assert 'pose.bones["head"].rotation_quaternion' in paths
    quaternions = np.stack([curve_values(armature_action,
                                         'pose.bones["head"].rotation_quaternion', i)[1]
                            for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(quaternions, axis=1), 1.0, atol=1e-4)
    angles = 2 * np.degrees(np.arccos(np.clip(np.abs(quaternions[:, 0]), 0, 1)))
    assert 0.2 < angles.max() < 45


def test_sound_strip_sits_at_the_start_frame_and_the_range_covers_the_take(take):
    import bpy

    from dimitra.blender_addon import blender_api

    strips = list(blender_api.sequences(bpy.context.scene))
    assert [(s.name, s.type, int(s.frame_start)) for s in strips] == [
        ("Dimitra line_one", "SOUND", START)]
    frames, _ = curve_values(take["action"], 'key_blocks["jawOpen"].value')
    assert bpy.context.scene.frame_start == 1
    assert bpy.context.scene.frame_end == int(frames[-1])


def test_resolve_rescales_without_the_backend(take):
    import bpy

    from dimitra.blender_addon import generate_job

    before = curve_values(take["action"], 'key_blocks["jawOpen"].value')[1]
    result = generate_job.RESULTS[take["action"].name]
    assert bpy.ops.dimitra.resolve(strength=0.5) == {"FINISHED"}
    action = take["face"].data.shape_keys.animation_data.action
    assert action.name == "Dimitra line_one"
    assert sorted(a.name for a in bpy.data.actions) == ["Dimitra line_one"]   # replaced
    after = curve_values(action, 'key_blocks["jawOpen"].value')[1]
    assert generate_job.RESULTS[action.name].motion is result.motion   # no new generation
    moving = before > 0.05
    np.testing.assert_allclose(after[moving], 0.5 * before[moving], rtol=0.15, atol=0.02)


def test_show_landmarks_plays_the_generated_points(take):
    import bpy

    from dimitra.blender_addon import generate_job
    from dimitra.blender_addon.landmark_points import landmark_frames

    assert bpy.ops.dimitra.show_landmarks() == {"FINISHED"}
    points = landmark_frames(generate_job.RESULTS["Dimitra line_one"])   # (T, 478, 3)
    obj = bpy.data.objects["Dimitra landmarks line_one"]
    for offset in (0, 40, len(points) - 1):
        bpy.context.scene.frame_set(START + offset)
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        co = np.empty(3 * len(evaluated.vertices), dtype=np.float32)
        evaluated.vertices.foreach_get("co", co)
        np.testing.assert_allclose(co.reshape(-1, 3), points[offset], atol=1e-5)
    moved = np.linalg.norm(points[:, 13] - points[:, 14], axis=1)   # upper to lower inner lip
    assert moved.max() > 2 * moved.min()


def test_fbx_export_round_trips(take, tmp_path):
    import bpy

    scene = bpy.context.scene
    sampled = [START, START + 17, START + 45, START + 80]
    names = ("jawOpen", "mouthFunnel", "eyeBlinkLeft")

    def sample(face, armature):
        values = []
        for frame in sampled:
            scene.frame_set(frame)
            keys = face.data.shape_keys.key_blocks
            values.append([keys[n].value for n in names]
                          + list(np.array(armature.pose.bones["head"].matrix).ravel()))
        return np.array(values)

    expected = sample(take["face"], take["armature"])
    out = tmp_path / "take.fbx"
    assert bpy.ops.dimitra.export_fbx(filepath=str(out)) == {"FINISHED"}
    assert out.is_file() and not list(tmp_path.glob("*.tmp*"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=str(out), anim_offset=0.0)
    scene = bpy.context.scene
    face = next(o for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys)
    armature = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    np.testing.assert_allclose(sample(face, armature), expected, atol=2e-3)


def test_artist_animation_is_kept_on_the_nla(rig, server, speech_file):
    import bpy

    keys = rig["face"].data.shape_keys
    keys.key_blocks["jawOpen"].value = 0.7
    keys.key_blocks["jawOpen"].keyframe_insert("value", frame=5)
    artist = keys.animation_data.action
    artist.name = "artist lip sync"
    before = curve_values(artist, 'key_blocks["jawOpen"].value')
    assert generate(server, speech_file, start_frame=1) == {"FINISHED"}
    assert keys.animation_data.action.name == "Dimitra line_one"
    tracks = keys.animation_data.nla_tracks
    assert [s.action.name for t in tracks for s in t.strips] == ["artist lip sync"]
    np.testing.assert_array_equal(curve_values(bpy.data.actions["artist lip sync"],
                                               'key_blocks["jawOpen"].value')[1], before[1])


def test_odd_frame_rate_and_a_mesh_without_shape_keys(rig, server, speech_file):
    import bpy

    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.001       # 23.976 fps
    rig["face"].shape_key_clear()                              # the head bones carry it all
    assert generate(server, speech_file, start_frame=1) == {"FINISHED"}
    assert rig["face"].data.shape_keys is None
    action = rig["armature"].animation_data.action
    frames, _ = curve_values(action, 'pose.bones["head"].rotation_quaternion', 0)
    assert len(frames) == pytest.approx((SPEECH_SECONDS + 1) * 24 / 1.001, abs=1.5)
    assert frames[0] == 1 and np.all(np.diff(frames) == 1)
    jaw_w = curve_values(action, 'pose.bones["jaw"].rotation_quaternion', 0)[1]
    jaw_degrees = 2 * np.degrees(np.arccos(np.clip(np.abs(jaw_w), 0, 1)))
    assert jaw_degrees.max() > 3                               # the jaw bone speaks instead
    assert scene_state()["strips"] == [("Dimitra line_one", 1)]
