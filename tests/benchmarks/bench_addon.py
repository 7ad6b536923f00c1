"""The add-on's Generate on the sample rig (issue 6): 60 s of speech from Generate to keys
written with a warm backend, and the longest main-thread tick.

bpy runs in a child process (`--child`), apart from the torch benchmarks; the job is ticked
as Blender's timer would tick it. The backend is warmed by one job first; the reference render
is cached per rig, so the timed runs measure what an artist sees on the second Generate.

`builtin_backend` (issue 16 target: Generate -> keys for 60 s under 2 s after the first run):
the Linux extension zip installed into a fresh bpy user folder, Generate with the default
preferences (the built-in backend, started by the first Generate) through the operator.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BUILTIN_INSTALL = """
import sys, bpy
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default",
                                         enable_on_install=True)
bpy.ops.wm.save_userpref()
"""

_BUILTIN_CHILD = """
import json, sys, time, bpy, addon_utils
blend, audio, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
addon_utils.enable("bl_ext.user_default.dimitra", default_set=True)
timings = []
for _ in range(runs + 1):
    bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False)
    bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
    started = time.perf_counter()
    assert bpy.ops.dimitra.generate(audio_file=audio) == {"FINISHED"}
    timings.append(time.perf_counter() - started)
addon_utils.disable("bl_ext.user_default.dimitra")
print(json.dumps({"first_generate_s": timings[0], "timings": timings[1:],
                  "bpy": ".".join(map(str, bpy.app.version))}))
"""


def child(runs: int, seconds: float) -> dict:
    import bpy

    from dimitra import blender_addon
    from dimitra.blender_addon import generate_job
    from dimitra.blender_addon.generate_job import Backend, GenerateJob
    from dimitra.blender_addon.sample_rig import build_scene
    from dimitra.blender_addon.scene_inputs import GenerateSettings, audio_input, face_inputs
    from tests.addon.conftest import make_speech
    from tests.service.server_process import REPO, ServerProcess

    work = REPO / ".bench_cache"
    work.mkdir(exist_ok=True)
    audio = make_speech(work / "speech_60s.wav", seconds, 0.0)
    blender_addon.register()
    server = ServerProcess("--workers", "1", "--max-audio-seconds", "600")
    try:
        def generate() -> GenerateJob:
            build_scene()
            bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
            settings = GenerateSettings(audio_file=str(audio), server=server.address)
            job = GenerateJob(settings, face_inputs(settings, bpy.context),
                              audio_input(settings, bpy.context.scene),
                              Backend(address=server.address), bpy.context.scene)
            job.run_to_completion()
            assert job.state == "done", job.message
            return job

        started = time.perf_counter()
        first = generate()            # warms the backend; renders the reference once
        cold_s = time.perf_counter() - started
        timings, ticks, max_ticks = [], [], []
        for _ in range(runs):
            started = time.perf_counter()
            job = generate()
            timings.append(time.perf_counter() - started)
            ticks.append(job.ticks)
            max_ticks.append(job.max_tick_s)
        frames = len(generate_job.RESULTS[job.actions[0]].motion.landmarks)
    finally:
        server.terminate()
        generate_job.stop_all()
        blender_addon.unregister()
    return {"audio_s": seconds, "frames": frames, "runs": runs,
            "first_generate_s": round(cold_s, 2),
            "first_max_tick_ms": round(first.max_tick_s * 1000, 1),
            "generate_to_keys_s_median": round(statistics.median(timings), 2),
            "generate_to_keys_s": [round(t, 2) for t in timings],
            "max_tick_ms": round(max(max_ticks) * 1000, 1), "ticks": ticks,
            "bpy": ".".join(map(str, bpy.app.version))}


def builtin_backend(runs: int = 3, seconds: float = 60.0) -> dict:
    """Generate -> keys with the installed extension's default (built-in) backend."""
    import build_addon
    from tests.addon.conftest import make_speech
    from tests.service.server_process import REPO

    work = REPO / ".bench_cache"
    work.mkdir(exist_ok=True)
    audio = make_speech(work / "speech_60s.wav", seconds, 0.0)
    with tempfile.TemporaryDirectory(prefix="dimitra-bench-builtin-") as folder:
        home = Path(folder)
        (extension,) = build_addon.build(["linux-x64"], home / "dist")
        zip_mb = round(extension.stat().st_size / 1e6, 1)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update({"BLENDER_USER_RESOURCES": str(home / "blender"),
                    "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")})
        blend = home / "sample_face.blend"
        subprocess.run([sys.executable, "-m", "dimitra.blender_addon.sample_rig", "--out",
                        str(blend)], check=True, capture_output=True, cwd=REPO)
        for script, arguments in ((_BUILTIN_INSTALL, [extension]),
                                  (_BUILTIN_CHILD, [blend, audio, runs])):
            done = subprocess.run([sys.executable, "-c", script, *map(str, arguments)], env=env,
                                  cwd=home, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"bench_addon (built-in) failed:\n{done.stdout[-2000:]}"
                                   f"{done.stderr[-2000:]}")
    measured = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    result = {"audio_s": seconds, "zip_mb": zip_mb,
              "first_generate_s": round(measured["first_generate_s"], 2),
              "generate_to_keys_s_median": round(statistics.median(measured["timings"]), 2),
              "generate_to_keys_s": [round(t, 2) for t in measured["timings"]],
              "bpy": measured["bpy"]}
    print(f"built-in backend, {seconds:.0f} s of speech: first Generate {result['first_generate_s']} s"
          f" (starts the worker), then {result['generate_to_keys_s']} s (median "
          f"{result['generate_to_keys_s_median']} s)")
    return result


def main(runs: int = 3, seconds: float = 60.0) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_addon", "--child",
                           str(runs), str(seconds)], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench_addon failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    results = json.loads(lines[-1])
    results["builtin"] = builtin_backend(runs, seconds)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(int(sys.argv[2]), float(sys.argv[3]))))
    else:
        print(json.dumps(main(), indent=1))
