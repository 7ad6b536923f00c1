"""Lip contact seals near-closures and leaves open mouths alone."""

import numpy as np

from dimitra.backend.generation.lip_contact import apply_lip_contact
from dimitra.retarget.face import topology
from dimitra.retarget.face.canonical import load_canonical_face
from dimitra.retarget.face.measures import inner_lip_gap

FACE = load_canonical_face()


def mouths(gaps):
    """Canonical faces whose lower lip sits `gap` below the upper lip."""
    frames = np.repeat(FACE[None], len(gaps), axis=0).copy()
    closed_gap = inner_lip_gap(FACE[None])[0]
    for i, gap in enumerate(gaps):
        frames[i, [topology.LOWER_INNER_LIP, 87, 317, 178, 402, 17, 84, 314], 1] -= gap - closed_gap
    return frames


def test_near_closures_seal_and_open_mouths_stay_open():
    gaps = np.array([0.01, 0.02, 0.03, 0.05, 0.08, 0.2])
    sealed = inner_lip_gap(apply_lip_contact(mouths(gaps), reach=0.05))
    before = inner_lip_gap(mouths(gaps))
    assert sealed[0] < 0.002 and sealed[1] < 0.01          # touching
    assert (sealed <= before + 1e-9).all()                # never opens a mouth
    np.testing.assert_allclose(sealed[4:], before[4:], atol=1e-6)  # beyond the reach: untouched
    assert abs(sealed[3] - before[3]) < 1e-3                # at the reach: barely
    assert (np.diff(sealed) > 0).all()                    # order of openings is kept


def test_the_change_is_smooth_in_the_gap():
    gaps = np.linspace(0.0, 0.1, 201)
    sealed = inner_lip_gap(apply_lip_contact(mouths(gaps), reach=0.05))
    assert np.abs(np.diff(sealed)).max() < 3 * (gaps[1] - gaps[0])


def test_mouth_corners_do_not_move_and_zero_reach_is_off():
    frames = mouths(np.array([0.02]))
    sealed = apply_lip_contact(frames, reach=0.05)
    np.testing.assert_array_equal(sealed[:, [61, 291, 78, 308]], frames[:, [61, 291, 78, 308]])
    np.testing.assert_array_equal(apply_lip_contact(frames, reach=0.0), frames)


def test_lips_that_passed_through_each_other_come_back_the_right_way_round():
    crossed = mouths(np.array([-0.03, -0.01]))      # lower inner lip above the upper one
    faces = apply_lip_contact(crossed, reach=0.05)
    assert (faces[:, topology.UPPER_INNER_LIP, 1] > faces[:, topology.LOWER_INNER_LIP, 1]).all()
    before = inner_lip_gap(crossed)
    x = before / 0.05
    np.testing.assert_allclose(inner_lip_gap(faces), before * x * x * (3 - 2 * x), rtol=1e-6)
