"""The motion space, the network and the sampler: the properties generation relies on."""

import numpy as np
import pytest
import torch

from dimitra.backend.diffusion.sampler import ddim_sample, ddim_timesteps, torch_randn
from dimitra.backend.diffusion.schedule import NoiseSchedule
from dimitra.backend.model.cmdt import CMDT, CMDTConfig
from dimitra.backend.model.motion_space import fit_motion_space
from dimitra.retarget.face import topology
from dimitra.retarget.face.canonical import load_canonical_face

FACE = load_canonical_face()


def synthetic_space(seed: int = 0):
    """A motion space fitted on faces whose jaw and brows move along known directions."""
    rng = np.random.default_rng(seed)
    jaw = np.zeros((478, 3))
    jaw[list(topology.JAW_LINE) + list(topology.LIPS_OUTER[:10]), 1] = -0.1
    brow = np.zeros((478, 3))
    brow[list(topology.RIGHT_BROW + topology.LEFT_BROW), 1] = 0.05
    neutrals = FACE + rng.normal(0, 0.02, (12, 478, 3))
    frames = []
    for neutral in neutrals:
        weights = rng.normal(0, 1, (50, 2))
        frames.append(neutral + weights[:, :1, None] * jaw + weights[:, 1:, None] * brow
                      + rng.normal(0, 1e-3, (50, 478, 3)))
    canonical = np.concatenate(frames)
    per_frame_neutral = np.repeat(neutrals, 50, axis=0)
    poses = rng.normal(0, 0.05, (200, 6))
    return fit_motion_space(canonical, per_frame_neutral, poses, neutrals, FACE,
                            lower_dim=4, upper_dim=3, identity_dim=5), neutrals, jaw


def test_neutral_face_is_zero_motion_and_motion_decodes_back():
    space, neutrals, jaw = synthetic_space()
    pose = np.zeros((2, 6))
    frames = np.stack([neutrals[0], neutrals[0] + 0.7 * jaw])
    motion = space.encode(frames, neutrals[0], pose)
    assert np.abs(motion[0]).max() < 1e-5
    canonical, _ = space.decode(motion, neutrals[0])
    np.testing.assert_allclose(canonical, frames, atol=5e-3)


def test_neutralise_closes_a_reference_caught_mid_word():
    space, neutrals, jaw = synthetic_space()
    mid_word = neutrals[3] + 1.5 * jaw
    recovered = space.neutralise(mid_word)
    moved = np.abs(jaw).sum(axis=1) > 0
    residual = np.linalg.norm(recovered - neutrals[3], axis=1)[moved].mean()
    assert residual < 0.15 * np.linalg.norm(1.5 * jaw, axis=1)[moved].mean()


def test_space_survives_a_save_and_load():
    from dimitra.backend.model.motion_space import MotionSpace

    space, neutrals, _ = synthetic_space()
    again = MotionSpace.from_arrays(space.to_arrays())
    frames = neutrals[:1] + 0.01
    np.testing.assert_allclose(again.encode(frames, neutrals[0], np.zeros((1, 6))),
                               space.encode(frames, neutrals[0], np.zeros((1, 6))), atol=1e-5)


def tiny_model() -> CMDT:
    return CMDT(CMDTConfig(region_dims=(4, 3, 6), audio_dim=8, identity_dim=5, width=32, depth=2,
                           heads=2, window=20, context=4))


def model_inputs(batch: int, length: int):
    torch.manual_seed(0)
    return {"x_t": torch.randn(batch, length, 13), "t": torch.randint(0, 500, (batch,)),
            "audio": torch.randn(batch, length, 8), "identity": torch.randn(batch, 5),
            "context": torch.randn(batch, length, 13), "context_mask": torch.zeros(batch, length),
            "drop_audio": torch.zeros(batch, dtype=torch.bool),
            "drop_identity": torch.zeros(batch, dtype=torch.bool)}


def test_a_fresh_model_outputs_zero_and_shapes_follow_the_window():
    model = tiny_model()
    out = model(**model_inputs(3, 20))
    assert out.shape == (3, 20, 13)
    assert torch.count_nonzero(out) == 0  # adaLN-Zero and zero heads
    assert model(**model_inputs(2, 7)).shape == (2, 7, 13)  # a short last window


def test_padding_frames_do_not_change_the_valid_ones():
    model = tiny_model()
    for p in model.parameters():  # leave the zero initialisation so outputs depend on inputs
        torch.nn.init.normal_(p, std=0.05)
    inputs = model_inputs(1, 20)
    valid = torch.ones(1, 20, dtype=torch.bool)
    valid[:, 12:] = False
    first = model(**inputs, valid=valid)
    inputs["x_t"][:, 12:] = 100.0
    second = model(**inputs, valid=valid)
    torch.testing.assert_close(first[:, :10], second[:, :10])


def test_ddim_is_seeded_and_ends_at_the_denoiser_estimate():
    schedule = NoiseSchedule()
    assert ddim_timesteps(schedule, 8)[0] == schedule.steps - 1
    assert ddim_timesteps(schedule, 8)[-1] == 0
    target = np.full((1, 8, 3), 0.5, np.float32)

    def denoise(x_t, t):  # an oracle that always knows x0
        return np.broadcast_to(target, x_t.shape)

    np.testing.assert_allclose(ddim_sample(denoise, (1, 8, 3), schedule, 8, seed=1), target)

    def noisy(x_t, t):
        return 0.5 * x_t
    one = ddim_sample(noisy, (1, 8, 3), schedule, 8, seed=1)
    same = ddim_sample(noisy, (1, 8, 3), schedule, 8, seed=1)
    other = ddim_sample(noisy, (1, 8, 3), schedule, 8, seed=2)
    np.testing.assert_array_equal(one, same)
    assert np.abs(one - other).max() > 1e-3


@pytest.mark.parametrize("shape", [(1, 100, 46), (1, 17, 46), (2, 8)])
@pytest.mark.parametrize("seed", [0, 300_009, 2**33 + 5])
def test_sampling_noise_is_torchs_for_the_same_seed(shape, seed):
    expected = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
    np.testing.assert_allclose(torch_randn(shape, seed), expected, atol=1e-6)


@pytest.mark.parametrize("t", [0, 250, 499])
def test_noise_levels_run_from_clean_to_pure_noise(t):
    schedule = NoiseSchedule()
    level = schedule.alpha_bar[t].item()
    assert 0 < level <= 1
    if t == 0:
        assert level > 0.99
    if t == 499:
        assert level < 1e-3
