"""A Blender scene's face rig -> `retarget.rig.RigDescription` (scene space, rest state).

Found automatically unless named: the face meshes are every mesh with shape keys (head,
teeth, eyes, lashes: a key name shared by several meshes drives them all); a face driven by
bones only is the mesh most weighted to the jaw (else head) bone. The armature is the one
deforming those meshes, else any with head/jaw bones. Bones are recognised by name in the
usual styles (`head`, `mixamorig:Head`, `J_Bip_C_Head`, `jaw`, `eye.L`, `LeftEye` ...).
"""

import re

import bpy
import numpy as np

from ..retarget.rig import Bone, RigDescription, RigError, ShapeKey

_ROLE_PATTERNS = {
    "jaw": re.compile(r"jaw|mandible|chin", re.IGNORECASE),
    "head": re.compile(r"head(?!.*(top|end|tip))", re.IGNORECASE),
    "neck": re.compile(r"neck", re.IGNORECASE),
    "eye_left": re.compile(r"(^|[^a-z])(l|left)[^a-z]*eye(?!lid|brow|lash)|"
                           r"eye(?!lid|brow|lash)[^a-z]*(l|left)([^a-z]|$)", re.IGNORECASE),
    "eye_right": re.compile(r"(^|[^a-z])(r|right)[^a-z]*eye(?!lid|brow|lash)|"
                            r"eye(?!lid|brow|lash)[^a-z]*(r|right)([^a-z]|$)", re.IGNORECASE),
}
# Helper bones of big rigs (Rigify's mechanism/original copies, IK targets) are never driven.
_HELPER = re.compile(r"^(mch|org|ik|tgt|ctrl_?target)[-_.]|[._-](end|top|tip|nub)$|_end$",
                     re.IGNORECASE)


def find_face_meshes(names: list[str] | None = None) -> list:
    """The mesh objects of the face (see module docstring); raises RigError when there is none."""
    if names:
        objects = []
        for name in names:
            obj = bpy.data.objects.get(name)
            if obj is None or obj.type != "MESH":
                meshes = sorted(o.name for o in bpy.data.objects if o.type == "MESH")
                raise RigError(f"--mesh {name!r}: no mesh object of that name; the rig has "
                               f"{', '.join(meshes) or 'no meshes'}")
            objects.append(obj)
        return objects
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and len(o.data.polygons)]
    keyed = [o for o in meshes if _shape_key_blocks(o)]
    if keyed:
        return sorted(keyed, key=lambda o: -len(_shape_key_blocks(o)))
    for role in ("jaw", "head"):
        best, best_count = None, 0
        for obj in meshes:
            armature = _deforming_armature(obj)
            if armature is None:
                continue
            bone = bone_roles(armature).get(role)
            group = obj.vertex_groups.get(bone) if bone else None
            if group is None:
                continue
            count = sum(1 for v in obj.data.vertices
                        for g in v.groups if g.group == group.index and g.weight > 0)
            if count > best_count:
                best, best_count = obj, count
        if best is not None:
            return [best]
    raise RigError("no face mesh found: the rig has no mesh with shape keys and none weighted to "
                   "a jaw or head bone; name it with --mesh")


def find_armature(face_meshes: list, name: str | None = None):
    """The armature of the face, or None for a rig of shape keys only."""
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "ARMATURE":
            found = sorted(o.name for o in bpy.data.objects if o.type == "ARMATURE")
            raise RigError(f"--armature {name!r}: no armature of that name; the rig has "
                           f"{', '.join(found) or 'no armature'}")
        return obj
    for mesh in face_meshes:
        armature = _deforming_armature(mesh)
        if armature is not None and bone_roles(armature):
            return armature
    candidates = [o for o in bpy.data.objects if o.type == "ARMATURE" and bone_roles(o)]
    candidates.sort(key=lambda o: -len(bone_roles(o)))
    return candidates[0] if candidates else None


def bone_roles(armature) -> dict[str, str]:
    """role -> bone name for the bones that matter (head, neck, jaw, eyes)."""
    roles: dict[str, str] = {}
    for role, pattern in _ROLE_PATTERNS.items():
        matches = [b.name for b in armature.data.bones
                   if pattern.search(b.name) and not _HELPER.search(b.name)
                   and b.name not in roles.values()]
        if role == "head":   # 'head' must not pick the jaw or an eye that sits under it
            matches = [m for m in matches if not any(p.search(m) for r, p in
                                                     _ROLE_PATTERNS.items() if r != "head")]
        if matches:
            deform = [m for m in matches if armature.data.bones[m].use_deform]
            roles[role] = min(deform or matches, key=len)
    return roles


def read_rig(face_meshes: list, armature=None, fps: float | None = None) -> RigDescription:
    """The rest state of the face meshes and the armature's face bones, in scene space."""
    vertices, triangles, counts = [], [], []
    key_parts: dict[str, dict] = {}
    offset = 0
    for obj in face_meshes:
        mesh = obj.data
        matrix = np.array(obj.matrix_world, dtype=np.float64)
        count = len(mesh.vertices)
        co = _vertex_positions(mesh.vertices)
        vertices.append(co @ matrix[:3, :3].T + matrix[:3, 3])
        mesh.calc_loop_triangles()
        tris = np.empty(3 * len(mesh.loop_triangles), dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tris)
        triangles.append(tris.reshape(-1, 3) + offset)
        driven = _driven_key_names(mesh)
        for block in _shape_key_blocks(obj):
            if block.mute or block.name in driven:
                continue
            delta = (_vertex_positions(block.data) - _vertex_positions(block.relative_key.data))
            part = key_parts.setdefault(block.name, {"pieces": [], "meshes": [],
                                                     "range": (block.slider_min,
                                                               block.slider_max)})
            part["pieces"].append((offset, delta @ matrix[:3, :3].T))
            part["meshes"].append(obj.name)
        counts.append(count)
        offset += count
    all_vertices = np.concatenate(vertices)
    keys = []
    for name, part in key_parts.items():
        deltas = np.zeros_like(all_vertices)
        for start, delta in part["pieces"]:
            deltas[start:start + len(delta)] = delta
        keys.append(ShapeKey(name, deltas, *part["range"], tuple(part["meshes"])))
    bones = _read_bones(armature, face_meshes, counts) if armature is not None else {}
    if not keys and not bones:
        raise RigError(f"{', '.join(o.name for o in face_meshes)}: no shape keys and no head, "
                       "jaw or eye bones to animate; add shape keys or an armature")
    scene = bpy.context.scene
    return RigDescription(all_vertices, np.concatenate(triangles), keys, bones,
                          fps or scene.render.fps / scene.render.fps_base,
                          tuple(o.name for o in face_meshes), tuple(counts),
                          armature.name if armature is not None else None)


def _read_bones(armature, face_meshes: list, counts: list[int]) -> dict[str, Bone]:
    world = np.array(armature.matrix_world, dtype=np.float64)
    bones = {}
    for role, name in bone_roles(armature).items():
        bone = armature.data.bones[name]
        weights = None
        if role == "jaw":
            weights = _group_weights(face_meshes, counts, name, armature)
        bones[role] = Bone(name, world @ np.array(bone.matrix_local, dtype=np.float64),
                           bone.parent.name if bone.parent else None, weights)
    return bones


def _group_weights(face_meshes: list, counts: list[int], group_name: str, armature):
    """(V,) weights of the vertex group `group_name` over the face meshes, None if it deforms
    none of them."""
    weights = np.zeros(sum(counts))
    offset, found = 0, False
    for obj, count in zip(face_meshes, counts):
        group = obj.vertex_groups.get(group_name)
        if group is not None and _deforming_armature(obj) == armature:
            index = group.index
            for vertex in obj.data.vertices:
                for element in vertex.groups:
                    if element.group == index:
                        weights[offset + vertex.index] = element.weight
                        found = True
        offset += count
    return weights if found and weights.any() else None


def _deforming_armature(obj):
    for modifier in obj.modifiers:
        if modifier.type == "ARMATURE" and modifier.object is not None and modifier.show_render:
            return modifier.object
    if obj.parent is not None and obj.parent.type == "ARMATURE" and obj.parent_type == "BONE":
        return obj.parent
    return None


def _shape_key_blocks(obj) -> list:
    keys = obj.data.shape_keys if obj.type == "MESH" else None
    if keys is None or not keys.use_relative:
        return []
    return [b for b in keys.key_blocks if b != keys.reference_key]


def _driven_key_names(mesh) -> set[str]:
    """Keys whose value a driver sets (correctives): keyframes on them would do nothing."""
    keys = mesh.shape_keys
    if keys is None or keys.animation_data is None:
        return set()
    names = set()
    for driver in keys.animation_data.drivers:
        match = re.match(r'key_blocks\["(.+)"\]\.value', driver.data_path)
        if match:
            names.add(match.group(1).replace('\\"', '"'))
    return names


def _vertex_positions(collection) -> np.ndarray:
    co = np.empty(3 * len(collection), dtype=np.float32)   # Blender's own type: no conversion
    collection.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)
