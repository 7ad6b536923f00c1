"""Speech features + a neutral face -> facial motion of any length, with the cMDT.

Long audio is generated in overlapping windows: every window after the first is given the
last `context` frames of the one before (the model was trained to continue them), so there
is no seam, and only one window is in memory at a time.
"""

from dataclasses import dataclass

import numpy as np
import torch

from backend.diffusion.sampler import ddim_sample
from backend.diffusion.schedule import NoiseSchedule
from backend.generation.lip_contact import apply_lip_contact
from backend.model.checkpoint import ModelBundle
from retarget.face import topology


@dataclass
class GenerationOptions:
    seed: int = 0
    expressiveness: float = 1.0   # classifier-free guidance on audio; 1 = plain conditional
    head_motion: float = 1.0      # scales head rotation and translation
    lips: float = 1.0             # scales lower-face motion
    upper_face: float = 1.0       # scales brows, lids and gaze
    blink: bool = True
    steps: int = 8                # DDIM steps
    lip_contact: float = 0.05     # inner-lip gaps under this (inter-ocular units) seal; 0 = off

    def validate(self) -> None:
        for name in ("expressiveness", "head_motion", "lips", "upper_face"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0 <= value <= 5):
                raise ValueError(f"{name} must be between 0 and 5, got {value}")
        if not 1 <= self.steps <= 100:
            raise ValueError(f"steps must be between 1 and 100, got {self.steps}")


class MotionGenerator:
    def __init__(self, bundle: ModelBundle, device: str = "cpu"):
        self.bundle = bundle
        self.model = bundle.model.to(device).eval()
        self.space = bundle.motion_space
        self.config = bundle.model.config
        self.device = device
        self.schedule = NoiseSchedule()

    @torch.no_grad()
    def generate(self, features: np.ndarray, neutral: np.ndarray,
                 options: GenerationOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
        """features (T, F) at 25 fps, neutral (478, 3) canonical -> canonical (T, 478, 3), pose (T, 6).

        pose is relative to frame 0 (radians, inter-ocular units).
        """
        options = options or GenerationOptions()
        options.validate()
        frames = len(features)
        space, config = self.space, self.config
        window, context = config.window, config.context
        std = torch.as_tensor(space.motion_std, dtype=torch.float32)
        pose_slice = space.region_slices()["pose"]
        identity = torch.as_tensor(space.identity_code(neutral))[None]
        motion = torch.zeros(frames, space.motion_dim)          # raw (un-whitened) units
        start, index = 0, 0
        while start < frames:
            known = min(context, start)                          # frames carried over
            begin = start - known
            length = min(window, frames - begin)
            given = torch.zeros(1, length, space.motion_dim)
            mask = torch.zeros(1, length)
            if known:
                tail = motion[begin:start].clone()
                offset = tail[0, pose_slice].clone()
                tail[:, pose_slice] -= offset                     # pose relative to window start
                given[0, :known] = tail / std
                mask[0, :known] = 1
            else:
                offset = motion[0, pose_slice] * 0
            audio = torch.as_tensor(features[begin:begin + length], dtype=torch.float32)[None]
            x0 = self._sample(audio, identity, given, mask, options, options.seed * 100_003 + index)
            x0 = x0[0] * std
            x0[:, pose_slice] += offset
            motion[start:begin + length] = x0[known:]
            start, index = begin + length, index + 1
        raw = motion.numpy()
        parts = space.region_slices()
        raw[:, parts["lower"]] *= options.lips
        raw[:, parts["upper"]] *= options.upper_face
        raw[:, parts["pose"]] *= options.head_motion
        if not options.blink:
            raw[:, parts["upper"]] = self._without_blinks(raw[:, parts["upper"]])
        canonical, pose = space.decode(raw / space.motion_std, neutral)
        return apply_lip_contact(canonical, options.lip_contact), pose

    def _sample(self, audio, identity, given, mask, options, seed) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        length = audio.shape[1]
        guided = options.expressiveness != 1.0
        keep = torch.zeros(1, dtype=torch.bool)

        def denoise(x_t, t):
            if not guided:
                return self.model(x_t, t, audio, identity, given, mask, keep, keep)
            both = self.model(x_t.repeat(2, 1, 1), t.repeat(2), audio.repeat(2, 1, 1),
                              identity.repeat(2, 1), given.repeat(2, 1, 1), mask.repeat(2, 1),
                              torch.tensor([False, True]), torch.tensor([False, False]))
            conditional, without_audio = both[:1], both[1:]
            return without_audio + options.expressiveness * (conditional - without_audio)

        x0 = ddim_sample(denoise, (1, length, self.space.motion_dim), self.schedule,
                         options.steps, generator)
        known = mask[..., None] > 0
        return torch.where(known, given, x0)   # the carried-over frames stay exactly as they were

    def _without_blinks(self, upper_raw: np.ndarray) -> np.ndarray:
        """Remove any closing of the eyelids below the neutral opening (raw upper coefficients)."""
        space = self.space
        position = {p: i for i, p in enumerate(space.upper_points)}
        basis = space.upper_basis.reshape(len(space.upper_basis), -1, 3)
        out = upper_raw.copy()
        for upper_lid, lower_lid in (topology.RIGHT_LID_MIDDLE, topology.LEFT_LID_MIDDLE):
            # d(lid gap)/d(coefficient): the lids' vertical motion toward each other.
            direction = basis[:, position[upper_lid], 1] - basis[:, position[lower_lid], 1]
            closing = out @ direction                            # (T,) change of the gap
            shut = np.minimum(closing, 0.0)
            out -= np.outer(shut / (direction @ direction), direction)
        return out
