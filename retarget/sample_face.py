"""The sample face, generated from the canonical face: geometry, ARKit-52 shape keys, bones.

A head on the 478-point topology (vertex i is landmark i; the irises are small discs), closed
behind by a skull, with eyeballs and a dark mouth interior so a render reads as a face; 52
ARKit-named keys, each a smooth displacement field written below from what the ARKit
reference describes; a neck/head/jaw/eye armature. The Blender build
(`python -m dimitra.blender_addon.sample_rig`) and the numpy tests share this one definition.
Scene axes are Blender's (Z up, the face looks along -Y), metres.
"""

import itertools
from dataclasses import dataclass

import numpy as np

from .face import topology
from .face.canonical import load_canonical_face
from .key_names import ARKIT_52
from .rig import Bone, RigDescription, ShapeKey
from .rotations import axis_angle_to_matrix

INTER_OCULAR_M = 0.095                 # outer eye corners, metres
HEAD_ORIGIN = np.array([0.0, 0.0, 1.6])
SCENE_FROM_CANONICAL = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # x, -z, y
MATERIALS = ("skin", "eye_white", "iris", "mouth")
FPS = 30.0

UPPER_LIP = topology.LIPS_OUTER[11:] + topology.LIPS_INNER[11:]
LOWER_LIP = topology.LIPS_OUTER[1:10] + topology.LIPS_INNER[1:10]
CORNERS = {"Right": (61, 78), "Left": (291, 308)}
JAW_PIVOT = np.array([0.0, -0.45, -0.5])      # canonical units (inter-ocular distances)


@dataclass
class SampleFace:
    rig: RigDescription            # keys, bones and the whole surface, scene space
    materials: np.ndarray          # (F,) index into MATERIALS per triangle
    bone_tails: dict[str, np.ndarray]   # bone name -> (3,) tail, scene space
    head_weights: np.ndarray       # (V,) all 1: the head bone carries the whole surface


def to_scene(points: np.ndarray) -> np.ndarray:
    """(..., 3) canonical units -> scene metres."""
    return points @ SCENE_FROM_CANONICAL.T * INTER_OCULAR_M + HEAD_ORIGIN


def build_sample_face() -> SampleFace:
    face = load_canonical_face()
    vertices, triangles, materials = [face], [topology.triangles()], [np.zeros(852, int)]
    count = len(face)
    for iris in (topology.RIGHT_IRIS, topology.LEFT_IRIS):
        centre, rim = iris[0], iris[1:]
        fan = np.array([(centre, rim[i], rim[(i + 1) % 4]) for i in range(4)])
        triangles.append(_facing(fan, face, np.array([0.0, 0, 1])))
        materials.append(np.full(4, 2))
    for iris in (topology.RIGHT_IRIS, topology.LEFT_IRIS):
        sphere_vertices, sphere_triangles = _sphere(*_eyeball(face, iris), 16, 10)
        vertices.append(sphere_vertices)
        triangles.append(sphere_triangles + count)
        materials.append(np.ones(len(sphere_triangles), int))
        count += len(sphere_vertices)
    # A dark plane well behind the lips: what an open mouth shows.
    mouth = np.array([[-0.24, -0.76, 0.0], [0.24, -0.76, 0.0], [0.24, -0.98, 0.0],
                      [-0.24, -0.98, 0.0]])
    vertices.append(mouth)
    triangles.append(np.array([[count, count + 2, count + 1], [count, count + 3, count + 2]]))
    materials.append(np.full(2, 3))
    count += 4
    skull_vertices, skull_triangles = _skull(face, count)
    vertices.append(skull_vertices)
    triangles.append(skull_triangles)
    materials.append(np.zeros(len(skull_triangles), int))
    all_vertices = np.concatenate(vertices)
    deltas = np.zeros((len(ARKIT_52), len(all_vertices), 3))
    fields = key_fields(face)
    for k, name in enumerate(ARKIT_52):
        deltas[k, :len(face)] = fields[name] @ SCENE_FROM_CANONICAL.T * INTER_OCULAR_M
    keys = [ShapeKey(name, deltas[k], 0.0, 1.0, ("sample_face",))
            for k, name in enumerate(ARKIT_52)]
    bones, tails = _bones(face)
    rig = RigDescription(to_scene(all_vertices), np.concatenate(triangles), keys, bones, FPS,
                         ("sample_face",), (len(all_vertices),), "sample_face_rig")
    return SampleFace(rig, np.concatenate(materials), tails, np.ones(len(all_vertices)))


def key_fields(face: np.ndarray) -> dict[str, np.ndarray]:
    """ARKit name -> (478, 3) displacement in canonical units (inter-ocular distances)."""
    x, y = face[:, 0], face[:, 1]
    lip_y = face[list(topology.LIPS_INNER), 1].mean()
    jaw = _jaw_weights(face, lip_y)
    lips = list(UPPER_LIP + LOWER_LIP) + [c for pair in CORNERS.values() for c in pair]
    above = (y > lip_y).astype(float)[:, None]
    fields: dict[str, np.ndarray] = {}

    def near(centres, radius):
        points = face[list(centres)] if np.asarray(centres).ndim == 1 else np.asarray(centres)
        distance = np.linalg.norm(face[:, None] - points[None], axis=-1).min(1)
        return np.exp(-(distance / radius) ** 2)[:, None]

    pivot = JAW_PIVOT
    fields["jawOpen"] = jaw[:, None] * (
        np.einsum("ij,nj->ni", axis_angle_to_matrix(np.array([1.0, 0, 0]), 0.25), face - pivot)
        - (face - pivot))
    fields["jawForward"] = jaw[:, None] * [0, 0, 0.07]
    fields["jawLeft"] = jaw[:, None] * [0.07, 0, 0]
    fields["jawRight"] = jaw[:, None] * [-0.07, 0, 0]
    fields["mouthClose"] = near(lips, 0.07) * np.where(above > 0, [0, -0.05, 0], [0, 0.05, 0])
    fields["mouthFunnel"] = near(lips, 0.1) * (
        [0, 0, 0.08] + np.where(above > 0, [0, 0.035, 0], [0, -0.035, 0]))
    fields["mouthPucker"] = near(lips, 0.12) * (
        [0, 0, 0.1] - 0.3 * face * [1, 0, 0])
    fields["mouthLeft"] = near(lips, 0.18) * [0.08, 0, 0]
    fields["mouthRight"] = near(lips, 0.18) * [-0.08, 0, 0]
    fields["mouthRollLower"] = near(topology.LIPS_OUTER[1:10], 0.06) * [0, 0.03, -0.05]
    fields["mouthRollUpper"] = near(topology.LIPS_OUTER[11:], 0.06) * [0, -0.03, -0.05]
    fields["mouthShrugLower"] = near((17, 18, 200), 0.2) * [0, 0.05, 0.02]
    fields["mouthShrugUpper"] = near((0, 37, 267), 0.1) * [0, 0.04, 0.01]
    fields["cheekPuff"] = near(face[[205, 425]], 0.2) * np.stack(
        [0.06 * np.sign(x), np.zeros_like(x), np.full_like(x, 0.04)], 1)
    fields["browInnerUp"] = near((107, 66, 55, 336, 296, 285), 0.1) * [0, 0.07, 0]
    fields["tongueOut"] = np.zeros_like(face)   # the tongue is not on the 478-point surface
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        corners = CORNERS[side]
        lower_side = [i for i in LOWER_LIP if sign * x[i] > 0.08]
        upper_side = [i for i in UPPER_LIP if sign * x[i] > 0.08]
        fields[f"mouthSmile{side}"] = near(corners, 0.12) * [sign * 0.04, 0.06, -0.02]
        fields[f"mouthFrown{side}"] = near(corners, 0.09) * [sign * 0.01, -0.06, 0]
        fields[f"mouthDimple{side}"] = near(corners, 0.07) * [sign * 0.02, 0, -0.06]
        fields[f"mouthStretch{side}"] = near(list(corners) + lower_side, 0.16) * \
            [sign * 0.06, -0.03, -0.01]
        fields[f"mouthPress{side}"] = near(lower_side + upper_side, 0.08) * np.where(
            above > 0, [0, -0.02, -0.02], [0, 0.02, -0.02])
        fields[f"mouthLowerDown{side}"] = near(lower_side, 0.09) * [0, -0.06, 0.01]
        fields[f"mouthUpperUp{side}"] = near(upper_side, 0.09) * [0, 0.06, 0.01]
        brow = topology.LEFT_BROW if side == "Left" else topology.RIGHT_BROW
        outer_brow = [i for i in brow if sign * x[i] > 0.3]
        fields[f"browDown{side}"] = near(brow, 0.15) * [-sign * 0.02, -0.06, 0.01]
        fields[f"browOuterUp{side}"] = near(outer_brow, 0.1) * [0, 0.07, 0]
        upper_lid = topology.LEFT_UPPER_LID if side == "Left" else topology.RIGHT_UPPER_LID
        lower_lid = topology.LEFT_LOWER_LID if side == "Left" else topology.RIGHT_LOWER_LID
        iris = topology.LEFT_IRIS if side == "Left" else topology.RIGHT_IRIS
        under_eye = face[list(lower_lid)].mean(0) + [0, -0.15, 0.02]
        fields[f"cheekSquint{side}"] = near(under_eye[None], 0.1) * [0, 0.04, 0.01]
        fields[f"noseSneer{side}"] = near(np.array([[sign * 0.1, -0.45, 0.33]]), 0.07) * \
            [0, 0.04, 0]
        upper_field = _lid_field(face, upper_lid, lower_lid, iris)
        lower_field = _lid_field(face, lower_lid, upper_lid, iris)
        fields[f"eyeBlink{side}"] = 0.95 * upper_field
        fields[f"eyeWide{side}"] = -0.3 * upper_field
        fields[f"eyeSquint{side}"] = 0.35 * lower_field + \
            near(under_eye[None], 0.08) * [0, 0.02, 0]
        centre, _ = _eyeball(face, iris)
        toward_nose = -sign
        for direction, axis, angle in (("Up", [1.0, 0, 0], -0.35), ("Down", [1.0, 0, 0], 0.35),
                                       ("In", [0, 1.0, 0], 0.35 * toward_nose),
                                       ("Out", [0, 1.0, 0], -0.35 * toward_nose)):
            rotated = np.zeros_like(face)
            arm = face[list(iris)] - centre
            rotated[list(iris)] = arm @ axis_angle_to_matrix(np.array(axis), angle).T - arm
            fields[f"eyeLook{direction}{side}"] = rotated
    missing = set(ARKIT_52) - set(fields)
    assert not missing, missing
    return fields


def _jaw_weights(face: np.ndarray, lip_y: float) -> np.ndarray:
    """(478,) how much each point follows the jaw: the lower lip and chin fully, not the upper."""
    x, y = face[:, 0], face[:, 1]
    below = np.clip((lip_y + 0.02 - y) / 0.12, 0, 1)
    weights = below * below * (3 - 2 * below)
    weights *= np.clip(1 - (np.abs(x) - 0.45) / 0.3, 0, 1)
    weights[list(UPPER_LIP)] = 0.0
    weights[list(LOWER_LIP)] = 1.0
    for corners in CORNERS.values():
        weights[list(corners)] = 0.5
    weights[topology.NUM_MESH_LANDMARKS:] = 0.0
    return weights


def _lid_field(face: np.ndarray, moving: tuple, other: tuple, iris: tuple) -> np.ndarray:
    """Displacement closing the `moving` lid onto the `other` (one lid's side of the eye)."""
    gap = face[list(other)] - face[list(moving)]                            # (9, 3)
    distance = np.linalg.norm(face[:, None] - face[list(moving)][None], axis=-1)
    nearest = distance.argmin(1)
    falloff = np.exp(-(distance.min(1) / 0.05) ** 2)
    side_of_moving = np.sign(face[list(moving), 1].mean() - face[list(other), 1].mean())
    corner_line = (face[moving[0], 1] + face[moving[-1], 1]) / 2
    same_side = np.sign(face[:, 1] - corner_line) == side_of_moving
    keep = same_side | np.isin(np.arange(len(face)), moving)
    keep[list(other)] = False
    keep[list(iris)] = False
    return gap[nearest] * (falloff * keep)[:, None]


def _eyeball(face: np.ndarray, iris: tuple) -> tuple[np.ndarray, float]:
    """Centre and radius (canonical units) of the eyeball behind an iris."""
    eye_width = 0.31
    radius = 0.4 * eye_width
    centre = face[iris[0]] - np.array([0, 0, radius + 0.008])
    return centre, radius


def _sphere(centre: np.ndarray, radius: float, segments: int,
            rings: int) -> tuple[np.ndarray, np.ndarray]:
    """UV sphere around +z (poles front and back): (V, 3) points and (F, 3) outward triangles."""
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring_points = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)
    points = np.concatenate([[[0, 0, 1.0]], ring_points.reshape(-1, 3), [[0, 0, -1.0]]])
    faces = []
    last = len(points) - 1
    for s in range(segments):
        faces.append((0, 1 + s, 1 + (s + 1) % segments))
        base = 1 + (rings - 2) * segments
        faces.append((last, base + (s + 1) % segments, base + s))
    for r in range(rings - 2):
        for s in range(segments):
            a, b = 1 + r * segments + s, 1 + r * segments + (s + 1) % segments
            faces += [(a, a + segments, b), (b, a + segments, b + segments)]
    faces = np.array(faces)
    centroid = points[faces].mean(1)
    faces = _orient(faces, points, centroid)
    return centre + radius * points, faces


def _skull(face: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Rings behind the face oval closing the head; triangles index from `offset`-based rings."""
    oval = np.array(topology.FACE_OVAL)
    centre = np.array([0.0, -0.35, -0.7])
    rings = []
    for depth, shrink in ((0.35, 1.02), (0.75, 0.98), (1.1, 0.85), (1.35, 0.55)):
        ring = face[oval].copy()
        ring[:, :2] = centre[:2] + (ring[:, :2] - centre[:2]) * shrink
        ring[:, 2] = face[oval, 2].min() - depth + 0.3 * (ring[:, 2] - face[oval, 2].min())
        rings.append(ring)
    back = np.array([[0.0, -0.35, face[oval, 2].min() - 1.5]])
    points = np.concatenate(rings + [back])
    n = len(oval)
    index_rings = [oval] + [offset + r * n + np.arange(n) for r in range(len(rings))]
    faces = []
    for a, b in itertools.pairwise(index_rings):
        for i in range(n):
            j = (i + 1) % n
            faces += [(a[i], b[i], a[j]), (a[j], b[i], b[j])]
    back_index = offset + len(rings) * n
    last = index_rings[-1]
    faces += [(last[i], back_index, last[(i + 1) % n]) for i in range(n)]
    faces = np.array(faces)
    everything = np.concatenate([face, np.zeros((offset - len(face), 3)), points])
    centroid = everything[faces].mean(1)
    return points, _orient(faces, everything, centroid - centre)


def _orient(faces: np.ndarray, points: np.ndarray, outward: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points against `outward` (F, 3)."""
    corners = points[faces]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    flip = (normal * outward).sum(1) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return faces


def _facing(faces: np.ndarray, points: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return _orient(faces, points, np.broadcast_to(direction, (len(faces), 3)))


def _bones(face: np.ndarray) -> tuple[dict[str, Bone], dict[str, np.ndarray]]:
    """Neck, head, jaw and eye bones (Blender's rest convention: roll 0, Y along the bone)."""
    spots = {  # name: (head, tail, parent), canonical units
        "neck": ([0, -1.9, -0.75], [0, -1.2, -0.7], None),
        "head": ([0, -1.2, -0.7], [0, 0.9, -0.7], "neck"),
        "jaw": (JAW_PIVOT, [0, -1.25, 0.15], "head"),
        "eye.L": (_eyeball(face, topology.LEFT_IRIS)[0],
                  _eyeball(face, topology.LEFT_IRIS)[0] + [0, 0, 0.3], "head"),
        "eye.R": (_eyeball(face, topology.RIGHT_IRIS)[0],
                  _eyeball(face, topology.RIGHT_IRIS)[0] + [0, 0, 0.3], "head"),
    }
    roles = {"neck": "neck", "head": "head", "jaw": "jaw", "eye.L": "eye_left",
             "eye.R": "eye_right"}
    bones, tails = {}, {}
    for name, (head, tail, parent) in spots.items():
        head, tail = to_scene(np.asarray(head, float)), to_scene(np.asarray(tail, float))
        rest = np.eye(4)
        rest[:3, :3] = rest_rotation(tail - head)
        rest[:3, 3] = head
        bones[roles[name]] = Bone(name, rest, parent)
        tails[name] = tail
    return bones, tails


def rest_rotation(direction: np.ndarray) -> np.ndarray:
    """Blender's bone orientation for roll 0: the shortest turn taking +Y onto `direction`."""
    y = direction / np.linalg.norm(direction)
    axis = np.cross([0.0, 1, 0], y)
    sine, cosine = np.linalg.norm(axis), y[1]
    if sine < 1e-9:
        return np.eye(3) if cosine > 0 else np.diag([-1.0, -1, 1])
    return axis_angle_to_matrix(axis, np.arctan2(sine, cosine))
