"""Curves for game engines: motion -> ARKit-52 or viseme weights plus head and eye rotations.

No rig is needed: the motion is solved (retarget.solve) onto a built-in face, the sample face
of retarget/sample_face.py with its 52 ARKit keys, or the same face with the 15 Oculus visemes
made as mixtures of those keys. The weights and the head and eye bones' rotations are then
written as a Live Link Face CSV (what Unreal's Live Link Face importer and MetaHuman tools
read) or as JSON (frames x named weights, for Unity, three.js and web avatars). Formats:
docs/FORMATS.md, "Curves".
"""

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .atomic_file import atomic_open
from .correspond import from_vertices
from .face.topology import NUM_LANDMARKS
from .key_names import ARKIT_52, VISEMES
from .motion_file import Motion
from .rig import RigDescription, ShapeKey
from .sample_face import SCENE_FROM_CANONICAL, build_sample_face
from .solve import SolveOptions, solve

CURVE_SETS = ("arkit", "visemes")
CURVE_FORMATS = (".csv", ".json")
# Apple's ARKit order as Live Link Face writes its columns (JawRight before JawLeft, MouthRight
# before MouthLeft), in ARKit's own spelling; the CSV capitalises the first letter.
LIVE_LINK_ORDER = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward",
    "jawRight", "jawLeft", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRight",
    "mouthLeft", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
    "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut")
assert sorted(LIVE_LINK_ORDER) == sorted(ARKIT_52)
# Radians; "Left" is the subject's left eye. Signs: docs/FORMATS.md.
ROTATION_NAMES = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
                  "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
# The 15 Oculus visemes as mixtures of the sample face's ARKit shapes (viseme_sil is the rest
# pose: it takes what the others leave, so a frame's visemes sum to at least 1).
VISEME_MIXES = {
    "viseme_sil": {},
    "viseme_PP": {"mouthClose": .6, "mouthPressLeft": .5, "mouthPressRight": .5},
    "viseme_FF": {"mouthRollLower": .6, "mouthUpperUpLeft": .2, "mouthUpperUpRight": .2,
                  "jawOpen": .1},
    "viseme_TH": {"jawOpen": .2, "mouthLowerDownLeft": .2, "mouthLowerDownRight": .2},
    "viseme_DD": {"jawOpen": .3, "mouthStretchLeft": .2, "mouthStretchRight": .2},
    "viseme_kk": {"jawOpen": .35, "mouthStretchLeft": .3, "mouthStretchRight": .3},
    "viseme_CH": {"mouthFunnel": .5, "jawOpen": .25},
    "viseme_SS": {"mouthSmileLeft": .3, "mouthSmileRight": .3, "jawOpen": .15},
    "viseme_nn": {"jawOpen": .25, "mouthClose": .1},
    "viseme_RR": {"mouthPucker": .4, "jawOpen": .25},
    "viseme_aa": {"jawOpen": .8, "mouthLowerDownLeft": .3, "mouthLowerDownRight": .3},
    "viseme_E": {"jawOpen": .4, "mouthSmileLeft": .4, "mouthSmileRight": .4},
    "viseme_I": {"jawOpen": .25, "mouthSmileLeft": .5, "mouthSmileRight": .5},
    "viseme_O": {"jawOpen": .5, "mouthFunnel": .6},
    "viseme_U": {"jawOpen": .2, "mouthPucker": .8},
}
assert tuple(VISEME_MIXES) == VISEMES


class CurvesError(ValueError):
    """A curves request that cannot be written; the message names the input and what to do."""


@dataclass
class Curves:
    """Weights and rotations per frame; frame 0 is the motion's first frame."""

    kind: str                      # "arkit" or "visemes"
    fps: float
    names: tuple[str, ...]         # LIVE_LINK_ORDER or VISEMES
    weights: np.ndarray            # (T, len(names)) in [0, 1]
    rotations: np.ndarray          # (T, 9) radians, ROTATION_NAMES

    @property
    def frame_count(self) -> int:
        return len(self.weights)


def builtin_face(kind: str) -> RigDescription:
    """The sample face with the ARKit-52 keys ("arkit") or the 15 visemes ("visemes")."""
    if kind not in CURVE_SETS:
        raise CurvesError(f"--curves {kind}: choose {' or '.join(CURVE_SETS)}")
    rig = build_sample_face().rig
    if kind == "arkit":
        return rig
    deltas = {key.name: key.deltas for key in rig.shape_keys}
    keys = [ShapeKey(name, sum((weight * deltas[source] for source, weight in mix.items()),
                               np.zeros_like(rig.vertices)), 0.0, 1.0, key_meshes(rig))
            for name, mix in VISEME_MIXES.items()]
    return replace(rig, shape_keys=keys)


def key_meshes(rig: RigDescription) -> tuple[str, ...]:
    return rig.shape_keys[0].meshes if rig.shape_keys else rig.mesh_names


def solve_curves(motion: Motion, kind: str = "arkit", options: SolveOptions | None = None
                 ) -> Curves:
    """The motion's curves at its own frame rate (resample the motion first for another)."""
    face = replace(builtin_face(kind), fps=motion.fps)
    landmarks_on_vertices = from_vertices(face, np.arange(NUM_LANDMARKS))
    options = replace(options or SolveOptions(), keys="all")   # the face carries one set
    animation = solve(face, landmarks_on_vertices, motion, options)
    names = LIVE_LINK_ORDER if kind == "arkit" else VISEMES
    weights = np.stack([animation.shape_keys[name] for name in names], 1)
    if kind == "visemes":
        sil = names.index("viseme_sil")
        weights[:, sil] = np.clip(1.0 - np.delete(weights, sil, axis=1).sum(1), 0.0, 1.0)
    return Curves(kind, motion.fps, names, np.clip(weights, 0.0, 1.0),
                  _rotations(face, animation.bone_rotations))


def _rotations(face: RigDescription, bone_rotations: dict) -> np.ndarray:
    """(T, 9) head yaw/pitch/roll, then each eye's relative to the head, in upright axes."""
    def world(role: str) -> np.ndarray:
        bone = face.bones[role]
        return bone.rest_rotation @ bone_rotations[bone.name] @ bone.rest_rotation.T

    # The head bone's parent is the neck; an eye bone's rotation is already the head's.
    columns = [yaw_pitch_roll(world("neck") @ world("head"))]
    columns += [yaw_pitch_roll(world(role)) for role in ("eye_left", "eye_right")]
    return np.concatenate(columns, 1)


def yaw_pitch_roll(scene_rotation: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotation in the sample face's scene axes -> (T, 3) yaw, pitch, roll (radians).

    Upright axes (x toward the subject's left, y up, z toward the camera), R = Ry(yaw) @
    Rx(pitch) @ Rz(roll): yaw > 0 turns toward the subject's left, pitch > 0 looks down,
    roll > 0 tilts the head toward the subject's right shoulder.
    """
    upright = SCENE_FROM_CANONICAL.T @ scene_rotation @ SCENE_FROM_CANONICAL
    pitch = np.arcsin(np.clip(-upright[:, 1, 2], -1.0, 1.0))
    yaw = np.arctan2(upright[:, 0, 2], upright[:, 2, 2])
    roll = np.arctan2(upright[:, 1, 0], upright[:, 1, 1])
    return np.stack([yaw, pitch, roll], 1)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def check_curves_path(path: str | Path, kind: str = "arkit") -> Path:
    """Refuse an unknown curve set, or an output that exists or is not .csv/.json, before
    anything is generated."""
    if kind not in CURVE_SETS:
        raise CurvesError(f"--curves {kind}: choose {' or '.join(CURVE_SETS)}")
    path = Path(path)
    if path.suffix.lower() not in CURVE_FORMATS:
        raise CurvesError(f"--out {path}: curves are written as .csv (Live Link Face) or "
                          ".json; give --out NAME.csv or NAME.json")
    if path.exists():
        raise CurvesError(f"--out {path} already exists; choose a new name or remove it "
                          "first (curves never overwrite a file)")
    return path


def write_curves(path: str | Path, curves: Curves) -> Path:
    """Write `curves` as .csv or .json (by the suffix), atomically; never over a file."""
    path = check_curves_path(path, curves.kind)
    text = live_link_csv(curves) if path.suffix.lower() == ".csv" else curves_json(curves)
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return path


def live_link_csv(curves: Curves) -> str:
    """Live Link Face's layout: Timecode, BlendShapeCount, the weights, the nine rotations.
    ARKit names are capitalised as Live Link writes them (JawOpen); visemes keep theirs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [name[0].upper() + name[1:] if curves.kind == "arkit" else name
             for name in curves.names]
    writer.writerow(["Timecode", "BlendShapeCount", *names, *ROTATION_NAMES])
    count = len(names) + len(ROTATION_NAMES)
    for frame, (weights, rotations) in enumerate(zip(curves.weights, curves.rotations)):
        writer.writerow([timecode(frame, curves.fps), count,
                         *(f"{w:.6f}" for w in weights), *(f"{r:.6f}" for r in rotations)])
    return out.getvalue()


def timecode(frame: int, fps: float) -> str:
    """Live Link Face's `HH:MM:SS:FF.mmm`: the frame within its second, then the sub-frame."""
    seconds = frame / fps
    whole = int(np.floor(seconds + 1e-9))
    in_second = (seconds - whole) * fps
    number = int(np.floor(in_second + 1e-6))
    sub = int(round((in_second - number) * 1000)) % 1000
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}:{number:02d}.{sub:03d}"


def curves_json(curves: Curves) -> str:
    return json.dumps({
        "format": "dimitra-curves", "format_version": 1, "set": curves.kind,
        "fps": curves.fps, "names": list(curves.names),
        "frames": np.round(curves.weights, 5).tolist(),
        "rotation_names": list(ROTATION_NAMES),
        "rotations": np.round(curves.rotations, 6).tolist()}, separators=(",", ":"))


def read_curves(path: str | Path) -> Curves:
    """A file `write_curves` wrote (for tests and tools): names, weights and rotations."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        return Curves(data["set"], float(data["fps"]), tuple(data["names"]),
                      np.array(data["frames"], dtype=np.float64),
                      np.array(data["rotations"], dtype=np.float64))
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    weight_names = header[2:len(header) - len(ROTATION_NAMES)]
    values = np.array([[float(v) for v in row[2:]] for row in body]).reshape(len(body), -1)
    kind = "visemes" if weight_names and weight_names[0].startswith("viseme_") else "arkit"
    names = tuple(name[0].lower() + name[1:] for name in weight_names)   # JawOpen -> jawOpen
    fps = _fps_from_timecodes([row[0] for row in body])
    return Curves(kind, fps, names, values[:, :len(names)], values[:, len(names):])


def _fps_from_timecodes(codes: list[str]) -> float:
    """The frame rate the timecodes count in: the frames of the first whole second."""
    seconds = [code.split(":")[2] for code in codes]
    first = seconds.count(seconds[0]) if seconds else 0
    return float(first) if len(set(seconds)) > 1 else float(len(codes))
