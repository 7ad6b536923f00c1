"""The solve on the sample face: known key weights and head motion in, the same out."""

import numpy as np
import pytest

from dimitra.retarget.correspond import from_vertices
from dimitra.retarget.face.pose import (
    PIXEL_FROM_UPRIGHT,
    Similarity,
    pose_from_relative,
    rotation_to_euler_xyz,
)
from dimitra.retarget.key_names import ARKIT_52
from dimitra.retarget.motion_file import Motion, MotionFileError
from dimitra.retarget.rig import RigDescription, ShapeKey
from dimitra.retarget.rotations import axis_angle_to_matrix, rotation_angle
from dimitra.retarget.sample_face import (
    HEAD_ORIGIN,
    INTER_OCULAR_M,
    SCENE_FROM_CANONICAL,
    build_sample_face,
)
from dimitra.retarget.solve import SolveOptions, solve

FRAMES = 90
# Opposite shapes (one undoes the other): a face uses one of the two at a time.
OPPOSITES = [("mouthLeft", "mouthRight"), ("jawLeft", "jawRight"),
             ("eyeBlinkLeft", "eyeWideLeft"), ("eyeBlinkRight", "eyeWideRight"),
             ("eyeLookInLeft", "eyeLookOutLeft"), ("eyeLookInRight", "eyeLookOutRight"),
             ("eyeLookUpLeft", "eyeLookDownLeft"), ("eyeLookUpRight", "eyeLookDownRight")]


@pytest.fixture(scope="module")
def sample():
    face = build_sample_face()
    return face, from_vertices(face.rig, np.arange(478))


def random_weights(rng, frames: int) -> np.ndarray:
    """(T, 52) smooth random weights in [0, 1], each key idle part of the time."""
    t = np.arange(frames) / 30.0
    weights = np.zeros((frames, len(ARKIT_52)))
    for k in range(len(ARKIT_52)):
        phase, speed = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.3, 2.0, 2)
        curve = 0.6 * np.sin(speed[0] * 2 * np.pi * t + phase[0]) + \
            0.5 * np.sin(speed[1] * 2 * np.pi * t + phase[1]) + rng.uniform(-0.2, 0.4)
        weights[:, k] = curve
    for a, b in OPPOSITES:
        signed = weights[:, ARKIT_52.index(a)]
        weights[:, ARKIT_52.index(a)], weights[:, ARKIT_52.index(b)] = signed, -signed
    weights[:, ARKIT_52.index("tongueOut")] = 0.7   # moves none of the landmarks: unobservable
    return np.clip(weights, 0, 1)


def motion_from_rig(rig: RigDescription, weights: np.ndarray, head: np.ndarray,
                    reference_turn: float = 0.08, extras: bool = True) -> Motion:
    """What `animate` would write for a speaker whose face is the rig driven by `weights`.

    head (T, 3, 3): the head's rotation in scene axes. The reference picture shows the head
    slightly turned (`reference_turn` radians about up).
    """
    deltas = rig.key_deltas()[:, :478]
    scene = rig.vertices[:478] + np.einsum("tk,knd->tnd", weights, deltas)
    canonical = (scene - HEAD_ORIGIN) @ SCENE_FROM_CANONICAL / INTER_OCULAR_M   # (T, 478, 3)
    neutral = (rig.vertices[:478] - HEAD_ORIGIN) @ SCENE_FROM_CANONICAL / INTER_OCULAR_M
    reference_rotation = axis_angle_to_matrix(np.array([0.0, 1, 0]), reference_turn)
    in_head = SCENE_FROM_CANONICAL.T @ head @ SCENE_FROM_CANONICAL
    upright = reference_rotation @ in_head @ reference_rotation.T
    pose = np.zeros((len(head), 6))
    pose[:, :3] = rotation_to_euler_xyz(upright)
    reference = Similarity(np.float64(150.0), PIXEL_FROM_UPRIGHT @ reference_rotation,
                           np.array([256.0, 256.0, 0.0]))
    landmarks = pose_from_relative(pose, reference).apply(canonical)
    return Motion(landmarks.astype(np.float32), pose.astype(np.float32), 30.0, {},
                  {"canonical": canonical.astype(np.float32),
                   "neutral": neutral.astype(np.float32)} if extras else {})


def head_turns(frames: int, rng) -> np.ndarray:
    """(T, 3, 3) smooth head rotations up to about 15°, scene axes."""
    t = np.arange(frames) / 30.0
    axis = np.stack([np.sin(1.3 * t + rng.uniform(0, 6)), np.cos(0.7 * t),
                     0.5 * np.sin(2.1 * t)], 1)
    return axis_angle_to_matrix(axis, np.radians(15) * np.sin(0.9 * t + 0.3))


def head_in_scene(rig: RigDescription, bone_rotations: dict) -> np.ndarray:
    """Forward kinematics of neck then head: the head's rotation in scene axes."""
    neck, head = rig.bones["neck"], rig.bones["head"]
    world_neck = neck.rest_rotation @ bone_rotations[neck.name] @ neck.rest_rotation.T
    world_head = head.rest_rotation @ bone_rotations[head.name] @ head.rest_rotation.T
    return world_neck @ world_head


def test_recovers_known_weights_and_head_rotation(sample):
    face, correspondence = sample
    rng = np.random.default_rng(5)
    weights, head = random_weights(rng, FRAMES), head_turns(FRAMES, rng)
    motion = motion_from_rig(face.rig, weights, head)
    animation = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    solved = np.stack([animation.shape_keys[name] for name in ARKIT_52], 1)
    observable = [k for k, name in enumerate(ARKIT_52) if name != "tongueOut"]
    error = np.abs(solved[:, observable] - weights[:, observable])
    assert error.mean() < 0.02, {ARKIT_52[k]: round(float(e), 3)
                                 for k, e in zip(observable, error.mean(0)) if e > 0.02}
    assert np.all(animation.shape_keys["tongueOut"] == 0)
    recovered = head_in_scene(face.rig, animation.bone_rotations)
    assert np.degrees(rotation_angle(recovered @ np.swapaxes(head, 1, 2))).max() < 0.5
    # The neck carries part of the turn, the head the rest.
    neck_angle = rotation_angle(animation.bone_rotations["neck"])
    assert 0.2 < neck_angle.max() / rotation_angle(head).max() < 0.5


def test_recovers_weights_from_pixel_landmarks_alone(sample):
    """A motion file without the canonical extras: the head pose is fitted from the landmarks."""
    face, correspondence = sample
    rng = np.random.default_rng(6)
    weights = random_weights(rng, FRAMES)
    motion = motion_from_rig(face.rig, weights, head_turns(FRAMES, rng), extras=False)
    motion.extras["neutral"] = motion_from_rig(face.rig, weights[:1] * 0, np.eye(3)[None]
                                               ).extras["neutral"]
    animation = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    solved = np.stack([animation.shape_keys[name] for name in ARKIT_52], 1)
    assert np.abs(solved - weights)[:, [k for k, n in enumerate(ARKIT_52) if n != "tongueOut"]
                                    ].mean() < 0.03


def test_broken_frames_are_held_and_reported(sample):
    """NaN frames in a motion (a damaged file, a failed track) hold the last good pose."""
    face, correspondence = sample
    rng = np.random.default_rng(8)
    motion = motion_from_rig(face.rig, random_weights(rng, 60), head_turns(60, rng))
    clean = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    for values in (motion.landmarks, motion.extras["canonical"]):
        values[[0, 20, 21]] = np.nan
    motion.pose[40] = np.inf
    animation = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    assert animation.report["frames_held"] == 4
    jaw = animation.shape_keys["jawOpen"]
    assert np.isfinite(jaw).all()
    assert jaw[20] == jaw[21] == jaw[19] and jaw[0] == jaw[1]
    assert np.allclose(jaw[22:40], clean.shape_keys["jawOpen"][22:40])
    for rotations in animation.bone_rotations.values():
        assert np.isfinite(rotations).all()


def test_a_motion_without_one_good_frame_is_refused(sample):
    face, correspondence = sample
    motion = motion_from_rig(face.rig, np.zeros((5, len(ARKIT_52))), np.repeat(np.eye(3)[None], 5, 0))
    motion.pose[:] = np.nan
    with pytest.raises(MotionFileError, match="every frame"):
        solve(face.rig, correspondence, motion)


def test_only_the_keys_that_moved_come_back(sample):
    """Sparsity: a face that only opens its jaw and blinks keys nothing else."""
    face, correspondence = sample
    weights = np.zeros((FRAMES, len(ARKIT_52)))
    weights[:, ARKIT_52.index("jawOpen")] = np.linspace(0, 1, FRAMES)
    weights[40:50, ARKIT_52.index("eyeBlinkLeft")] = 1.0
    motion = motion_from_rig(face.rig, weights, np.broadcast_to(np.eye(3), (FRAMES, 3, 3)))
    animation = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    others = [n for n in ARKIT_52 if n not in ("jawOpen", "eyeBlinkLeft")]
    assert max(np.abs(animation.shape_keys[n]).max() for n in others) < 0.03
    assert np.abs(animation.shape_keys["jawOpen"] - weights[:, ARKIT_52.index("jawOpen")]
                  ).max() < 0.03
    assert animation.shape_keys["eyeBlinkLeft"][45] > 0.95


def test_keys_that_move_nothing_stay_zero_and_strength_scales_a_region(sample):
    face, correspondence = sample
    rig = face.rig
    still = np.zeros_like(rig.vertices)
    still[-1] = [0.0, 0.1, 0.0]    # moves only the back of the skull, where no landmark is
    nothing = RigDescription(rig.vertices, rig.triangles,
                             rig.shape_keys + [ShapeKey("Key 7", still),
                                               ShapeKey("empty", np.zeros_like(still))],
                             rig.bones, rig.fps, rig.mesh_names, rig.mesh_vertex_counts)
    weights = np.zeros((FRAMES, len(ARKIT_52)))
    weights[:, ARKIT_52.index("jawOpen")] = 0.8
    weights[:, ARKIT_52.index("browInnerUp")] = 0.6
    motion = motion_from_rig(rig, weights, np.broadcast_to(np.eye(3), (FRAMES, 3, 3)))
    animation = solve(nothing, correspondence, motion,
                      SolveOptions(smoothing=0, strength={"mouth": 0.5}))
    assert np.all(animation.shape_keys["Key 7"] == 0) and np.all(animation.shape_keys["empty"] == 0)
    assert set(animation.report["keys_moving_nothing"]) == {"Key 7", "empty", "tongueOut"}
    assert np.allclose(animation.shape_keys["jawOpen"], 0.4, atol=0.02)
    assert np.allclose(animation.shape_keys["browInnerUp"], 0.6, atol=0.02)


def test_smoothing_removes_frame_to_frame_jitter(sample):
    face, correspondence = sample
    rng = np.random.default_rng(7)
    weights = np.zeros((FRAMES, len(ARKIT_52)))
    jaw = 0.5 + 0.5 * np.sin(np.arange(FRAMES) / 10)
    weights[:, ARKIT_52.index("jawOpen")] = np.clip(jaw + rng.normal(0, 0.1, FRAMES), 0, 1)
    motion = motion_from_rig(face.rig, weights, np.broadcast_to(np.eye(3), (FRAMES, 3, 3)))
    rough = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    smooth = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0.06))
    jitter = [np.abs(np.diff(a.shape_keys["jawOpen"], 2)).mean() for a in (rough, smooth)]
    assert jitter[1] < 0.5 * jitter[0]
    assert np.abs(smooth.shape_keys["jawOpen"] - jaw).mean() < 0.08


def test_jaw_bone_follows_the_chin(sample):
    face, correspondence = sample
    weights = np.zeros((FRAMES, len(ARKIT_52)))
    weights[:, ARKIT_52.index("jawOpen")] = np.linspace(0, 1, FRAMES)
    motion = motion_from_rig(face.rig, weights, np.broadcast_to(np.eye(3), (FRAMES, 3, 3)))
    animation = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    angle = np.degrees(rotation_angle(animation.bone_rotations["jaw"]))
    assert angle[0] < 0.5 and 8 < angle[-1] < 20       # the sample key opens by about 14°
    assert np.all(np.diff(angle) > -0.2)


def test_eyes_turn_where_the_irises_look(sample):
    """Both irises shift toward the subject's left (+X in the sample's scene): the eye bones
    turn their forward axis (-Y) toward +X, by about the keys' 20°."""
    face, correspondence = sample
    weights = np.zeros((FRAMES, len(ARKIT_52)))
    weights[:, ARKIT_52.index("eyeLookOutLeft")] = 1.0
    weights[:, ARKIT_52.index("eyeLookInRight")] = 1.0
    motion = motion_from_rig(face.rig, weights, np.broadcast_to(np.eye(3), (FRAMES, 3, 3)))
    animation = solve(face.rig, correspondence, motion, SolveOptions(smoothing=0))
    for role in ("eye_left", "eye_right"):
        bone = face.rig.bones[role]
        world = bone.rest_rotation @ animation.bone_rotations[bone.name][-1] @ bone.rest_rotation.T
        looking = world @ [0.0, -1, 0]
        assert 10 < np.degrees(np.arctan2(looking[0], -looking[1])) < 30
