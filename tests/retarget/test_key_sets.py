"""One key set on rigs that carry two, and the mouth's opening kept at its amplitude."""

import numpy as np
import pytest

from dimitra.retarget import solve as solve_module
from dimitra.retarget.correspond import from_vertices
from dimitra.retarget.curves import builtin_face
from dimitra.retarget.face import topology
from dimitra.retarget.face.measures import inner_lip_gap
from dimitra.retarget.key_names import ARKIT_52, VISEMES
from dimitra.retarget.rig import RigDescription, RigError
from dimitra.retarget.sample_face import INTER_OCULAR_M, build_sample_face
from dimitra.retarget.solve import SolveOptions, choose_keys, solve
from tests.retarget.test_solve import motion_from_rig

FRAMES = 120


@pytest.fixture(scope="module")
def two_sets():
    """The sample face carrying its 52 ARKit keys and the 15 visemes (as Ready Player Me
    avatars do), the landmarks on its vertices."""
    arkit = build_sample_face().rig
    both = RigDescription(arkit.vertices, arkit.triangles,
                          arkit.shape_keys + builtin_face("visemes").shape_keys, arkit.bones,
                          arkit.fps, arkit.mesh_names, arkit.mesh_vertex_counts)
    return arkit, both, from_vertices(both, np.arange(478))


def talking(rig: RigDescription, frames: int = FRAMES):
    """A motion of the rig opening and closing its jaw (with lowered lip corners), blinking."""
    t = np.arange(frames) / 30.0
    weights = np.zeros((frames, len(ARKIT_52)))
    weights[:, ARKIT_52.index("jawOpen")] = 0.45 + 0.45 * np.sin(2 * np.pi * 1.7 * t)
    for side in ("Left", "Right"):
        weights[:, ARKIT_52.index(f"mouthLowerDown{side}")] = 0.3 + 0.3 * np.sin(
            2 * np.pi * 1.7 * t + 0.4)
    weights[50:60, ARKIT_52.index("eyeBlinkLeft")] = 1.0
    weights[50:60, ARKIT_52.index("eyeBlinkRight")] = 1.0
    return motion_from_rig(rig, weights, np.broadcast_to(np.eye(3), (frames, 3, 3))), weights


def test_auto_takes_arkit_on_a_rig_with_both_sets(two_sets):
    arkit, both, correspondence = two_sets
    motion, weights = talking(arkit)
    animation = solve(both, correspondence, motion, SolveOptions(smoothing=0))
    assert animation.report["key_set"] == "arkit"
    assert all(np.all(animation.shape_keys[name] == 0) for name in VISEMES)
    assert set(animation.report["keys_of_the_other_set"]) == set(VISEMES)
    # The jaw opens through jawOpen, as game code reading it expects.
    jaw = animation.shape_keys["jawOpen"]
    assert np.abs(jaw - weights[:, ARKIT_52.index("jawOpen")]).max() < 0.05


def test_visemes_on_request_leave_the_arkit_mouth_at_rest_but_blink(two_sets):
    arkit, both, correspondence = two_sets
    motion, weights = talking(arkit)
    animation = solve(both, correspondence, motion, SolveOptions(smoothing=0, keys="visemes"))
    mouth = [n for n in ARKIT_52 if solve_module.region_of(n) == "mouth"]
    assert all(np.all(animation.shape_keys[name] == 0) for name in mouth)
    opening = inner_lip_gap(motion.extras["canonical"].astype(float))
    visemes_open = sum(animation.shape_keys[name] for name in ("viseme_aa", "viseme_O", "viseme_E",
                                                                "viseme_kk", "viseme_DD"))
    assert np.corrcoef(visemes_open, opening)[0, 1] > 0.8
    assert animation.shape_keys["eyeBlinkLeft"][55] > 0.9      # not a mouth key: still solved


def test_all_solves_both_sets_and_a_missing_set_is_refused(two_sets):
    arkit, both, correspondence = two_sets
    motion, _ = talking(arkit, 30)
    animation = solve(both, correspondence, motion, SolveOptions(smoothing=0, keys="all"))
    assert animation.report["key_set"] == "all" and not animation.report["keys_of_the_other_set"]
    with pytest.raises(RigError, match="--keys visemes: the rig has no viseme"):
        solve(arkit, from_vertices(arkit, np.arange(478)), motion, SolveOptions(keys="visemes"))
    assert choose_keys(["viseme_aa", "Fcl_EYE_Close_L", "Key 7"], "auto")[0] == "visemes"
    assert choose_keys(["Key 1", "Key 2"], "auto")[0] == "all"
    with pytest.raises(RigError, match="--keys arkit"):
        choose_keys(["viseme_aa", "viseme_O"], "arkit")


def lips_parting(rig: RigDescription, frames: int = FRAMES):
    """Speech-like motion the rig's keys cannot follow point for point: the lips part much
    further than the jaw turns (the rig's jawOpen moves the chin with the lower lip), as in
    generated and tracked speech."""
    motion, _ = talking(rig, frames)
    neutral = motion.extras["neutral"].astype(np.float64)
    canonical = neutral + 0.3 * (motion.extras["canonical"] - neutral)    # a third of the jaw
    part = 0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * np.arange(frames) / 30.0)  # (T,)
    lip_y = neutral[list(topology.LIPS_INNER), 1].mean()
    near_lips = np.exp(-((neutral[:, 1] - lip_y) / 0.06) ** 2) * (np.abs(neutral[:, 0]) < 0.45)
    apart = np.where(neutral[:, 1] > lip_y, 0.03, -0.06) * near_lips         # (478,) IOD, up
    canonical[:, :, 1] += part[:, None] * apart
    motion.extras["canonical"] = canonical.astype(np.float32)
    return motion


def rig_opening(rig: RigDescription, animation) -> np.ndarray:
    """(T,) the rig's inner-lip gap (points 13-14) with the solved weights, in IOD units."""
    weights = np.stack([animation.shape_keys[k.name] for k in rig.shape_keys], 1)
    moved = rig.vertices[:478] + np.einsum("tk,knd->tnd", weights, rig.key_deltas()[:, :478])
    return np.linalg.norm(moved[:, 13] - moved[:, 14], axis=-1) / INTER_OCULAR_M


@pytest.mark.parametrize("smoothing", [0.0, 0.03])
def test_the_mouth_opens_as_wide_as_the_motion(two_sets, smoothing, monkeypatch):
    """The opening's amplitude (standard deviation over the line) stays within 0.8-1.2 of the
    motion's; fitting the lips' positions alone kept about 0.6 of it."""
    arkit, both, correspondence = two_sets
    motion = lips_parting(arkit)
    wanted = inner_lip_gap(motion.extras["canonical"].astype(float))
    for rig in (arkit, both):
        animation = solve(rig, correspondence, motion, SolveOptions(smoothing=smoothing))
        opening = rig_opening(rig, animation)
        assert 0.8 < opening.std() / wanted.std() < 1.2, (rig.shape_keys[-1].name,
                                                          opening.std() / wanted.std())
        assert np.corrcoef(opening, wanted)[0, 1] > 0.95
    monkeypatch.setattr(solve_module, "OPENING_WEIGHT", 0.0)
    positions_only = rig_opening(arkit, solve(arkit, correspondence, motion,
                                              SolveOptions(smoothing=smoothing)))
    assert positions_only.std() / wanted.std() < 0.8
