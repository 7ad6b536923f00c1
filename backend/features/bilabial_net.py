"""The learned bilabial detector in torch: its network, training-side detector, file format
and ONNX export. Generation runs the export on onnxruntime (backend.features.bilabials), so
it needs no torch; this module is for training and exporting."""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ...retarget.atomic_file import atomic_path


class BilabialNet(nn.Module):
    """Speech features (B, T, F) -> (B, T) logits of "inside a bilabial"; each frame sees
    ±6 frames (±240 ms at 25 fps). Features are standardised with the training set's
    statistics, kept as buffers so the file is self-contained."""

    def __init__(self, feature_dim: int, width: int = 64, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.net = nn.Sequential(
            nn.Conv1d(feature_dim, width, 5, padding=2), nn.GELU(), nn.Dropout(dropout),
            nn.Conv1d(width, width, 5, padding=4, dilation=2), nn.GELU(), nn.Dropout(dropout),
            nn.Conv1d(width, 1, 3, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.feature_mean) / self.feature_std
        return self.net(x.transpose(1, 2))[:, 0]


class BilabialDetector:
    """(T, F) speech features at 25 fps -> (T,) float32, 1 on frames inside a p, b or m.

    The mean probability of a few nets trained alike from different seeds: one net's dev
    scores move by several points from seed to seed (a small training set), their mean's less.
    """

    def __init__(self, nets: list[BilabialNet], feature_extractor: str, threshold: float = 0.5):
        self.nets = [net.eval() for net in nets]
        self.feature_extractor = feature_extractor
        self.threshold = threshold

    @torch.no_grad()
    def probability(self, features: np.ndarray) -> np.ndarray:
        """(T, F) -> (T,) float32 mean probability of a bilabial."""
        out = np.zeros(len(features), np.float32)
        # 9000 frames (6 min) at a time: bounded memory for an hour; the 12-frame overlap
        # covers the receptive field, so the pieces join exactly.
        piece, margin = 9000, 12
        for start in range(0, len(features), piece):
            lo, hi = max(0, start - margin), min(len(features), start + piece + margin)
            x = torch.from_numpy(np.ascontiguousarray(features[lo:hi], dtype=np.float32))[None]
            probability = torch.stack([torch.sigmoid(net(x))[0] for net in self.nets]).mean(0)
            kept = probability[start - lo:start - lo + min(piece, len(features) - start)]
            out[start:start + len(kept)] = kept.numpy()
        return out

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (self.probability(features) > self.threshold).astype(np.float32)


def save_detector(path: str | Path, detector: BilabialDetector, meta: dict | None = None) -> Path:
    first = detector.nets[0]
    header = {"feature_extractor": detector.feature_extractor, "threshold": str(detector.threshold),
              "feature_dim": str(first.feature_mean.numel()), "width": str(first.net[0].out_channels),
              "members": str(len(detector.nets)), "meta": json.dumps(meta or {})}
    tensors = {f"net{i}.{name}": value.detach().float().cpu().contiguous()
               for i, net in enumerate(detector.nets) for name, value in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def load_detector_file(path: str | Path) -> BilabialDetector:
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if "feature_extractor" not in header:
        raise ValueError(f"{path}: not a bilabial detector file (no feature_extractor in its header)")
    tensors = load_file(str(path))
    nets = []
    for i in range(int(header["members"])):
        net = BilabialNet(int(header["feature_dim"]), int(header["width"]))
        prefix = f"net{i}."
        net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        nets.append(net)
    return BilabialDetector(nets, header["feature_extractor"], float(header["threshold"]))


def export_detector(detector: BilabialDetector, path: str | Path, source_digest: str = "") -> Path:
    """The detector's mean probability as ONNX: features (1, T, F) -> (1, T), with its
    feature extractor, threshold and the sha256 of the file it was loaded from in the file's
    metadata (written atomically)."""
    import onnx

    class MeanProbability(nn.Module):
        def __init__(self, nets):
            super().__init__()
            self.nets = nn.ModuleList(nets)

        def forward(self, features):
            return torch.stack([torch.sigmoid(net(features)) for net in self.nets]).mean(0)

    example = torch.zeros(1, 50, detector.nets[0].feature_mean.numel())
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(MeanProbability(detector.nets).eval(), example, str(tmp), dynamo=False,
                          input_names=["features"], output_names=["probability"],
                          dynamic_axes={"features": {1: "frames"}, "probability": {1: "frames"}},
                          opset_version=17)
        graph = onnx.load(str(tmp))
        for key, value in (("feature_extractor", detector.feature_extractor),
                           ("threshold", repr(detector.threshold)),
                           ("source_sha256", source_digest)):
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, str(tmp))
    return Path(path)
