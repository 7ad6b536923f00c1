"""Build `sample_face.blend`: the sample face (retarget/sample_face.py) as a Blender rig.

A head mesh on the 478-point topology with the 52 ARKit shape keys, skinned to a neck/head
armature with jaw and eye bones, four materials, and a front camera. Generated, never edited
by hand: `python -m dimitra.blender_addon.sample_rig --out sample_face.blend`.
"""

import argparse
from pathlib import Path

import bpy
import numpy as np

from ..retarget.sample_face import MATERIALS, build_sample_face, to_scene

COLOURS = {"skin": (0.8, 0.62, 0.52, 1.0), "eye_white": (0.92, 0.92, 0.9, 1.0),
           "iris": (0.08, 0.05, 0.04, 1.0), "mouth": (0.25, 0.05, 0.06, 1.0)}
CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache"


def build_scene() -> dict:
    """Replace the open scene with the sample rig; returns its objects by role."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sample = build_sample_face()
    rig = sample.rig
    scene = bpy.context.scene
    scene.name = "sample_face"
    scene.render.fps, scene.render.fps_base = int(rig.fps), 1.0
    scene.render.resolution_x = scene.render.resolution_y = 512
    scene.display.shading.color_type = "MATERIAL"

    mesh = bpy.data.meshes.new("sample_face")
    mesh.from_pydata(rig.vertices.tolist(), [], rig.triangles.tolist())
    for name in MATERIALS:
        material = bpy.data.materials.new(name)
        material.diffuse_color = COLOURS[name]
        mesh.materials.append(material)
    mesh.polygons.foreach_set("material_index", sample.materials.astype(np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    mesh.update()
    face = bpy.data.objects.new("sample_face", mesh)
    scene.collection.objects.link(face)
    face.shape_key_add(name="Basis", from_mix=False)
    for key in rig.shape_keys:
        block = face.shape_key_add(name=key.name, from_mix=False)
        block.data.foreach_set("co", (rig.vertices + key.deltas).astype(np.float32).ravel())
        block.slider_min, block.slider_max = key.slider_min, key.slider_max

    armature_data = bpy.data.armatures.new("sample_face_rig")
    armature = bpy.data.objects.new("sample_face_rig", armature_data)
    scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    for bone in rig.bones.values():
        edit = armature_data.edit_bones.new(bone.name)
        edit.head, edit.tail, edit.roll = bone.head.tolist(), sample.bone_tails[bone.name].tolist(), 0
        edit.use_deform = bone.name == "head"   # keys move the face; the head bone carries it
    for bone in rig.bones.values():
        if bone.parent:
            armature_data.edit_bones[bone.name].parent = armature_data.edit_bones[bone.parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    face.parent = armature
    modifier = face.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature
    group = face.vertex_groups.new(name="head")
    group.add(range(len(rig.vertices)), 1.0, "REPLACE")

    camera_data = bpy.data.cameras.new("front_camera")
    camera_data.lens = 85.0
    camera = bpy.data.objects.new("front_camera", camera_data)
    scene.collection.objects.link(camera)
    target = to_scene(np.array([0.0, -0.4, 0.0]))
    camera.location = (target[0], target[1] - 0.75, target[2])
    camera.rotation_euler = (np.pi / 2, 0.0, 0.0)    # looking along +Y at the face
    scene.camera = camera
    return {"face": face, "armature": armature, "camera": camera}


def save_sample_rig(out: str | Path) -> Path:
    """Build the sample rig and write it to `out` (.blend), atomically."""
    from .bake import export

    build_scene()
    return export(Path(out))


def sample_rig_path() -> Path:
    """The sample rig, built on first use into the checkout's ignored `.cache/`; the name
    carries a hash of what builds it, so a changed definition builds a new one."""
    import hashlib

    from ..retarget import sample_face
    from ..retarget.face.canonical import CANONICAL_FACE_PATH

    digest = hashlib.sha256()
    for source in (Path(sample_face.__file__), Path(__file__), CANONICAL_FACE_PATH):
        digest.update(source.read_bytes())
    path = CACHE_DIR / f"sample_face-{digest.hexdigest()[:10]}.blend"
    if not path.is_file():
        save_sample_rig(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .blend file to write")
    args = parser.parse_args()
    print(save_sample_rig(args.out))


if __name__ == "__main__":
    main()
