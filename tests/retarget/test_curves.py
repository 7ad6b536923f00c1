"""Curves for game engines: Live Link Face CSV and JSON from the built-in faces, round trip."""

import json

import numpy as np
import pytest

from dimitra.retarget.curves import (
    VISEME_MIXES,
    CurvesError,
    builtin_face,
    read_curves,
    solve_curves,
    timecode,
    write_curves,
)
from dimitra.retarget.face.measures import inner_lip_gap
from dimitra.retarget.key_names import ARKIT_52
from dimitra.retarget.rotations import axis_angle_to_matrix
from dimitra.retarget.sample_face import INTER_OCULAR_M
from tests.retarget.test_key_sets import lips_parting
from tests.retarget.test_solve import motion_from_rig

# A Live Link Face recording's header, as the app writes it (Unreal's importer reads this).
LIVE_LINK_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,"
    "EyeLookUpLeft,EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,"
    "EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,"
    "JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft,"
    "MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,"
    "MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,"
    "MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,"
    "BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,"
    "TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,"
    "RightEyePitch,RightEyeRoll")


@pytest.fixture(scope="module")
def speech():
    """Motion of the sample face whose lips part further than its keys make them (as generated
    speech does), with a head turning toward the subject's left by up to 10 degrees."""
    face = builtin_face("arkit")
    motion = lips_parting(face, 90)
    t = np.arange(90) / 30.0
    yaw = np.radians(10) * np.sin(2 * np.pi * 0.5 * t)
    head = axis_angle_to_matrix(np.array([0.0, 0, 1]), yaw)       # about the scene's up (Z)
    turned = motion_from_rig(face, np.zeros((90, len(ARKIT_52))), head)
    motion.landmarks, motion.pose = turned.landmarks, turned.pose
    return motion, yaw


def test_csv_has_live_link_faces_layout(speech, tmp_path):
    motion, _ = speech
    path = write_curves(tmp_path / "line.csv", solve_curves(motion, "arkit"))
    lines = path.read_text().splitlines()
    assert lines[0] == LIVE_LINK_HEADER
    assert len(lines) == 1 + motion.frame_count
    first, second_30 = lines[1].split(","), lines[31].split(",")
    assert first[:2] == ["00:00:00:00.000", "61"] and second_30[0] == "00:00:01:00.000"
    values = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
    assert values.shape == (motion.frame_count, 61)
    assert values[:, :52].min() >= 0 and values[:, :52].max() <= 1


def test_arkit_curves_on_the_sample_face_reproduce_the_mouth_and_head(speech, tmp_path):
    """Round trip: the CSV read back and applied to the sample rig opens its mouth with the
    motion's opening, and HeadYaw is the head's turn."""
    motion, yaw = speech
    curves = read_curves(write_curves(tmp_path / "line.csv", solve_curves(motion, "arkit")))
    assert curves.fps == 30.0
    rig = builtin_face("arkit")
    deltas = {key.name: key.deltas[:478] for key in rig.shape_keys}
    moved = rig.vertices[:478] + np.einsum("tk,knd->tnd", curves.weights,
                                           np.stack([deltas[n] for n in curves.names]))
    opening = np.linalg.norm(moved[:, 13] - moved[:, 14], axis=-1) / INTER_OCULAR_M
    wanted = inner_lip_gap(motion.extras["canonical"].astype(float))
    assert np.corrcoef(opening, wanted)[0, 1] >= 0.9
    assert 0.8 < opening.std() / wanted.std() < 1.2
    head_yaw, head_pitch = curves.rotations[:, 0], curves.rotations[:, 1]
    assert np.abs(head_yaw - yaw).max() < np.radians(1)        # + turns to the subject's left
    assert np.abs(head_pitch).max() < np.radians(0.5)


def test_json_has_named_frames_and_visemes(speech, tmp_path):
    motion, _ = speech
    path = write_curves(tmp_path / "line.json", solve_curves(motion, "visemes"))
    data = json.loads(path.read_text())
    assert data["fps"] == 30.0 and data["names"] == list(VISEME_MIXES)
    frames = np.array(data["frames"])
    assert frames.shape == (motion.frame_count, 15) and len(data["rotations"]) == len(frames)
    assert data["rotation_names"][:3] == ["HeadYaw", "HeadPitch", "HeadRoll"]
    wanted = inner_lip_gap(motion.extras["canonical"].astype(float))
    open_mouth = frames[:, data["names"].index("viseme_sil")]
    assert np.corrcoef(open_mouth, wanted)[0, 1] < -0.8         # silence when the lips close
    assert np.all(frames.sum(1) >= 1 - 1e-4)


def test_an_existing_output_is_refused_and_kept(speech, tmp_path):
    motion, _ = speech
    curves = solve_curves(motion, "arkit")
    taken = tmp_path / "take.csv"
    taken.write_text("precious")
    with pytest.raises(CurvesError, match="already exists"):
        write_curves(taken, curves)
    assert taken.read_text() == "precious"
    with pytest.raises(CurvesError, match=r"\.csv .* or \.json"):
        write_curves(tmp_path / "take.fbx", curves)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.csv"]


def test_timecodes_count_frames_within_each_second():
    assert [timecode(i, 30) for i in (0, 29, 30, 3600 * 30 + 5)] == [
        "00:00:00:00.000", "00:00:00:29.000", "00:00:01:00.000", "01:00:00:05.000"]
    assert timecode(31, 29.97) == "00:00:01:01.030"     # the sub-frame after the point
