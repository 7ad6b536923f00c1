"""Real rigs are messy: each bakes without manual steps and its mouth follows the speech."""

import bpy
import numpy as np
import pytest

from dimitra.blender_addon.bake import BakeSettings, bake
from tests.blender.conftest import mouth_opening
from tests.blender.messy_rigs import MIXAMO_BONES, build_messy_rig, jaw_opening
from tests.blender.scene_probe import bone_motion, shape_key_values, vertex_positions

pytestmark = pytest.mark.timeout(300)

RIGS = {
    "prefixed keys, 10x scale": {"style": "prefixed", "scale": 10.0},
    "suffixed keys, 0.01x object scale, subdivided": {"style": "suffixed", "object_scale": 0.01,
                                                          "subdivisions": 1},
    "visemes, facing +X": {"style": "visemes", "facing_x": True},
    "bare visemes and keys that move nothing": {"style": "bare_visemes", "idle_keys": True},
    "AA_VI visemes from FBX": {"style": "vi_visemes", "suffix": ".fbx"},
    "VRoid from glTF": {"style": "vroid", "suffix": ".glb"},
}


def bake_rig(tmp_path, generated_motion, speech_clip, suffix=".blend", **options):
    rig = build_messy_rig(tmp_path / f"rig{suffix}", **options)
    out = tmp_path / "baked.blend"
    result = bake(speech_clip, rig, out, BakeSettings(motion=generated_motion))
    bpy.ops.wm.open_mainfile(filepath=str(out))
    scene = bpy.context.scene
    return result, np.arange(scene.frame_start, scene.frame_end + 1)


def follows(values: np.ndarray, opening: np.ndarray) -> float:
    return float(np.corrcoef(values, opening[:len(values)])[0, 1])


@pytest.mark.parametrize("name", list(RIGS))
def test_mouth_key_follows_the_generated_mouth(name, tmp_path, generated_motion, speech_clip):
    options = dict(RIGS[name])
    result, frames = bake_rig(tmp_path, generated_motion, speech_clip, **options)
    assert len(frames) == round(3.5 * 24)            # the rigs run at 24 fps
    opening = mouth_opening(generated_motion, 24.0)
    # What a viewer sees: the rig's own inner lips (where the bake put landmarks 13 and 14)
    # part with the generated ones.
    assert follows(lip_gap(result.correspondence, frames), opening) > 0.7, result.report
    values = {key: v for (obj, key), v in shape_key_values(frames).items() if obj == "Head"}
    mouth = jaw_opening(options["style"], values)
    assert follows(mouth, opening) > 0.5 and mouth.max() > 0.15
    if options.get("idle_keys"):
        idle = shape_key_values(frames, ["Key 7", "back_of_head"])
        assert all(np.all(v == 0) for v in idle.values())


def test_keys_spread_over_several_meshes_all_move(tmp_path, generated_motion, speech_clip):
    _, frames = bake_rig(tmp_path, generated_motion, speech_clip, style="arkit", split=True)
    values = shape_key_values(frames, ["jawOpen", "eyeBlinkLeft"])
    assert np.allclose(values[("Teeth", "jawOpen")], values[("Head", "jawOpen")])
    assert np.allclose(values[("Lashes", "eyeBlinkLeft")], values[("Head", "eyeBlinkLeft")])
    assert values[("Teeth", "jawOpen")].max() > 0.15


def test_existing_animation_is_kept(tmp_path, generated_motion, speech_clip):
    build_messy_rig(tmp_path / "rig.blend", existing_animation=True)
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "rig.blend"))
    before = {a.name: _keys_of(a) for a in bpy.data.actions}
    assert len(before) >= 2
    bake(speech_clip, tmp_path / "rig.blend", tmp_path / "baked.blend",
         BakeSettings(motion=generated_motion))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "baked.blend"))
    for name, keys in before.items():
        assert _keys_of(bpy.data.actions[name]) == keys, name
    head_keys = bpy.data.objects["Head"].data.shape_keys
    armature = bpy.data.objects["Armature"]
    for owner in (head_keys, armature):
        tracks = owner.animation_data.nla_tracks
        assert any(s.action.name in before for t in tracks for s in t.strips)
        assert owner.animation_data.action.name not in before   # the bake's own Action
    scene = bpy.context.scene
    frames = np.arange(scene.frame_start, scene.frame_end + 1)
    mouth = shape_key_values(frames, ["jawOpen"])[("Head", "jawOpen")]
    assert follows(mouth, mouth_opening(generated_motion, 24.0)) > 0.6


def test_face_driven_by_bones_only_opens_its_jaw(tmp_path, generated_motion, speech_clip):
    """No shape keys; the jaw bone opens about its local Z (rolled a quarter turn)."""
    result, frames = bake_rig(tmp_path, generated_motion, speech_clip, bones_only=True,
                              jaw_about_z=True)
    assert result.shape_keys == 0 and result.bones == 5
    jaw = bone_motion("Armature", [MIXAMO_BONES["jaw"]], frames)[MIXAMO_BONES["jaw"]]
    head = bone_motion("Armature", [MIXAMO_BONES["head"]], frames)[MIXAMO_BONES["head"]]
    relative = np.swapaxes(head, 1, 2) @ jaw          # the jaw's own turn, head motion removed
    angle = np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1))
    opening = mouth_opening(generated_motion, 24.0)
    assert follows(angle, opening) > 0.6
    # The chin drops away from the nose (not toward it): the hinge's sense was found, not
    # assumed from the bone's axes. Distances ignore the head's own turn.
    def chin_to_nose(frame):
        points = vertex_positions("Head", int(frame))
        return np.linalg.norm(points[152] - points[1])
    closed, widest = frames[np.argmin(angle)], frames[np.argmax(angle)]
    assert chin_to_nose(widest) > chin_to_nose(closed) + 0.003


def test_jaw_bone_and_jaw_key_do_not_open_the_mouth_twice(tmp_path, generated_motion,
                                                          speech_clip):
    """The jaw bone deforms the lower face and a jawOpen key exists too: the bone takes its
    share of the opening and the keys the rest, so the lips part as far as on the same rig
    whose jaw bone deforms nothing."""
    gaps = []
    for jaw_deforms in (False, True):
        folder = tmp_path / str(jaw_deforms)
        folder.mkdir()
        result, frames = bake_rig(folder, generated_motion, speech_clip, style="arkit",
                                  jaw_deforms=jaw_deforms)
        gaps.append(lip_gap(result.correspondence, frames))
        assert follows(gaps[-1], mouth_opening(generated_motion, 24.0)) > 0.7
    assert 0.8 < np.ptp(gaps[1]) / np.ptp(gaps[0]) < 1.25
    assert result.report["jaw_angle_max_deg"] > 2


def lip_gap(correspondence, frames) -> np.ndarray:
    """(F,) distance of the rig's inner lip middles as evaluated at `frames`."""
    from dimitra.blender_addon.rig_reader import read_rig

    surface = read_rig([bpy.data.objects["Head"]])
    gaps = []
    for frame in frames:
        points = correspondence.points(surface, vertex_positions("Head", int(frame)))
        gaps.append(np.linalg.norm(points[13] - points[14]))
    return np.array(gaps)


def _keys_of(action) -> list:
    from dimitra.blender_addon.blender_api import action_fcurves

    return sorted((f.data_path, f.array_index, tuple(tuple(k.co) for k in f.keyframe_points))
                  for f in action_fcurves(action))
