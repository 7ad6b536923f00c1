"""Show landmarks: the generated 478 points as an animated point mesh, to inspect a take.

The points are the generated face motion (head pose removed) laid onto the rig's face by the
same similarity the solve uses; the object is parented to the head bone (when the rig has
one), so the keyed head motion carries them. Their animation is a point cache (`.pc2`,
Blender's Mesh Cache modifier): one file of (frames, 478, 3) float32, written atomically beside
the saved .blend (`//dimitra_cache/`) or in Blender's temporary folder.
"""

import re
import struct
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from ..retarget.atomic_file import atomic_open
from ..retarget.motion_file import resample_motion
from ..retarget.solve import canonical_to_scene, face_motion


def landmark_frames(result) -> np.ndarray:
    """(T, 478, 3) float32 scene-space points at the rig's frame rate."""
    motion = resample_motion(result.motion, result.rig.fps)
    canonical, neutral = face_motion(motion)
    rest = result.correspondence.points(result.rig)
    to_scene = canonical_to_scene(neutral, rest, result.correspondence.valid)
    return to_scene.apply(canonical).astype(np.float32)


def write_pc2(path: Path, points: np.ndarray, start_frame: float, fps: float) -> Path:
    """A Mesh Cache `.pc2` file of (T, N, 3) points (little-endian float32)."""
    frames, count, _ = points.shape
    with atomic_open(path) as handle:
        handle.write(struct.pack("<12siiffi", b"POINTCACHE2\0", 1, count, float(start_frame),
                                 1.0, frames))
        handle.write(np.ascontiguousarray(points, dtype="<f4").tobytes())
    return path


def show_landmarks(result, scene):
    """Add (or refresh) the landmark object of a take; returns it."""
    points = landmark_frames(result)
    name = f"Dimitra landmarks {result.audio_name}"
    folder = Path(bpy.path.abspath("//dimitra_cache")) if bpy.data.filepath \
        else Path(bpy.app.tempdir or "/tmp")
    folder.mkdir(parents=True, exist_ok=True)
    cache = write_pc2(folder / (re.sub(r"[^\w.-]+", "_", name) + ".pc2"), points,
                      result.start_frame, result.rig.fps)
    obj = bpy.data.objects.get(name)
    if obj is None:
        mesh = bpy.data.meshes.new(name)
        mesh.from_pydata(points[0].tolist(), [], [])
        obj = bpy.data.objects.new(name, mesh)
        scene.collection.objects.link(obj)
    else:
        obj.data.vertices.foreach_set("co", points[0].ravel())
        obj.modifiers.clear()
    modifier = obj.modifiers.new("Dimitra landmarks", "MESH_CACHE")
    modifier.cache_format = "PC2"
    modifier.filepath = str(cache)
    modifier.frame_start = float(result.start_frame)
    modifier.forward_axis, modifier.up_axis = "POS_Y", "POS_Z"
    obj.show_in_front = True
    _follow_head(obj, result)
    return obj


def _follow_head(obj, result) -> None:
    """Parent to the head bone so that at rest the points sit where they were made."""
    armature = bpy.data.objects.get(result.armature_name) if result.armature_name else None
    head = result.rig.bones.get("head")
    if armature is None or head is None or head.name not in armature.data.bones:
        obj.parent = None
        obj.matrix_world = Matrix.Identity(4)
        return
    bone = armature.data.bones[head.name]
    obj.parent, obj.parent_type, obj.parent_bone = armature, "BONE", bone.name
    # A bone child hangs from the bone's tail, in the pose; cancel the rest transform.
    tail = Matrix.Translation((0.0, bone.length, 0.0))
    obj.matrix_parent_inverse = (armature.matrix_world @ bone.matrix_local @ tail).inverted()
    obj.matrix_basis = Matrix.Identity(4)
