"""Bakes on rigs with two key sets (ARKit and visemes), and the baked mouth's amplitude.

The mouth opening is measured on the baked mesh itself: the evaluated vertices (keys, bones,
modifiers) at the landmarks' correspondence, inner-lip points 13 and 14. That is where the
solve puts the lips, free of a face tracker's own error on a flat-shaded render (rendering
and re-tracking each frame would measure MediaPipe on Workbench pictures as much as the
bake). Both openings are in face sizes: the motion's canonical units, and on the rig the
scale of the similarity that lays the motion's neutral face onto the correspondence's stable
points (eyes, nose, forehead: the solve's own; a single eye-corner pair of ray hits reads the
render correspondence's faces 7-11% wider).
"""

import bpy
import numpy as np
import pytest

from dimitra.blender_addon.bake import BakeSettings, bake
from dimitra.blender_addon.rig_reader import read_rig
from dimitra.retarget.face.measures import inner_lip_gap
from dimitra.retarget.key_names import ARKIT_52, VISEMES
from dimitra.retarget.motion_file import load_motion, resample_motion
from dimitra.retarget.solve import SolveOptions, canonical_to_scene
from tests.blender.messy_rigs import build_messy_rig
from tests.blender.scene_probe import shape_key_values, vertex_positions

pytestmark = pytest.mark.timeout(300)
ARKIT_MOUTH = [n for n in ARKIT_52 if n.startswith(("jaw", "mouth")) or n == "cheekPuff"]


def bake_two_sets(tmp_path, motion, speech, keys="auto"):
    rig = build_messy_rig(tmp_path / "avatar.blend", style="two_sets")
    result = bake(speech, rig, tmp_path / f"baked_{keys}.blend",
                  BakeSettings(motion=motion, solve=SolveOptions(keys=keys)))
    bpy.ops.wm.open_mainfile(filepath=str(result.out))
    scene = bpy.context.scene
    return result, np.arange(scene.frame_start, scene.frame_end + 1)


def opening_amplitude(correspondence, mesh: str, frames, motion_path, fps: float):
    """(r, amplitude ratio): the baked inner-lip gap against the motion file's, in face sizes;
    amplitude is the standard deviation over the line."""
    surface = read_rig([bpy.data.objects[mesh]])
    motion = resample_motion(load_motion(motion_path), fps)
    neutral = motion.extras["neutral"].astype(float)
    face_size = canonical_to_scene(neutral, correspondence.points(surface),
                                   correspondence.valid).scale
    baked = []
    for frame in frames:
        points = correspondence.points(surface, vertex_positions(mesh, int(frame)))
        baked.append(np.linalg.norm(points[13] - points[14]) / face_size)
    baked = np.array(baked)
    wanted = inner_lip_gap(motion.extras["canonical"].astype(float))[:len(baked)]
    return float(np.corrcoef(baked, wanted)[0, 1]), float(baked.std() / wanted.std())


def test_auto_bakes_the_arkit_set_of_a_two_set_rig(tmp_path, generated_motion, speech_clip):
    """Ready Player Me-like: jawOpen carries the opening, the visemes stay at 0, and the lips
    part as wide as the motion's."""
    result, frames = bake_two_sets(tmp_path, generated_motion, speech_clip)
    assert result.report["key_set"] == "arkit"
    values = {k: v for (obj, k), v in shape_key_values(frames).items() if obj == "Head"}
    assert all(np.all(values[name] == 0) for name in VISEMES)
    opening = resample_motion(load_motion(generated_motion), 24.0)
    wanted = inner_lip_gap(opening.extras["canonical"].astype(float))[:len(frames)]
    assert np.corrcoef(values["jawOpen"], wanted)[0, 1] > 0.7 and values["jawOpen"].max() > 0.2
    r, amplitude = opening_amplitude(result.correspondence, "Head", frames, generated_motion, 24.0)
    assert r > 0.9 and 0.8 < amplitude < 1.2, (r, amplitude)


def test_visemes_on_request_leave_the_arkit_mouth_at_rest(tmp_path, generated_motion,
                                                          speech_clip):
    result, frames = bake_two_sets(tmp_path, generated_motion, speech_clip, keys="visemes")
    assert result.report["key_set"] == "visemes"
    values = {k: v for (obj, k), v in shape_key_values(frames).items() if obj == "Head"}
    assert all(np.all(values[name] == 0) for name in ARKIT_MOUTH)
    assert max(values[name].max() for name in VISEMES) > 0.2
    assert max(values["eyeBlinkLeft"].max(), values["eyeBlinkRight"].max()) > 0.2   # blinks
    r, _ = opening_amplitude(result.correspondence, "Head", frames, generated_motion, 24.0)
    assert r > 0.8


def test_the_sample_rig_opens_as_wide_as_the_motion(sample_rig, generated_motion, speech_clip,
                                                    tmp_path):
    result = bake(speech_clip, sample_rig, tmp_path / "line.blend",
                  BakeSettings(motion=generated_motion))
    bpy.ops.wm.open_mainfile(filepath=str(result.out))
    scene = bpy.context.scene
    frames = np.arange(scene.frame_start, scene.frame_end + 1)
    r, amplitude = opening_amplitude(result.correspondence, "sample_face", frames,
                                     generated_motion, 30.0)
    assert r > 0.9 and 0.8 < amplitude < 1.2, (r, amplitude)


def test_cli_keys_flag_and_a_set_the_rig_lacks(tmp_path, generated_motion, speech_clip, capsys):
    from dimitra.backend.cli import main

    two_sets = build_messy_rig(tmp_path / "avatar.blend", style="two_sets")
    out = tmp_path / "visemes.blend"
    assert main(["bake", str(speech_clip), "--rig", str(two_sets), "--out", str(out),
                 "--motion", str(generated_motion), "--keys", "visemes"]) == 0
    bpy.ops.wm.open_mainfile(filepath=str(out))
    scene = bpy.context.scene
    frames = np.arange(scene.frame_start, scene.frame_end + 1, 5)
    values = shape_key_values(frames)
    # The mouth is made of visemes (which ones the speech needs is the solve's business), and
    # the ARKit mouth keys stay at rest.
    visemes = sum(v for (_, key), v in values.items() if key.startswith("viseme_"))
    assert np.all(values[("Head", "jawOpen")] == 0) and visemes.max() > 0.3
    visemes_only = build_messy_rig(tmp_path / "visemes_only.blend", style="visemes")
    capsys.readouterr()
    assert main(["bake", str(speech_clip), "--rig", str(visemes_only), "--out",
                 str(tmp_path / "arkit.blend"), "--motion", str(generated_motion),
                 "--keys", "arkit"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dimitra bake: --keys arkit: the rig has no ARKit") and "\n" not in err
    assert not (tmp_path / "arkit.blend").exists()


def test_the_sample_rig_rendered_and_retracked_opens_as_wide(sample_rig, generated_motion,
                                                            speech_clip, tmp_path):
    """The issue's own measure, on the rig whose render shows a mouth (dark inside, lit lips):
    the baked take rendered with Workbench (preview.py) and tracked again with MediaPipe.
    MediaPipe reads this face's opening wider than its mesh has it (1.1-1.4x the
    correspondence measure above, depending on the line), hence the wider upper bound here;
    before the opening term this read 0.43."""
    from dimitra.backend.media.video import iter_frames
    from dimitra.backend.tracking.face_tracker import FaceTracker
    from dimitra.blender_addon.preview import render_preview
    from dimitra.retarget.face.canonical import load_canonical_face
    from dimitra.retarget.face.pose import fit_head_pose, to_canonical

    bake(speech_clip, sample_rig, tmp_path / "line.blend", BakeSettings(motion=generated_motion))
    video = render_preview(tmp_path / "line.mp4", size=512)
    tracked = []
    with FaceTracker() as tracker:
        for _, frame in iter_frames(video):
            points = tracker.track(frame)
            assert points is not None
            points = points[None].astype(float)
            pose = fit_head_pose(points, load_canonical_face())
            tracked.append(inner_lip_gap(to_canonical(points, pose))[0])
    tracked = np.array(tracked)
    motion = resample_motion(load_motion(generated_motion), 30.0)
    wanted = inner_lip_gap(motion.extras["canonical"].astype(float))[:len(tracked)]
    assert np.corrcoef(tracked, wanted)[0, 1] > 0.8
    assert 0.8 < tracked.std() / wanted.std() < 1.5, tracked.std() / wanted.std()
