"""Speed of the retarget (issue targets: solving 60 s at 30 fps with 52 keys under 0.5 s on
this CPU; writing the keys into Blender under 100 ms). Medians of 3."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dimitra.retarget.correspond import from_vertices
from dimitra.retarget.face.pose import PIXEL_FROM_UPRIGHT, Similarity
from dimitra.retarget.motion_file import Motion
from dimitra.retarget.sample_face import (
    HEAD_ORIGIN,
    INTER_OCULAR_M,
    SCENE_FROM_CANONICAL,
    build_sample_face,
)
from dimitra.retarget.solve import SolveOptions, solve

SECONDS, FPS = 60, 30.0
REPO = Path(__file__).resolve().parents[2]


def speech_like_motion(rig, frames: int, seed: int = 0) -> Motion:
    """The sample face driven by smooth random weights of all 52 keys, as a motion file."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / FPS
    weights = np.clip(0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 3, 52) * t + rng.uniform(0, 6, 52))
                      + rng.uniform(-0.3, 0.3, 52), 0, 1)
    deltas = rig.key_deltas()[:, :478]
    scene = rig.vertices[:478] + np.einsum("tk,knd->tnd", weights, deltas)
    canonical = (scene - HEAD_ORIGIN) @ SCENE_FROM_CANONICAL / INTER_OCULAR_M
    neutral = (rig.vertices[:478] - HEAD_ORIGIN) @ SCENE_FROM_CANONICAL / INTER_OCULAR_M
    pose = np.zeros((frames, 6))
    pose[:, 0] = 0.1 * np.sin(t[:, 0])
    reference = Similarity(np.float64(150.0), PIXEL_FROM_UPRIGHT, np.array([256.0, 256, 0]))
    landmarks = reference.apply(canonical)
    return Motion(landmarks.astype(np.float32), pose.astype(np.float32), FPS, {},
                  {"canonical": canonical.astype(np.float32), "neutral": neutral.astype(np.float32)})


def bench_solve(repeats: int = 3) -> dict:
    """In child processes: with numpy's default BLAS threads, and with one (this 2-core machine
    is shared; small matrices gain nothing from a second thread)."""
    results = {}
    for label, env in (("default_threads", {}), ("one_blas_thread", {"OPENBLAS_NUM_THREADS": "1"})):
        out = subprocess.run([sys.executable, "-c", _SOLVE_CHILD, str(repeats)], check=True,
                             capture_output=True, text=True, cwd=REPO, env={**os.environ, **env})
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


_SOLVE_CHILD = """
import json, sys
from tests.benchmarks.bench_retarget import solve_timing
print(json.dumps(solve_timing(int(sys.argv[1]))))
"""


def solve_timing(repeats: int) -> dict:
    face = build_sample_face()
    correspondence = from_vertices(face.rig, np.arange(478))
    motion = speech_like_motion(face.rig, int(SECONDS * FPS))
    times = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        animation = solve(face.rig, correspondence, motion, SolveOptions())
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return {"frames": animation.frame_count, "keys": len(animation.shape_keys),
            "bones": len(animation.bone_rotations),
            "solve_s": round(statistics.median(t for t, _ in times), 3),
            "solve_cpu_s": round(statistics.median(c for _, c in times), 3)}


def bench_write_keys(repeats: int = 3) -> dict:
    home = tempfile.mkdtemp(prefix="dimitra-bench-blender-")   # keep Blender out of $HOME
    os.environ.setdefault("BLENDER_USER_RESOURCES", home)
    os.environ.setdefault("XDG_CACHE_HOME", home)
    import bpy

    from dimitra.blender_addon.bake import write_animation
    from dimitra.blender_addon.sample_rig import save_sample_rig

    face = build_sample_face()
    correspondence = from_vertices(face.rig, np.arange(478))
    animation = solve(face.rig, correspondence, speech_like_motion(face.rig, int(SECONDS * FPS)))
    with tempfile.TemporaryDirectory() as work:
        rig_path = save_sample_rig(Path(work) / "sample_face.blend")
        times = []
        for _ in range(repeats):
            bpy.ops.wm.open_mainfile(filepath=str(rig_path))
            meshes = [bpy.data.objects["sample_face"]]
            armature = bpy.data.objects["sample_face_rig"]
            start = time.perf_counter()
            write_animation(animation, meshes, armature, 1, "bench")
            times.append(time.perf_counter() - start)
    channels = len(animation.shape_keys) + 4 * len(animation.bone_rotations)
    return {"frames": animation.frame_count, "channels": channels,
            "blender": bpy.app.version_string, "write_keys_s": round(statistics.median(times), 4)}


def main() -> dict:
    return {"solve": bench_solve(), "write_keys": bench_write_keys()}


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=1))
