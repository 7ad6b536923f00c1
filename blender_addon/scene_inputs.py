"""What a Generate reads from the scene: the face, its armature, the audio and the start frame.

Everything is checked here, on the main thread, before a job starts: a problem becomes one
`InputError` whose message names the input and says what to do, and the scene is untouched.
"""

from dataclasses import dataclass
from pathlib import Path

import bpy

from ..retarget.key_names import REGIONS
from ..retarget.rig import RigDescription, RigError
from . import blender_api
from .rig_reader import find_armature, read_rig


class InputError(ValueError):
    """A setting that cannot be generated from; the message names it and what to do."""


@dataclass
class GenerateSettings:
    """Every setting of a Generate, as the panel and `bpy.ops.dimitra.generate` give them."""
    mesh: str = ""                 # face mesh name(s), comma-separated; "" = the active object
    armature: str = ""             # "" = the armature deforming the face, if any
    audio_strip: str = ""          # a sound strip of the scene's sequencer ...
    audio_file: str = ""           # ... or an audio file (then a strip is added at start_frame)
    start_frame: int | None = None  # None: the strip's start, else the scene's start frame
    server: str = ""               # "" = the preferences' backend (local or remote)
    server_key: str = ""           # CurveZMQ: the server's public key file
    client_key: str = ""           # CurveZMQ: this client's `.key_secret` file
    expressiveness: float = 1.5
    head_motion: float = 1.0
    blink: bool = True
    seed: int = 0
    strength: float = 1.0          # scales the face's shape keys, jaw and eyes (re-solvable)
    mouth: float = 1.0             # per-region strengths, as `dimitra bake --mouth` ...: each
    eyes: float = 1.0              # face region times `strength`; head: the head and neck
    gaze: float = 1.0              # bones (all re-solvable)
    brows: float = 1.0
    head: float = 1.0
    smoothing: float = 0.03        # seconds (Gaussian sigma) (re-solvable)
    keys: str = "auto"             # key set: auto, arkit, visemes, all (retarget.solve.KEY_SETS)

    def solve_strengths(self) -> dict[str, float]:
        """retarget.solve.SolveOptions.strength: each face region times `strength`; the head."""
        face = {region: float(self.strength) * float(getattr(self, region))
                for region in REGIONS}
        return {**face, "head": float(self.head)}

    def generation_options(self) -> dict:
        """The `animate` options of docs/PROTOCOL.md."""
        return {"expressiveness": float(self.expressiveness),
                "head_motion": float(self.head_motion), "blink": bool(self.blink),
                "seed": int(self.seed)}


@dataclass
class Audio:
    name: str                      # for the Action's name and messages
    path: Path | None              # the file on disk, or None for a packed sound
    data: bytes | None             # the packed sound's bytes
    strip_name: str | None         # the strip it came from, None for a file
    start_frame: int
    warnings: tuple[str, ...] = ()

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise InputError(f"audio {self.path}: cannot read it ({error.strerror}); "
                             "check the file") from error


@dataclass
class FaceInputs:
    meshes: list                   # bpy mesh objects
    armature: object | None        # bpy armature object or None
    rig: RigDescription


def face_inputs(settings: GenerateSettings, context) -> FaceInputs:
    """The face meshes, armature and rig description a Generate animates."""
    if settings.mesh.strip():
        meshes = []
        for name in (n.strip() for n in settings.mesh.split(",") if n.strip()):
            obj = bpy.data.objects.get(name)
            if obj is None or obj.type != "MESH":
                raise InputError(f"face mesh {name!r}: no mesh object of that name in this "
                                 "file; pick the face mesh in the Dimitra panel")
            meshes.append(obj)
    else:
        active = context.view_layer.objects.active if context.view_layer else None
        if active is None or active.type != "MESH":
            raise InputError("no face mesh: pick the face mesh in the Dimitra panel, or select "
                             "it and make it active")
        meshes = [active]
    armature = None
    if settings.armature.strip():
        armature = bpy.data.objects.get(settings.armature.strip())
        if armature is None or armature.type != "ARMATURE":
            raise InputError(f"armature {settings.armature!r}: no armature of that name; pick "
                             "one in the Dimitra panel or leave it empty")
    for obj in meshes:
        check_editable(obj.data.shape_keys, f"the shape keys of {obj.name!r}")
    try:
        if armature is None:
            armature = find_armature(meshes)
        if armature is not None:
            check_editable(armature, f"armature {armature.name!r}")
        rig = read_rig(meshes, armature)
    except RigError as error:
        raise InputError(str(error)) from error
    return FaceInputs(meshes, armature, rig)


def check_editable(id_data, what: str) -> None:
    """Linked data cannot take new keys: say so before anything is touched."""
    if id_data is None:
        return
    library = getattr(id_data, "library", None)
    if library is not None:
        raise InputError(f"{what} are linked from {library.filepath}: keys cannot be added "
                         "to linked data. Make a library override (Object > Library Override "
                         "> Make) or make it local, then Generate again")


def audio_input(settings: GenerateSettings, scene) -> Audio:
    """The sound to send: a sequencer strip's, or a file's."""
    if settings.audio_strip.strip():
        return _strip_audio(settings.audio_strip.strip(), settings.start_frame, scene)
    if settings.audio_file.strip():
        path = Path(bpy.path.abspath(settings.audio_file.strip()))
        if not path.is_file():
            raise InputError(f"audio file {path}: no such file; pick the speech file again")
        start = scene.frame_start if settings.start_frame is None else settings.start_frame
        return Audio(path.stem, path, None, None, int(start))
    raise InputError("no audio: pick a sound strip of the sequencer or an audio file in the "
                     "Dimitra panel")


def _strip_audio(name: str, start_frame: int | None, scene) -> Audio:
    strips = blender_api.sequences(scene) if scene.sequence_editor else []
    strip = next((s for s in strips if s.name == name), None)
    if strip is None:
        raise InputError(f"sound strip {name!r}: no strip of that name in the sequencer of "
                         f"scene {scene.name!r}; pick the strip again")
    if strip.type != "SOUND" or strip.sound is None:
        raise InputError(f"strip {name!r} is a {strip.type.lower()} strip, not a sound; pick "
                         "a sound strip")
    sound = strip.sound
    warnings = []
    if strip.mute:
        warnings.append(f"sound strip {name!r} is muted: the animation follows it, but you "
                        "will not hear it until it is unmuted")
    # The strip's frame_start is where the sound's first sample plays (trimming aside).
    start = int(strip.frame_start) if start_frame is None else int(start_frame)
    if sound.packed_file is not None:
        return Audio(Path(sound.filepath).stem or sound.name, None,
                     bytes(sound.packed_file.data), name, start, tuple(warnings))
    path = Path(bpy.path.abspath(sound.filepath, library=sound.library))
    if not path.is_file():
        raise InputError(f"sound strip {name!r}: its file {path} is missing; relink it "
                         "(File > External Data > Find Missing Files) or pick the file")
    return Audio(path.stem, path, None, name, start, tuple(warnings))
