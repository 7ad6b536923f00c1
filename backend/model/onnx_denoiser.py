"""The cMDT denoiser on onnxruntime: exported once per model, then used by the sampler in
place of the torch module (`MotionGenerator(..., runtime="onnx")`).

Only the denoiser runs on onnxruntime: it is called `steps` times per window (twice with
guidance), while the audio encoder runs once per window and stays in torch. The export is
cached under `$DIMITRA_CACHE` (default `~/.cache/dimitra`), keyed by a hash of the weights,
so a model is exported once per machine (about a second).
"""

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ...retarget.atomic_file import atomic_path
from .cmdt import CMDT, SamplingDenoiser

INPUTS = ("x_t", "t", "identity", "context", "context_mask", "drop_identity", "audio_h")
OPSET = 17


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dimitra"
    return Path(os.environ.get("DIMITRA_CACHE", default))


def weights_digest(model: CMDT) -> str:
    digest = hashlib.sha256(repr(model.config.to_dict()).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_denoiser(model: CMDT, path: str | Path) -> Path:
    """Write the denoiser as ONNX, any batch size and window length (written atomically)."""
    config = model.config
    batch, length, dims = 2, config.window, config.motion_dim
    example = (torch.zeros(batch, length, dims), torch.zeros(batch, dtype=torch.long),
               torch.zeros(batch, config.identity_dim), torch.zeros(batch, length, dims),
               torch.zeros(batch, length), torch.zeros(batch, dtype=torch.bool),
               torch.zeros(batch, length, config.width))
    per_frame = {0: "batch", 1: "frames"}
    axes = {"x_t": per_frame, "t": {0: "batch"}, "identity": {0: "batch"}, "context": per_frame,
            "context_mask": per_frame, "drop_identity": {0: "batch"}, "audio_h": per_frame,
            "x0": per_frame}
    was_training = model.training
    model.eval()
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (deprecated, but it needs no onnxscript) handles this model.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(SamplingDenoiser(model), example, str(tmp), dynamo=False, input_names=list(INPUTS),
                          output_names=["x0"], dynamic_axes=axes, opset_version=OPSET)
    model.train(was_training)
    return Path(path)


class OnnxDenoiser:
    """Callable like `SamplingDenoiser`: torch tensors in, the x0 estimate (B, L, D) as a tensor out."""

    def __init__(self, model: CMDT, device: str = "cpu", threads: int | None = None):
        import onnxruntime

        path = cache_dir() / "onnx" / f"cmdt-{weights_digest(model)}.onnx"
        if not path.is_file():
            export_denoiser(model, path)
        options = onnxruntime.SessionOptions()
        # Small matrices: past a few threads, synchronising them costs more than they add
        # (1.9 s against torch's 0.8 s for 60 s of audio with 16 threads on a 16-core host).
        options.intra_op_num_threads = threads or min(4, torch.get_num_threads())
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError("--runtime onnx on cuda needs onnxruntime-gpu "
                                   "(pip install onnxruntime-gpu); or use --runtime torch")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.path = path

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: value.detach().cpu().numpy() for name, value in zip(INPUTS, inputs)}
        feeds["t"] = feeds["t"].astype(np.int64)
        return torch.from_numpy(self.session.run(None, feeds)[0])
