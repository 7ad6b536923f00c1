"""The cMDT on onnxruntime: the audio encoder and the denoiser exported to ONNX, so sampling
needs no torch (`MotionGenerator(..., runtime="onnx")`, the default on a CPU).

The audio encoder runs once per window; the denoiser `steps` times (twice with guidance).
The shipped model's export lies beside it (`weights/cmdt_default-onnx/`, made by
`python -m dimitra.backend.model.onnx_denoiser`, which also exports the shipped bilabial
detectors); another model is exported on first use into `$DIMITRA_CACHE` (default
`~/.cache/dimitra`), which needs torch once. Each export records the sha256 of the model file
it came from (`model.sha256`, of the network's configuration and weights), so a retrained
model never runs on a stale export.
"""

import argparse
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from ...retarget.atomic_file import atomic_path

DENOISER_INPUTS = ("x_t", "t", "identity", "context", "context_mask", "drop_identity", "audio_h")
AUDIO_INPUTS = ("audio", "drop")
OPSET = 17
DIGEST_FILE = "model.sha256"   # the network_digest of the model an export was made from


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dimitra"
    return Path(os.environ.get("DIMITRA_CACHE", default))


def cpu_threads() -> int:
    """Threads for onnxruntime: OMP_NUM_THREADS when set (as torch honours it), else up to 4.
    Small matrices: past a few threads, synchronising them costs more than they add (1.9 s
    against torch's 0.8 s for 60 s of audio with 16 threads on a 16-core host)."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return min(4, os.cpu_count() or 1)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def network_digest(model_path: str | Path) -> str:
    """sha256 of what an export is made from: the network's configuration and weights (the
    file's `model.*` tensors), not the rest of the file, so adding other parts to a model file
    (a lips head, metadata) keeps its export valid."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(model_path), framework="numpy") as handle:
        digest.update((handle.metadata() or {}).get("config", "").encode())
        for name in sorted(k for k in handle.keys() if k.startswith("model.")):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(handle.get_tensor(name)).tobytes())
    return digest.hexdigest()


def shipped_export(model_path: Path) -> Path:
    """Where the export of a model file is shipped: beside it, `<stem>-onnx/`."""
    return model_path.parent / f"{model_path.stem}-onnx"


def export_network(model, folder: str | Path, digest: str) -> Path:
    """Write `audio.onnx` and `denoiser.onnx` of a torch CMDT into folder (any batch size and
    window length; each written atomically), then `model.sha256`, the model's
    `network_digest`."""
    import torch

    from .cmdt import SamplingDenoiser

    config, folder = model.config, Path(folder)
    batch, length, dims = 2, config.window, config.motion_dim
    per_frame = {0: "batch", 1: "frames"}
    graphs = {
        "audio.onnx": (model.audio, (torch.zeros(batch, length, config.audio_dim),
                                     torch.zeros(batch, dtype=torch.bool)),
                       AUDIO_INPUTS, {"audio": per_frame, "drop": {0: "batch"}, "audio_h": per_frame},
                       "audio_h"),
        "denoiser.onnx": (SamplingDenoiser(model), (
            torch.zeros(batch, length, dims), torch.zeros(batch, dtype=torch.long),
            torch.zeros(batch, config.identity_dim), torch.zeros(batch, length, dims),
            torch.zeros(batch, length), torch.zeros(batch, dtype=torch.bool),
            torch.zeros(batch, length, config.width)), DENOISER_INPUTS,
            {"x_t": per_frame, "t": {0: "batch"}, "identity": {0: "batch"}, "context": per_frame,
             "context_mask": per_frame, "drop_identity": {0: "batch"}, "audio_h": per_frame,
             "x0": per_frame}, "x0"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    for name, (module, example, inputs, axes, output) in graphs.items():
        with atomic_path(folder / name) as tmp, torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter (deprecated, but it needs no onnxscript) handles this model.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, example, str(tmp), dynamo=False, input_names=list(inputs),
                              output_names=[output], dynamic_axes=axes, opset_version=OPSET)
    model.train(was_training)
    with atomic_path(folder / DIGEST_FILE) as tmp:   # last: it vouches for both graphs
        tmp.write_text(digest + "\n")
    return folder


class OnnxNetwork:
    """The network's two calls on onnxruntime, numpy in and out (see `TorchNetwork`)."""

    def __init__(self, bundle, device: str = "cpu", threads: int | None = None):
        import onnxruntime

        folder = find_or_export(bundle)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError("--runtime onnx on cuda needs onnxruntime-gpu "
                                   "(pip install onnxruntime-gpu); or use --runtime torch")
            providers.insert(0, "CUDAExecutionProvider")
        self.audio_session = onnxruntime.InferenceSession(str(folder / "audio.onnx"), options,
                                                          providers=providers)
        self.session = onnxruntime.InferenceSession(str(folder / "denoiser.onnx"), options,
                                                    providers=providers)
        self.path = folder

    def encode_audio(self, audio: np.ndarray, drop: np.ndarray) -> np.ndarray:
        """audio (B, L, F) float32, drop (B,) bool -> (B, L, width) float32."""
        return self.audio_session.run(None, {"audio": audio, "drop": drop})[0]

    def denoise(self, *inputs: np.ndarray) -> np.ndarray:
        """DENOISER_INPUTS as numpy arrays -> the x0 estimate (B, L, D) float32."""
        feeds = dict(zip(DENOISER_INPUTS, inputs))
        feeds["t"] = feeds["t"].astype(np.int64)
        return self.session.run(None, feeds)[0]


def find_or_export(bundle) -> Path:
    """The folder with the model's `audio.onnx` and `denoiser.onnx`: shipped beside the model
    file, or in the cache, or exported into the cache now (needs torch)."""
    digest = network_digest(bundle.path)
    for folder in (shipped_export(bundle.path), cache_dir() / "onnx" / digest[:16]):
        if _export_digest(folder) == digest:
            return folder
    try:
        import torch  # noqa: F401  (exporting needs it)
    except ImportError:
        raise RuntimeError(f"{bundle.path} has no ONNX export beside it and torch is not "
                           "installed to make one; run `python -m dimitra.backend.model.onnx_denoiser "
                           f"{bundle.path}` where torch is") from None
    return export_network(bundle.torch_network("cpu"), cache_dir() / "onnx" / digest[:16], digest)


def _export_digest(folder: Path) -> str | None:
    """The model digest folder's export was made from, or None (no complete export there)."""
    if not all((folder / name).is_file() for name in ("audio.onnx", "denoiser.onnx", DIGEST_FILE)):
        return None
    return (folder / DIGEST_FILE).read_text().strip()


def main(argv: list[str] | None = None) -> None:
    """Export a model (default: the shipped one) beside its file, and the shipped bilabial
    detectors beside theirs."""
    from ..features.bilabial_net import export_detector, load_detector_file
    from .checkpoint import DEFAULT_MODEL, load_bundle

    parser = argparse.ArgumentParser(prog="python -m dimitra.backend.model.onnx_denoiser",
                                     description=main.__doc__)
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    args = parser.parse_args(argv)
    path = Path(args.model)
    bundle = load_bundle(path)
    print(export_network(bundle.model, shipped_export(path), network_digest(path)))
    for detector in sorted(path.parent.glob("bilabials_*.safetensors")):
        print(export_detector(load_detector_file(detector), detector.with_suffix(".onnx"),
                              file_digest(detector)))


if __name__ == "__main__":
    main()
