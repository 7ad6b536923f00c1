"""DDIM sampling (Song et al. 2021) for an x0-predicting denoiser, deterministic (eta = 0).

numpy, so sampling runs without torch. Seeded, so the same inputs and seed give the same
motion; the noise is exactly what `torch.randn` gives for the same seed on the CPU
(`torch_randn`), so the torch and onnxruntime runtimes, and motion made before sampling left
torch, agree. Guidance is the caller's business: `denoise(x_t, t)` returns the (already
guided) x0 estimate.
"""

from collections.abc import Callable

import numpy as np

from .schedule import NoiseSchedule


def ddim_timesteps(schedule: NoiseSchedule, count: int) -> list[int]:
    """`count` timesteps from most to least noisy, evenly spread."""
    count = max(1, min(count, schedule.steps))
    return [round(float(i)) for i in np.linspace(schedule.steps - 1, 0, count, dtype=np.float32)]


def ddim_sample(denoise: Callable[[np.ndarray, np.ndarray], np.ndarray],
                shape: tuple[int, ...], schedule: NoiseSchedule, steps: int = 10,
                seed: int = 0) -> np.ndarray:
    """Run the reverse process from pure noise; returns x0 (shape) float32.

    denoise(x_t (shape) float32, t (shape[0],) int64) -> x0 estimate (shape) float32.
    """
    alpha_bar = schedule.alpha_bar_array
    x = torch_randn(shape, seed)
    timesteps = ddim_timesteps(schedule, steps)
    x0 = x
    for i, t in enumerate(timesteps):
        x0 = denoise(x, np.full(shape[0], t, dtype=np.int64))
        if i == len(timesteps) - 1:
            break
        a_t, a_next = alpha_bar[t], alpha_bar[timesteps[i + 1]]
        eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
        x = (np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps).astype(np.float32)
    return x0


def torch_randn(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 standard normal noise equal (to float rounding) to
    `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` on the CPU, for 16
    values or more.

    torch draws a float32 uniform from each 32-bit output of its Mersenne Twister (the low 24
    bits), then turns each run of 16 into normals by Box-Muller (the first 8 as radii, the
    next 8 as angles); a remainder of n % 16 values is redone from 16 fresh uniforms over the
    last 16 places. numpy's legacy RandomState is the same Mersenne Twister, seeded alike.
    """
    count = int(np.prod(shape))
    if count < 16:
        raise ValueError(f"torch_randn needs at least 16 values, got shape {shape}")
    twister = np.random.RandomState(seed & 0xFFFFFFFF)

    def uniforms(n: int) -> np.ndarray:
        bits = twister.randint(0, 2**32, size=n, dtype=np.uint32) & ((1 << 24) - 1)
        return bits.astype(np.float32) * np.float32(2.0 ** -24)

    def box_muller(values: np.ndarray) -> np.ndarray:
        runs = values.reshape(-1, 16)
        radius = np.sqrt(-2 * np.log(1 - runs[:, :8]))
        angle = np.float32(2 * np.pi) * runs[:, 8:]
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1).ravel()

    out = uniforms(count)
    whole = count - count % 16
    out[:whole] = box_muller(out[:whole])
    if count % 16:
        out[-16:] = box_muller(uniforms(16))
    return out.reshape(shape)
