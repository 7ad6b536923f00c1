"""Cosine noise schedule (Nichol & Dhariwal 2021) with x0-prediction.

The network predicts the clean motion x0 from the noisy x_t; that suits motion (losses on
velocity and lip closure are written on x0 directly) and is what Dimitra does. The schedule
itself is numpy (sampling runs without torch); the training helpers take torch tensors.
"""

import math

import numpy as np

TRAIN_STEPS = 500


class NoiseSchedule:
    def __init__(self, steps: int = TRAIN_STEPS):
        self.steps = steps
        t = np.arange(steps + 1, dtype=np.float64) / steps
        f = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        alpha_bar = np.clip(f / f[0], 1e-5, 1.0)
        # alpha_bar[k] for k = 0..steps-1 is the signal level after k+1 noising steps.
        self.alpha_bar_array = alpha_bar[1:].astype(np.float32)   # (steps,)

    @property
    def alpha_bar(self):
        """alpha_bar as a torch tensor (steps,), for training."""
        import torch

        return torch.from_numpy(self.alpha_bar_array)

    def add_noise(self, x0, t, noise):
        """q(x_t | x0): torch x0 (B, L, D), t (B,) int in [0, steps)."""
        a = self.alpha_bar.to(x0.device)[t].view(-1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def sample_timesteps(self, batch: int, generator=None, device=None):
        import torch

        return torch.randint(0, self.steps, (batch,), generator=generator, device=device)
