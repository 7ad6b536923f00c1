"""Read animated values back from the open Blender scene, the way a user would see them."""

import bpy
import numpy as np


def shape_key_values(frames, names=None) -> dict[tuple[str, str], np.ndarray]:
    """(object, key) -> (F,) evaluated values at `frames`, for every mesh with shape keys."""
    scene = bpy.context.scene
    keys = [(o, b.name) for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys
            for b in o.data.shape_keys.key_blocks[1:] if names is None or b.name in names]
    out = {(o.name, k): np.zeros(len(frames)) for o, k in keys}
    for i, frame in enumerate(frames):
        scene.frame_set(int(frame))
        for obj, key in keys:
            out[(obj.name, key)][i] = obj.data.shape_keys.key_blocks[key].value
    return out


def bone_motion(armature_name: str, bone_names, frames) -> dict[str, np.ndarray]:
    """bone -> (F, 3, 3) its rotation away from rest in world axes (independent of how an
    importer orients bones)."""
    scene = bpy.context.scene
    armature = next(o for o in bpy.data.objects if o.type == "ARMATURE"
                    and (o.name == armature_name or armature_name is None))
    world = np.array(armature.matrix_world)[:3, :3]
    world = world / np.linalg.norm(world, axis=0)
    out = {name: np.zeros((len(frames), 3, 3)) for name in bone_names}
    for i, frame in enumerate(frames):
        scene.frame_set(int(frame))
        for name in bone_names:
            pose = armature.pose.bones[name]
            posed = np.array(pose.matrix)[:3, :3]
            rest = np.array(pose.bone.matrix_local)[:3, :3]
            posed, rest = posed / np.linalg.norm(posed, axis=0), rest / np.linalg.norm(rest, axis=0)
            out[name][i] = world @ posed @ rest.T @ world.T
    return out


def vertex_positions(obj_name: str, frame: int) -> np.ndarray:
    """(V, 3) world positions of a mesh as evaluated (modifiers, keys, bones) at `frame`."""
    scene = bpy.context.scene
    scene.frame_set(frame)
    obj = bpy.data.objects[obj_name]
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    matrix = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
