"""What `dimitra bake` is asked for, beyond the lines: no bpy here, so a Ray driver
(backend/scale) can build the settings its workers receive without importing Blender."""

from dataclasses import dataclass, field
from pathlib import Path

from ..retarget.solve import SolveOptions


@dataclass
class BakeSettings:
    meshes: list[str] | None = None          # face mesh names (default: found automatically)
    armature: str | None = None
    solve: SolveOptions = field(default_factory=SolveOptions)
    start_frame: int | None = None           # default: the scene's start frame
    correspondence: str | Path | None = None  # reuse this file if it exists, else save it there
    motion: str | Path | None = None         # bake this motion file instead of generating
    generation: dict = field(default_factory=dict)   # GenerationOptions fields
    model: str | Path | None = None
