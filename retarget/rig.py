"""A face rig described without Blender: what the correspondence and the solve need.

Everything is in the rig's scene space (Blender world space: the units and axes of the scene,
whatever they are; the solve never assumes metres, Z-up or a front direction).
The face surface may join several meshes (head, teeth, eyes, lashes): their vertices are
concatenated in `mesh_names` order and a shape key's deltas are zero on meshes without it.
Saved as a plain `.npz` (no pickle), see docs/FORMATS.md.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic_file import atomic_open

FORMAT_VERSION = 1
BONE_ROLES = ("head", "neck", "jaw", "eye_left", "eye_right")


class RigError(ValueError):
    """A rig that cannot be retargeted onto; the message says what is missing."""


@dataclass
class ShapeKey:
    name: str                      # the key's own name on the rig (any style)
    deltas: np.ndarray             # (V, 3) float64 scene units, key minus basis
    slider_min: float = 0.0
    slider_max: float = 1.0
    meshes: tuple[str, ...] = ()   # every mesh carrying a key of this name (all get the weight)


@dataclass
class Bone:
    name: str
    rest: np.ndarray               # (4, 4) bone rest matrix in scene space (armature world @ local)
    parent: str | None = None
    face_weights: np.ndarray | None = None  # (V,) how much it deforms each face vertex, or None

    @property
    def rest_rotation(self) -> np.ndarray:
        """(3, 3) orthonormal rest orientation (scale removed)."""
        axes = self.rest[:3, :3]
        return axes / np.linalg.norm(axes, axis=0, keepdims=True)

    @property
    def head(self) -> np.ndarray:
        return self.rest[:3, 3]


@dataclass
class RigDescription:
    vertices: np.ndarray                   # (V, 3) float64 rest positions, scene space
    triangles: np.ndarray                  # (F, 3) int32 indices into vertices
    shape_keys: list[ShapeKey] = field(default_factory=list)
    bones: dict[str, Bone] = field(default_factory=dict)   # role (BONE_ROLES) -> bone
    fps: float = 24.0
    mesh_names: tuple[str, ...] = ()
    mesh_vertex_counts: tuple[int, ...] = ()
    armature: str | None = None

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.triangles = np.asarray(self.triangles, dtype=np.int32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise RigError(f"rig vertices must be (V, 3), got {self.vertices.shape}")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3 or not len(self.triangles):
            raise RigError("the rig's face mesh has no faces; pick the mesh of the face")
        if self.triangles.min() < 0 or self.triangles.max() >= len(self.vertices):
            raise RigError("rig triangles index vertices that do not exist")
        for key in self.shape_keys:
            if key.deltas.shape != self.vertices.shape:
                raise RigError(f"shape key {key.name!r} has deltas {key.deltas.shape}, "
                               f"the mesh has {self.vertices.shape}")
        unknown = set(self.bones) - set(BONE_ROLES)
        if unknown:
            raise RigError(f"unknown bone roles {sorted(unknown)}; known: {BONE_ROLES}")

    @property
    def key_names(self) -> list[str]:
        return [key.name for key in self.shape_keys]

    def key_deltas(self) -> np.ndarray:
        """(K, V, 3) all shape-key deltas."""
        if not self.shape_keys:
            return np.zeros((0, *self.vertices.shape))
        return np.stack([key.deltas for key in self.shape_keys])

    def size(self) -> float:
        """The diagonal of the face surface's bounding box (scene units)."""
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))


def save_rig(path: str | Path, rig: RigDescription) -> Path:
    """Write the description as an `.npz`, atomically."""
    path = Path(path)
    arrays = {"vertices": rig.vertices, "triangles": rig.triangles,
              "key_deltas": rig.key_deltas().astype(np.float32)}
    meta = {"format_version": FORMAT_VERSION, "fps": rig.fps, "armature": rig.armature,
            "mesh_names": list(rig.mesh_names),
            "mesh_vertex_counts": list(rig.mesh_vertex_counts),
            "shape_keys": [{"name": k.name, "slider_min": k.slider_min,
                            "slider_max": k.slider_max, "meshes": list(k.meshes)}
                           for k in rig.shape_keys],
            "bones": {role: {"name": b.name, "parent": b.parent,
                             "has_face_weights": b.face_weights is not None}
                      for role, b in rig.bones.items()}}
    for role, bone in rig.bones.items():
        arrays[f"bone_rest.{role}"] = bone.rest
        if bone.face_weights is not None:
            arrays[f"bone_weights.{role}"] = bone.face_weights.astype(np.float32)
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_open(path) as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_rig(path: str | Path) -> RigDescription:
    path = Path(path)
    if not path.is_file():
        raise RigError(f"{path}: no such rig description file")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            deltas = data["key_deltas"].astype(np.float64)
            keys = [ShapeKey(k["name"], deltas[i], k["slider_min"], k["slider_max"],
                             tuple(k["meshes"])) for i, k in enumerate(meta["shape_keys"])]
            bones = {role: Bone(b["name"], data[f"bone_rest.{role}"], b["parent"],
                                data[f"bone_weights.{role}"].astype(np.float64)
                                if b["has_face_weights"] else None)
                     for role, b in meta["bones"].items()}
            return RigDescription(data["vertices"], data["triangles"], keys, bones, meta["fps"],
                                  tuple(meta["mesh_names"]), tuple(meta["mesh_vertex_counts"]),
                                  meta["armature"])
    except (KeyError, OSError, ValueError) as error:
        if isinstance(error, RigError):
            raise
        raise RigError(f"{path}: not a rig description file ({error}); "
                       "see docs/FORMATS.md") from error
