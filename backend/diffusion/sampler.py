"""DDIM sampling (Song et al. 2021) for an x0-predicting denoiser, deterministic (eta = 0).

Seeded, so the same inputs and seed give the same motion. Guidance is the caller's business:
`denoise(x_t, t)` returns the (already guided) x0 estimate.
"""

from collections.abc import Callable

import torch

from .schedule import NoiseSchedule


def ddim_timesteps(schedule: NoiseSchedule, count: int) -> list[int]:
    """`count` timesteps from most to least noisy, evenly spread."""
    count = max(1, min(count, schedule.steps))
    return [round(i) for i in torch.linspace(schedule.steps - 1, 0, count).tolist()]


@torch.no_grad()
def ddim_sample(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                shape: tuple[int, ...], schedule: NoiseSchedule, steps: int = 10,
                generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Run the reverse process from pure noise; returns x0 (shape)."""
    alpha_bar = schedule.alpha_bar.to(device)
    x = torch.randn(shape, generator=generator).to(device)   # CPU noise: the same on any device
    timesteps = ddim_timesteps(schedule, steps)
    x0 = x
    for i, t in enumerate(timesteps):
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0 = denoise(x, t_batch)
        if i == len(timesteps) - 1:
            break
        a_t, a_next = alpha_bar[t], alpha_bar[timesteps[i + 1]]
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x0
