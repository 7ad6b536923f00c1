"""Messy face rigs for the bake tests, built unlike the sample rig: what real files look like.

Other vertex counts (subdivided), units (10x, 0.01x object scale as FBX centimetre imports
are), axes (modelled facing +X, or turned any angle about Z), key names in every common style, viseme-only and VRoid sets,
keys that move nothing, the same keys spread over head, teeth and lash meshes, animation
already on the rig, a jaw bone that opens about its local Z, a face driven by bones only, and
rigs handed over as FBX or glTF instead of .blend, a jaw bone that deforms the face beside
a jawOpen key (both must not open the mouth twice), and ARKit keys with viseme keys beside
them (Ready Player Me avatars: `two_sets`).
"""

from pathlib import Path

import bpy
import numpy as np

from dimitra.retarget.key_names import ARKIT_52
from dimitra.retarget.rotations import axis_angle_to_matrix
from dimitra.retarget.sample_face import build_sample_face

# Visemes as mixtures of the ARKit shapes (the way artists often make them).
VISEME_MIXES = {
    "sil": {}, "PP": {"mouthClose": .6, "mouthPressLeft": .5, "mouthPressRight": .5},
    "FF": {"mouthRollLower": .6, "mouthUpperUpLeft": .2, "mouthUpperUpRight": .2, "jawOpen": .1},
    "TH": {"jawOpen": .2, "mouthLowerDownLeft": .2, "mouthLowerDownRight": .2},
    "DD": {"jawOpen": .3, "mouthStretchLeft": .2, "mouthStretchRight": .2},
    "kk": {"jawOpen": .35, "mouthStretchLeft": .3, "mouthStretchRight": .3},
    "CH": {"mouthFunnel": .5, "jawOpen": .25}, "SS": {"mouthSmileLeft": .3, "jawOpen": .15,
                                                      "mouthSmileRight": .3},
    "nn": {"jawOpen": .25, "mouthClose": .1}, "RR": {"mouthPucker": .4, "jawOpen": .25},
    "aa": {"jawOpen": .8, "mouthLowerDownLeft": .3, "mouthLowerDownRight": .3},
    "E": {"jawOpen": .4, "mouthSmileLeft": .4, "mouthSmileRight": .4},
    "I": {"jawOpen": .25, "mouthSmileLeft": .5, "mouthSmileRight": .5},
    "O": {"jawOpen": .5, "mouthFunnel": .6}, "U": {"jawOpen": .2, "mouthPucker": .8},
}
VISEME_INDEX = {name: i for i, name in enumerate(VISEME_MIXES)}
VROID = {"Fcl_MTH_A": VISEME_MIXES["aa"], "Fcl_MTH_I": VISEME_MIXES["I"],
         "Fcl_MTH_U": VISEME_MIXES["U"], "Fcl_MTH_E": VISEME_MIXES["E"],
         "Fcl_MTH_O": VISEME_MIXES["O"], "Fcl_EYE_Close_L": {"eyeBlinkLeft": 1.0},
         "Fcl_EYE_Close_R": {"eyeBlinkRight": 1.0},
         "Fcl_BRW_Angry": {"browDownLeft": 1.0, "browDownRight": 1.0}}
# The key of each style that opens the mouth most.
MOUTH_KEY = {"arkit": "jawOpen", "prefixed": f"AK_{ARKIT_52.index('jawOpen'):02d}_JawOpen",
             "suffixed": "jawOpen", "visemes": "viseme_aa", "bare_visemes": "aa",
             "vi_visemes": "AA_VI_10_aa", "vroid": "Fcl_MTH_A", "two_sets": "jawOpen"}
MIXAMO_BONES = {"neck": "mixamorig:Neck", "head": "mixamorig:Head", "jaw": "Jaw",
                "eye.L": "mixamorig:LeftEye", "eye.R": "mixamorig:RightEye"}


def facing_turn(degrees: float) -> np.ndarray:
    """(3, 3) the turn about Z of a rig built with that many degrees (the face looks along
    facing_turn(degrees) @ (0, -1, 0))."""
    return axis_angle_to_matrix(np.array([0.0, 0, 1]), np.radians(degrees)) if degrees \
        else np.eye(3)


def key_set(style: str, deltas: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """name -> (V, 3) deltas in the given naming style."""
    if style == "two_sets":   # the 52 ARKit keys, then the 15 visemes made from them
        return {**key_set("arkit", deltas), **key_set("visemes", deltas)}
    if style in ("arkit", "prefixed", "suffixed"):
        out = {}
        for index, name in enumerate(ARKIT_52):
            if style == "prefixed":
                renamed = f"AK_{index:02d}_{name[0].upper()}{name[1:]}"
            elif style == "suffixed" and name[:-4] + "Right" in ARKIT_52 and name.endswith("Left"):
                renamed = name[:-4] + "_L"
            elif style == "suffixed" and name[:-5] + "Left" in ARKIT_52 and name.endswith("Right"):
                renamed = name[:-5] + "_R"
            else:
                renamed = name
            out[renamed] = deltas[name]
        return out
    mixes = VROID if style == "vroid" else VISEME_MIXES
    out = {}
    for name, mix in mixes.items():
        renamed = {"visemes": f"viseme_{name}", "bare_visemes": name,
                   "vi_visemes": f"{name.upper()}_VI_{VISEME_INDEX.get(name, 0):02d}_{name}",
                   "vroid": name}[style]
        total = np.zeros_like(next(iter(deltas.values())))
        for source, weight in mix.items():
            total = total + weight * deltas[source]
        out[renamed] = total
    return out


def jaw_opening(style: str, values: dict[str, np.ndarray]) -> np.ndarray:
    """How far the keys open the jaw together (in jawOpen units): visemes share the opening."""
    if style == "two_sets":
        return jaw_opening("arkit", values) + jaw_opening(
            "visemes", {k: v for k, v in values.items() if k.startswith("viseme_")})
    if style in ("arkit", "prefixed", "suffixed"):
        return values[MOUTH_KEY[style]]
    mixes = VROID if style == "vroid" else VISEME_MIXES
    renamed = {key: name for name in mixes for key in values
               if key in (name, f"viseme_{name}") or key.endswith(f"_{name}")}
    return sum(values[key] * mixes[name].get("jawOpen", 0.0) for key, name in renamed.items())


def subdivide(vertices: np.ndarray, triangles: np.ndarray, fields: list[np.ndarray]):
    """Midpoint subdivision: every triangle into four; per-vertex fields are averaged too."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]],
                                    triangles[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    middle = len(vertices) + inverse.reshape(3, -1).T                       # (F, 3): ab, bc, ca
    a, b, c = triangles.T
    ab, bc, ca = middle.T
    new_triangles = np.concatenate([np.stack(t, 1) for t in
                                    ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])

    def extend(values):
        return np.concatenate([values, (values[unique[:, 0]] + values[unique[:, 1]]) / 2])
    return extend(vertices), new_triangles, [extend(f) for f in fields]


def build_messy_rig(path: Path, style: str = "arkit", scale: float = 1.0,
                    object_scale: float = 1.0, facing_x: bool = False, subdivisions: int = 0,
                    split: bool = False, jaw_about_z: bool = False, bones_only: bool = False,
                    existing_animation: bool = False, idle_keys: bool = False,
                    jaw_deforms: bool = False, fps: int = 24, turn_degrees: float = 0.0) -> Path:
    """Write a rig to `path` (.blend, .fbx or .glb) and return it. The face looks along -Y
    (Blender's front), turned about Z by 90° with facing_x, plus turn_degrees."""
    sample = build_sample_face()
    rig = sample.rig
    names = list(ARKIT_52)
    deltas = [k.deltas for k in rig.shape_keys]
    vertices, triangles = rig.vertices, rig.triangles
    jaw_weights = np.linalg.norm(deltas[names.index("jawOpen")], axis=1)
    jaw_weights = np.clip(jaw_weights / jaw_weights.max() * 1.3, 0, 1)
    for _ in range(subdivisions):
        vertices, triangles, fields = subdivide(vertices, triangles, deltas + [jaw_weights])
        deltas, jaw_weights = fields[:-1], fields[-1]
    turn = facing_turn(90.0 * facing_x + turn_degrees)
    vertices = vertices @ turn.T * scale
    keyed = key_set(style, {n: d @ turn.T * scale for n, d in zip(names, deltas)})
    if idle_keys:
        keyed["Key 7"] = np.zeros_like(vertices)
        back = np.zeros_like(vertices)
        back[np.argmin(vertices @ (turn @ [0, -1.0, 0]))] = [0, 0, 0.01 * scale]
        keyed["back_of_head"] = back

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = fps
    head = _mesh("Head", vertices, triangles, {} if bones_only else keyed)
    meshes = [head]
    if split and not bones_only:
        meshes += _teeth_and_lashes(vertices, keyed, style)
    armature = _armature(sample, turn, scale, jaw_about_z)
    armature.scale = (object_scale,) * 3
    for mesh in meshes:
        mesh.parent = armature
        modifier = mesh.modifiers.new("Armature", "ARMATURE")
        modifier.object = armature
        group = mesh.vertex_groups.new(name=MIXAMO_BONES["head"])
        count = len(mesh.data.vertices)
        if mesh is head and (bones_only or jaw_deforms):
            jaw = mesh.vertex_groups.new(name=MIXAMO_BONES["jaw"])
            for index, weight in enumerate(jaw_weights):
                if weight > 0.01:
                    jaw.add([index], float(weight), "REPLACE")
                if weight < 0.99:
                    group.add([index], float(1 - weight), "REPLACE")
        else:
            group.add(range(count), 1.0, "REPLACE")
    if existing_animation:
        _existing_animation(head, armature, MOUTH_KEY[style] if not bones_only else None)
    return _save(path)


def _mesh(name: str, vertices: np.ndarray, triangles: np.ndarray, keys: dict):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices.tolist(), [], triangles.tolist())
    material = bpy.data.materials.new(f"{name} skin")
    material.diffuse_color = (0.75, 0.6, 0.5, 1)
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    if keys:
        obj.shape_key_add(name="Basis", from_mix=False)
        for key_name, delta in keys.items():
            block = obj.shape_key_add(name=key_name, from_mix=False)
            block.data.foreach_set("co", (vertices + delta).astype(np.float32).ravel())
    return obj


def _teeth_and_lashes(vertices: np.ndarray, keyed: dict, style: str) -> list:
    """Small meshes that carry the same key names: lower teeth follow the mouth key, lashes
    the blink keys."""
    mouth = MOUTH_KEY[style]
    chin = np.argmax(np.linalg.norm(keyed[mouth], axis=1))   # the point the mouth key moves most
    lip = vertices[14]
    teeth_points = lip + (vertices[chin] - lip) * 0.2 + np.array(
        [[x, y, z] for x in (-0.02, 0.02) for y in (0.01, 0.03) for z in (-0.006, 0.0)])
    box = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
           (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    teeth_keys = {name: np.broadcast_to(delta[chin] * 0.8, teeth_points.shape).copy()
                  for name, delta in keyed.items() if name == mouth}
    objects = [_mesh("Teeth", teeth_points, np.array(box), teeth_keys)]
    lids = [159, 386]   # upper lid middles
    lash_points = np.concatenate([vertices[lids] + [0, -0.004, 0.002], vertices[lids] + [0.004, -0.004, 0.004]])
    blink_keys = {name: np.concatenate([delta[lids], delta[lids]]) for name, delta in keyed.items()
                  if "blink" in name.lower() or "eye_close" in name.lower()}
    if blink_keys:
        objects.append(_mesh("Lashes", lash_points, np.array([(0, 2, 3), (0, 3, 1)]), blink_keys))
    return objects


def _armature(sample, turn: np.ndarray, scale: float, jaw_about_z: bool):
    data = bpy.data.armatures.new("Armature")
    armature = bpy.data.objects.new("Armature", data)
    bpy.context.scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    for bone in sample.rig.bones.values():
        edit = data.edit_bones.new(MIXAMO_BONES[bone.name])
        edit.head = (turn @ bone.head * scale).tolist()
        edit.tail = (turn @ sample.bone_tails[bone.name] * scale).tolist()
        # Roll a quarter turn: the jaw's local Z (not X) is then its hinge.
        edit.roll = np.pi / 2 if (jaw_about_z and bone.name == "jaw") else 0.0
    for bone in sample.rig.bones.values():
        if bone.parent:
            data.edit_bones[MIXAMO_BONES[bone.name]].parent = \
                data.edit_bones[MIXAMO_BONES[bone.parent]]
    bpy.ops.object.mode_set(mode="OBJECT")
    return armature


def _existing_animation(head, armature, mouth_key: str | None) -> None:
    """Keys an artist already made: a mouth key, a head turn and an armature move."""
    if mouth_key:
        block = head.data.shape_keys.key_blocks[mouth_key]
        for frame, value in ((1, 0.0), (10, 1.0), (20, 0.0)):
            block.value = value
            block.keyframe_insert("value", frame=frame)
    bone = armature.pose.bones[MIXAMO_BONES["head"]]
    for frame, angle in ((1, 0.0), (15, 0.3)):
        bone.rotation_quaternion = (np.cos(angle / 2), 0, 0, np.sin(angle / 2))
        bone.keyframe_insert("rotation_quaternion", frame=frame)
    for frame, x in ((1, 0.0), (30, 0.5)):
        armature.location.x = x
        armature.keyframe_insert("location", index=0, frame=frame)


def _save(path: Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".blend":
        bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False)
    elif suffix == ".fbx":
        bpy.ops.export_scene.fbx(filepath=str(path), add_leaf_bones=False, bake_anim=False)
    else:
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB")
    return path
