"""The face definition: canonical form is invariant to pose and scale; poses compose/invert."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dimitra.retarget.face import topology
from dimitra.retarget.face.canonical import (
    build_canonical_face,
    inter_ocular_distance,
    load_canonical_face,
)
from dimitra.retarget.face.pose import (
    PIXEL_FROM_UPRIGHT,
    Similarity,
    euler_xyz_to_rotation,
    fit_head_pose,
    pose_from_relative,
    relative_pose,
    rotation_to_euler_xyz,
    to_canonical,
)

FACE = load_canonical_face()
angles = st.tuples(*[st.floats(-1.4, 1.4)] * 3)
vectors = st.tuples(*[st.floats(-500, 500)] * 3)
scales = st.floats(0.01, 1000)


def similarity(angle, shift, scale) -> Similarity:
    return Similarity(np.float64(scale), euler_xyz_to_rotation(np.array(angle)), np.array(shift))


def expressive_face(seed: int) -> np.ndarray:
    """The canonical face with the mouth and brows moved, as a speaker's frame would be."""
    rng = np.random.default_rng(seed)
    face = FACE + rng.normal(0, 0.01, FACE.shape)
    face[list(topology.LIPS)] += rng.normal(0, 0.05, 3)
    return face


@settings(max_examples=200, deadline=None)
@given(angles, vectors, scales, st.integers(0, 1000))
def test_canonical_form_ignores_pose_and_scale(angle, shift, scale, seed):
    landmarks = expressive_face(seed)
    moved = similarity(angle, shift, scale).apply(landmarks)
    canonical_original = to_canonical(landmarks, fit_head_pose(landmarks, FACE))
    canonical_moved = to_canonical(moved, fit_head_pose(moved, FACE))
    np.testing.assert_allclose(canonical_moved, canonical_original, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(angles, vectors, scales, angles, vectors, scales)
def test_poses_compose_and_invert(a1, t1, s1, a2, t2, s2):
    first, second = similarity(a1, t1, s1), similarity(a2, t2, s2)
    points = FACE[:20]
    np.testing.assert_allclose(second.compose(first).apply(points),
                               second.apply(first.apply(points)), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(first.inverse().apply(first.apply(points)), points, atol=1e-6)
    identity = first.inverse().compose(first)
    np.testing.assert_allclose(identity.rotation, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(identity.scale, 1.0, rtol=1e-9)


@settings(max_examples=200, deadline=None)
@given(angles)
def test_euler_round_trip(angle):
    np.testing.assert_allclose(rotation_to_euler_xyz(euler_xyz_to_rotation(np.array(angle))),
                               angle, atol=1e-9)


def test_euler_order_is_blenders_xyz():
    """R = Rz @ Ry @ Rx: a 90° turn about z moves +x onto +y."""
    np.testing.assert_allclose(euler_xyz_to_rotation(np.array([0, 0, np.pi / 2])) @ [1, 0, 0],
                               [0, 1, 0], atol=1e-12)


def test_recovers_a_known_head_turn_in_pixel_frame():
    """A face turned 20° to the subject's left, seen by the camera, reads as yaw +20°."""
    turn = np.radians([0.0, 20.0, 0.0])
    camera = Similarity(np.float64(100.0), PIXEL_FROM_UPRIGHT @ euler_xyz_to_rotation(turn),
                        np.array([256.0, 256.0, 0.0]))
    frontal = Similarity(np.float64(100.0), PIXEL_FROM_UPRIGHT, np.array([256.0, 256.0, 0.0]))
    landmarks = np.stack([frontal.apply(FACE), camera.apply(FACE)])
    pose = fit_head_pose(landmarks, FACE)
    relative = relative_pose(pose, pose[0])
    np.testing.assert_allclose(relative[1, :3], turn, atol=1e-6)
    np.testing.assert_allclose(relative[:, 3:], 0, atol=1e-6)
    back = pose_from_relative(relative, pose[0])
    np.testing.assert_allclose(back.apply(FACE), landmarks, atol=1e-4)


def test_fit_never_reflects():
    mirrored = FACE * [-1, 1, 1]
    pose = fit_head_pose(mirrored, FACE)
    assert np.linalg.det(pose.rotation) > 0


def test_canonical_face_is_upright_unit_and_rebuildable():
    assert FACE.shape == (478, 3)
    assert np.isclose(inter_ocular_distance(FACE), 1.0)
    assert FACE[topology.FOREHEAD, 1] > FACE[topology.NOSE_TIP, 1] > FACE[topology.CHIN, 1]
    assert FACE[topology.LEFT_EYE_OUTER, 0] > FACE[topology.RIGHT_EYE_OUTER, 0]
    assert FACE[topology.NOSE_TIP, 2] > FACE[topology.LEFT_EYE_OUTER, 2]  # nose toward camera
    # Built from the same shape seen through random cameras, the face comes back unchanged.
    rng = np.random.default_rng(0)
    views = [Similarity(np.float64(rng.uniform(50, 300)),
                        PIXEL_FROM_UPRIGHT @ euler_xyz_to_rotation(rng.uniform(-0.3, 0.3, 3)),
                        rng.uniform(0, 512, 3)).apply(FACE) for _ in range(5)]
    np.testing.assert_allclose(build_canonical_face(np.stack(views)), FACE, atol=1e-6)


def test_triangles_cover_the_mesh_and_face_the_camera():
    triangles = topology.triangles()
    assert triangles.shape == (852, 3)
    assert set(np.unique(triangles)) == set(range(topology.NUM_MESH_LANDMARKS))
    a, b, c = (FACE[triangles[:, i]] for i in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).mean() > 0.95


def test_regions_are_named_and_unknown_names_are_refused():
    import pytest

    mask = topology.region_mask("lips_outer", "lips_inner")
    assert mask.sum() == len(topology.LIPS) == 40
    with pytest.raises(KeyError, match="unknown face region 'lip'"):
        topology.region_mask("lip")
