"""Model files: safetensors with the network weights, the motion space and JSON metadata.

Never pickle: a model file holds tensors and strings only, so loading one runs no code.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ...retarget.atomic_file import atomic_path
from .cmdt import CMDT, CMDTConfig
from .motion_space import MotionSpace

DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "cmdt_default.safetensors"


@dataclass
class ModelBundle:
    model: CMDT
    motion_space: MotionSpace
    feature_extractor: str
    meta: dict = field(default_factory=dict)


def save_bundle(path: str | Path, model: CMDT, motion_space: MotionSpace, feature_extractor: str,
                meta: dict | None = None) -> Path:
    path = Path(path)
    tensors = {f"model.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: torch.from_numpy(v) for k, v in motion_space.to_arrays().items()})
    header = {"config": json.dumps(model.config.to_dict()), "feature_extractor": feature_extractor,
              "meta": json.dumps(meta or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def load_bundle(path: str | Path = DEFAULT_MODEL, device: str = "cpu") -> ModelBundle:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; train one with `dimitra train` "
                                "or use the shipped default (omit --model)")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if "config" not in header:
        raise ValueError(f"{path}: not a Dimitra model file (no config in its header)")
    config_dict = json.loads(header["config"])
    config_dict["region_dims"] = tuple(config_dict["region_dims"])
    tensors = load_file(str(path), device="cpu")
    model = CMDT(CMDTConfig(**config_dict))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    model.to(device).eval()
    space = MotionSpace.from_arrays({k: v.numpy() for k, v in tensors.items()
                                     if k.startswith("motion_space.")})
    return ModelBundle(model, space, header["feature_extractor"], json.loads(header.get("meta", "{}")))
