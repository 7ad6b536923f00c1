"""Solved channels -> keys in a new Action, a few curves per main-thread tick, all or nothing.

`plan_curves` runs anywhere (the job's worker thread): it turns a RigAnimation into plain
(data path, index, values) curves. `KeyWriter` runs on the main thread: `begin` gives every
animated datablock a new Action (an Action it already played goes onto the NLA, see
blender_api.new_action_for), `step` writes curves until its time budget is spent, and
`rollback` puts every datablock back as it was — Actions, slots and NLA tracks.
"""

import time
from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Matrix

from ..retarget.rotations import continuous_quaternions, matrix_to_quaternion
from ..retarget.solve import RigAnimation
from . import blender_api


@dataclass
class Curve:
    owner: str            # "keys" (every face mesh's shape keys carrying the key) or "armature"
    data_path: str
    index: int
    group: str
    values: np.ndarray    # (T,) float, one per frame from the start frame
    key_name: str = ""    # the shape key, for owner "keys"


def plan_curves(animation: RigAnimation, rotation_modes: dict[str, str]) -> list[Curve]:
    """Every channel of `animation` as curves; rotation_modes: bone name -> rotation_mode."""
    curves = []
    for key_name, values in animation.shape_keys.items():
        path = f'key_blocks["{bpy.utils.escape_identifier(key_name)}"].value'
        curves.append(Curve("keys", path, 0, "Shape keys", np.asarray(values), key_name))
    for bone_name, rotations in animation.bone_rotations.items():
        prop, channels = rotation_channels(rotation_modes[bone_name], rotations)
        path = f'pose.bones["{bpy.utils.escape_identifier(bone_name)}"].{prop}'
        curves += [Curve("armature", path, i, bone_name, values)
                   for i, values in enumerate(channels)]
    return curves


class KeyWriter:
    def __init__(self, curves: list[Curve], meshes: list, armature, start_frame: int,
                 name: str, replacing=None):
        """replacing: an Action of an earlier Generate that the new one takes the place of
        (Re-solve): it is unassigned rather than pushed to the NLA, and removed at the end."""
        self.curves, self.meshes, self.armature = curves, meshes, armature
        self.start_frame, self.name, self.replacing = start_frame, name, replacing
        self.next_curve = 0
        self.targets: dict[str, list] = {}    # owner -> [(id_data, action, slot, key names)]
        self.remembered: list[tuple] = []     # (id_data, blender_api.remember_animation)
        self.actions: list = []
        self.frames = np.empty(0)

    @property
    def fraction(self) -> float:
        return self.next_curve / max(1, len(self.curves))

    def begin(self) -> None:
        frame_count = len(self.curves[0].values) if self.curves else 0
        self.frames = self.start_frame + np.arange(frame_count, dtype=np.float64)
        key_names = {c.key_name for c in self.curves if c.owner == "keys"}
        shared, seen = None, set()
        owners = []
        for obj in self.meshes:
            keys = obj.data.shape_keys
            if keys is None or keys.as_pointer() in seen:
                continue
            seen.add(keys.as_pointer())
            names = {b.name for b in keys.key_blocks} & key_names
            if names:
                owners.append(("keys", keys, names))
        if self.armature is not None and any(c.owner == "armature" for c in self.curves):
            owners.append(("armature", self.armature, set()))
        for owner, id_data, names in owners:
            self.remembered.append((id_data, blender_api.remember_animation(id_data)))
            anim = id_data.animation_data
            if self.replacing is not None and anim is not None and anim.action == self.replacing:
                anim.action = None
            action, slot = blender_api.new_action_for(id_data, self.name, shared)
            shared = action if blender_api.SLOTTED_ACTIONS else None
            if action not in self.actions:
                self.actions.append(action)
            self.targets.setdefault(owner, []).append((action, slot, names))

    def step(self, budget_s: float) -> bool:
        """Write curves until `budget_s` seconds are spent; True once every curve is written."""
        started = time.perf_counter()
        while self.next_curve < len(self.curves):
            curve = self.curves[self.next_curve]
            for action, slot, names in self.targets.get(curve.owner, ()):
                if curve.owner == "keys" and curve.key_name not in names:
                    continue
                fcurve = blender_api.new_fcurve(action, slot, curve.data_path, curve.index,
                                                curve.group)
                blender_api.write_keys(fcurve, self.frames, curve.values)
            self.next_curve += 1
            if time.perf_counter() - started >= budget_s:
                break
        return self.next_curve >= len(self.curves)

    def finish(self) -> list[str]:
        """After the last step: drop the replaced Action and take its name. Returns the names
        of the Actions made."""
        if self.replacing is not None and self.replacing.users == 0:
            old_name = self.replacing.name
            bpy.data.actions.remove(self.replacing)
            for action in self.actions:
                action.name = old_name
        for action in self.actions:
            action["dimitra"] = True     # marks it for Re-solve and Show landmarks
        return [a.name for a in self.actions]

    def rollback(self) -> None:
        """Everything as before `begin` (safe to call at any point, and twice)."""
        for id_data, remembered in reversed(self.remembered):
            blender_api.restore_animation(id_data, remembered)
        for action in self.actions:
            if action.name in bpy.data.actions and action.users == 0:
                bpy.data.actions.remove(action)
        self.remembered, self.actions, self.targets = [], [], {}


def rotation_channels(mode: str, rotations: np.ndarray) -> tuple[str, np.ndarray]:
    """(T, 3, 3) pose rotations -> (property, (C, T) channel values) for the bone's mode."""
    if mode in ("QUATERNION", "AXIS_ANGLE"):
        q = continuous_quaternions(matrix_to_quaternion(rotations))
        if mode == "QUATERNION":
            return "rotation_quaternion", q.T
        angle = 2 * np.arccos(np.clip(q[:, 0], -1, 1))
        axis = q[:, 1:] / np.maximum(np.linalg.norm(q[:, 1:], axis=1, keepdims=True), 1e-12)
        axis[np.linalg.norm(q[:, 1:], axis=1) < 1e-12] = [0, 1, 0]
        return "rotation_axis_angle", np.concatenate([angle[None], axis.T])
    eulers, previous = [], None
    for matrix in rotations:   # mathutils keeps consecutive Eulers compatible (no 360° flips)
        euler = Matrix(matrix.tolist()).to_euler(mode, previous) if previous is not None \
            else Matrix(matrix.tolist()).to_euler(mode)
        eulers.append(tuple(euler))
        previous = euler
    return "rotation_euler", np.array(eulers).T
