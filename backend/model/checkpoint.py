"""Model files: safetensors with the network weights, the motion space and JSON metadata.

Never pickle: a model file holds tensors and strings only, so loading one runs no code.
Reading one needs no torch: `load_bundle(..., network=False)` gives the motion space and the
network's configuration for the onnxruntime path; the torch network is built only when asked.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

from ...retarget.atomic_file import atomic_path
from .config import CMDTConfig
from .lips_head import LipsHead
from .motion_space import MotionSpace

if TYPE_CHECKING:
    from .cmdt import CMDT

DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "cmdt_default.safetensors"


@dataclass
class ModelBundle:
    model: "CMDT | None"               # the torch network; None when loaded without it
    motion_space: MotionSpace
    feature_extractor: str
    meta: dict = field(default_factory=dict)
    config: CMDTConfig | None = None   # the network's shape (model.config when there is one)
    path: Path | None = None           # the model file it came from
    lips_head: LipsHead | None = None  # the lower face from the features, when the file has one

    def __post_init__(self):
        if self.config is None and self.model is not None:
            self.config = self.model.config

    def torch_network(self, device: str = "cpu") -> "CMDT":
        """The torch network, built from the file on first use (imports torch)."""
        if self.model is None:
            self.model = _load_network(self.path, self.config)
        return self.model.to(device).eval()


def save_bundle(path: str | Path, model: "CMDT", motion_space: MotionSpace, feature_extractor: str,
                meta: dict | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"model.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: torch.from_numpy(v) for k, v in motion_space.to_arrays().items()})
    header = {"config": json.dumps(model.config.to_dict()), "feature_extractor": feature_extractor,
              "meta": json.dumps(meta or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def load_bundle(path: str | Path = DEFAULT_MODEL, device: str = "cpu", network: bool = True
                ) -> ModelBundle:
    """The model file at `path`; network=False leaves the torch network unbuilt (no torch
    import: the onnxruntime path needs only the motion space and the configuration)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; train one with `dimitra train` "
                                "or use the shipped default (omit --model)")
    with safe_open(str(path), framework="numpy") as handle:
        header = handle.metadata() or {}
        if "config" not in header:
            raise ValueError(f"{path}: not a Dimitra model file (no config in its header)")
        space = MotionSpace.from_arrays({k: np.asarray(handle.get_tensor(k)) for k in handle.keys()
                                         if k.startswith("motion_space.")})
        lips_head = None
        if "lips_head" in header:
            lips_head = LipsHead.from_arrays({k: np.asarray(handle.get_tensor(k))
                                              for k in handle.keys() if k.startswith("lips_head.")},
                                             json.loads(header["lips_head"]))
    config_dict = json.loads(header["config"])
    config_dict["region_dims"] = tuple(config_dict["region_dims"])
    bundle = ModelBundle(None, space, header["feature_extractor"],
                         json.loads(header.get("meta", "{}")), CMDTConfig(**config_dict), path,
                         lips_head)
    if network:
        bundle.torch_network(device)
    return bundle


def save_with_lips_head(model_path: str | Path, head: LipsHead, out: str | Path,
                        meta: dict | None = None) -> Path:
    """The model file at `model_path` with `head` added (or replacing its head), as `out`;
    `meta` entries are merged into the file's metadata. Numpy only: tensors are copied as
    they are."""
    from safetensors.numpy import save_file

    with safe_open(str(model_path), framework="numpy") as handle:
        header = dict(handle.metadata() or {})
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if not k.startswith("lips_head.")}
    tensors.update(head.to_arrays())
    header["lips_head"] = json.dumps(head.header())
    header["meta"] = json.dumps({**json.loads(header.get("meta", "{}")), **(meta or {})})
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return out


def _load_network(path: Path, config: CMDTConfig) -> "CMDT":
    from safetensors.torch import load_file

    from .cmdt import CMDT

    tensors = load_file(str(path), device="cpu")
    model = CMDT(config)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return model.eval()
