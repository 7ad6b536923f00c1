"""The cMDT's two sampling calls on torch (CPU or GPU), numpy in and out, like `OnnxNetwork`:
the sampler and the generator are numpy, whichever runtime computes the network."""

import numpy as np
import torch

from .cmdt import SamplingDenoiser


class TorchNetwork:
    def __init__(self, model, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.denoiser = SamplingDenoiser(self.model)
        self.device = device

    @torch.no_grad()
    def encode_audio(self, audio: np.ndarray, drop: np.ndarray) -> np.ndarray:
        """audio (B, L, F) float32, drop (B,) bool -> (B, L, width) float32."""
        return self._numpy(self.model.audio(self._tensor(audio), self._tensor(drop)))

    @torch.no_grad()
    def denoise(self, *inputs: np.ndarray) -> np.ndarray:
        """backend.model.onnx_denoiser.DENOISER_INPUTS as numpy arrays -> x0 (B, L, D) float32."""
        return self._numpy(self.denoiser(*(self._tensor(value) for value in inputs)))

    def _tensor(self, value: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(value)).to(self.device)

    @staticmethod
    def _numpy(value: torch.Tensor) -> np.ndarray:
        return value.float().cpu().numpy()
