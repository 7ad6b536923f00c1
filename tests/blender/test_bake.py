"""`dimitra bake` onto the sample rig: what lands in Blender, what FBX/glTF carry, bad input."""

import bpy
import numpy as np
import pytest

from dimitra.blender_addon import blender_api
from dimitra.blender_addon.bake import BakeError, BakeSettings, bake
from dimitra.retarget.key_names import ARKIT_52
from dimitra.retarget.rig import RigError
from tests.blender.conftest import mouth_opening
from tests.blender.scene_probe import bone_motion, shape_key_values

pytestmark = pytest.mark.timeout(300)


def test_sample_rig_is_a_complete_face_rig(sample_rig):
    bpy.ops.wm.open_mainfile(filepath=str(sample_rig))
    face = bpy.data.objects["sample_face"]
    assert [b.name for b in face.data.shape_keys.key_blocks[1:]] == list(ARKIT_52)
    armature = bpy.data.objects["sample_face_rig"]
    assert set(armature.data.bones.keys()) == {"neck", "head", "jaw", "eye.L", "eye.R"}
    assert bpy.context.scene.camera is not None and len(face.material_slots) == 4
    assert [p.name for p in sample_rig.parent.iterdir()] == ["sample_face.blend"]  # no leftovers


def test_bake_onto_the_sample_rig(sample_rig, speech_clip, generated_motion, tmp_path):
    out = tmp_path / "line.blend"
    result = bake(speech_clip, sample_rig, out, BakeSettings(motion=generated_motion))
    assert result.correspondence.method == "render"   # the face was found on the render
    assert result.correspondence.valid.sum() > 450
    bpy.ops.wm.open_mainfile(filepath=str(out))
    scene = bpy.context.scene
    frames = np.arange(scene.frame_start, scene.frame_end + 1)
    assert len(frames) == result.frames == round(3.5 * 30)
    values = shape_key_values(frames, ["jawOpen"])[("sample_face", "jawOpen")]
    opening = mouth_opening(generated_motion, 30.0)
    assert np.corrcoef(values, opening[:len(values)])[0, 1] > 0.7
    assert values.max() > 0.2
    strips = list(blender_api.sequences(scene))
    assert len(strips) == 1 and strips[0].frame_start == scene.frame_start
    assert strips[0].sound.filepath.endswith("speech.wav")
    head = bone_motion("sample_face_rig", ["head"], frames)["head"]
    angles = np.degrees(np.arccos(np.clip((np.trace(head, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angles.max() > 0.5     # the head moves with the generated pose


@pytest.mark.parametrize("suffix", [".fbx", ".glb"])
def test_exports_reimport_with_the_same_values(sample_rig, speech_clip, generated_motion,
                                               tmp_path, suffix):
    out = tmp_path / f"line{suffix}"
    bake(speech_clip, sample_rig, out, BakeSettings(motion=generated_motion))
    scene = bpy.context.scene
    frames = np.arange(scene.frame_start, scene.frame_end + 1, 7)
    fps = scene.render.fps
    bones = ["neck", "head", "jaw", "eye.L"]
    keys_before = shape_key_values(frames)
    bones_before = bone_motion("sample_face_rig", bones, frames)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = fps
    if suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(out), anim_offset=0.0)
    else:
        bpy.ops.import_scene.gltf(filepath=str(out))
    keys_after = shape_key_values(frames)
    armature = next(o.name for o in bpy.data.objects if o.type == "ARMATURE")
    bones_after = bone_motion(armature, bones, frames)
    assert {k for _, k in keys_after} == set(ARKIT_52)
    for (_, key), values in keys_before.items():
        after = next(v for (_, k), v in keys_after.items() if k == key)
        assert np.abs(after - values).max() < 1e-4, key
    for name in bones:
        assert np.abs(bones_after[name] - bones_before[name]).max() < 1e-4, name


def test_refuses_bad_input_and_writes_nothing(sample_rig, speech_clip, generated_motion,
                                              tmp_path):
    settings = BakeSettings(motion=generated_motion)
    existing = tmp_path / "taken.blend"
    existing.write_bytes(b"precious")
    with pytest.raises(BakeError, match="already exists"):
        bake(speech_clip, sample_rig, existing, settings)
    assert existing.read_bytes() == b"precious"
    garbage = tmp_path / "broken.blend"
    garbage.write_bytes(b"BLENDER-v999 not really")
    with pytest.raises(BakeError, match="broken.blend"):
        bake(speech_clip, garbage, tmp_path / "a.blend", settings)
    fake_fbx = tmp_path / "broken.fbx"
    fake_fbx.write_bytes(b"Kaydara FBX Binary  \x00 truncated")
    with pytest.raises(BakeError, match="broken.fbx"):
        bake(speech_clip, fake_fbx, tmp_path / "a.blend", settings)
    with pytest.raises(RigError, match="'Nope'"):
        bake(speech_clip, sample_rig, tmp_path / "a.blend",
             BakeSettings(motion=generated_motion, meshes=["Nope"]))
    with pytest.raises(BakeError, match=".obj"):
        bake(speech_clip, tmp_path / "rig.obj", tmp_path / "b.blend", settings)
    with pytest.raises(BakeError, match="no such audio"):
        bake(tmp_path / "missing.wav", sample_rig, tmp_path / "c.blend", settings)
    # A scene with a mesh but no shape keys and no bones.
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_uv_sphere_add()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "ball.blend"))
    with pytest.raises(RigError, match="no face mesh"):
        bake(speech_clip, tmp_path / "ball.blend", tmp_path / "d.blend", settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ball.blend", "broken.blend",
                                                          "broken.fbx", "taken.blend"]


def test_cli_bakes_a_manifest_and_reports_each_line(sample_rig, speech_clip, generated_motion,
                                                    tmp_path, capsys):
    from dimitra.backend.cli import main

    (tmp_path / "takes").mkdir()
    (tmp_path / "takes" / "exists.blend").write_bytes(b"x")
    manifest = tmp_path / "lines.csv"
    manifest.write_text(f"audio,out\n{speech_clip},takes/one.blend\n"
                        f"{speech_clip},takes/exists.blend\n{speech_clip},takes/two.glb\n")
    # The real model, loaded once for the lines, with the rig's render as the reference.
    code = main(["bake", "--rig", str(sample_rig), "--manifest", str(manifest)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "line 2: ok" in printed and "line 4: ok" in printed
    assert "line 3: failed" in printed and "already exists" in printed
    assert (tmp_path / "takes" / "one.blend").is_file() and (tmp_path / "takes" / "two.glb").is_file()


def test_a_face_the_detector_misses_gets_the_canonical_fit(sample_rig, speech_clip,
                                                           generated_motion, tmp_path,
                                                           monkeypatch):
    """Stylised characters: no face found on any render, the canonical face is laid on."""
    from dimitra.backend.generation import reference

    real = reference.load_reference

    def finds_no_face_on_renders(source, *args, **kwargs):
        if str(source).endswith(".png"):
            raise reference.ReferenceFaceError(f"{source}: no face found")
        return real(source, *args, **kwargs)
    monkeypatch.setattr(reference, "load_reference", finds_no_face_on_renders)
    # Generated here (not --motion): the canonical face stands in as the reference.
    result = bake(speech_clip, sample_rig, tmp_path / "stylised.blend")
    assert result.correspondence.method == "canonical_fit"
    scene = bpy.context.scene
    frames = np.arange(scene.frame_start, scene.frame_end + 1)
    values = shape_key_values(frames, ["jawOpen"])[("sample_face", "jawOpen")]
    assert values.max() > 0.15 and np.abs(np.diff(values)).mean() > 0.01   # it talks


def test_saved_correspondence_is_reused(sample_rig, speech_clip, generated_motion, tmp_path):
    path = tmp_path / "sample_face.corr.npz"
    first = bake(speech_clip, sample_rig, tmp_path / "one.blend",
                 BakeSettings(motion=generated_motion, correspondence=path))
    assert path.is_file()
    again = bake(speech_clip, sample_rig, tmp_path / "two.blend",
                 BakeSettings(motion=generated_motion, correspondence=path))
    assert np.array_equal(again.correspondence.triangles, first.correspondence.triangles)


def test_preview_video_has_picture_and_sound(sample_rig, speech_clip, generated_motion,
                                             tmp_path):
    import av

    from dimitra.blender_addon.preview import render_preview

    bake(speech_clip, sample_rig, tmp_path / "line.blend", BakeSettings(motion=generated_motion))
    scene = bpy.context.scene
    scene.frame_end = scene.frame_start + 11
    engine = scene.render.engine
    render_preview(tmp_path / "preview.mp4", size=128)
    assert scene.render.engine == engine                  # the scene's settings are back
    with av.open(str(tmp_path / "preview.mp4")) as video:
        kinds = sorted(s.type for s in video.streams)
        frames = sum(1 for _ in video.decode(video=0))
    assert kinds == ["audio", "video"] and frames == 12


@pytest.mark.parametrize("mode", ["QUATERNION", "XYZ", "ZXY", "AXIS_ANGLE"])
def test_bone_channels_in_every_rotation_mode_give_the_solved_rotation(mode):
    from mathutils import Euler, Matrix, Quaternion

    from dimitra.blender_addon.key_writer import rotation_channels
    from dimitra.retarget.rotations import axis_angle_to_matrix

    t = np.linspace(0, 6, 400)
    rotations = axis_angle_to_matrix(np.stack([np.sin(t), np.cos(t), 0.3 + 0 * t], 1),
                                     np.radians(170) * np.sin(t))       # large turns too
    prop, channels = rotation_channels(mode, rotations)
    for values, expected in zip(channels.T, rotations):
        if mode == "QUATERNION":
            matrix = Quaternion(values).to_matrix()
        elif mode == "AXIS_ANGLE":
            matrix = Matrix.Rotation(values[0], 3, values[1:])
        else:
            matrix = Euler(values, mode).to_matrix()
        assert np.allclose(np.array(matrix), expected, atol=1e-5), prop
    if mode != "AXIS_ANGLE":   # (its axis turns over wherever the rotation passes rest)
        assert np.abs(np.diff(channels, axis=1)).max() < 0.3   # no sign or 360° flips
