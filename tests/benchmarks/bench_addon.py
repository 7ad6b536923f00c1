"""The add-on's Generate on the sample rig (issue 6): 60 s of speech from Generate to keys
written with a warm backend, and the longest main-thread tick.

bpy runs in a child process (`--child`), apart from the torch benchmarks; the job is ticked
as Blender's timer would tick it. The backend is warmed by one job first; the reference render
is cached per rig, so the timed runs measure what an artist sees on the second Generate.
"""

import json
import statistics
import subprocess
import sys
import time


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


def main(runs: int = 3, seconds: float = 60.0) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_addon", "--child",
                           str(runs), str(seconds)], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench_addon failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(int(sys.argv[2]), float(sys.argv[3]))))
    else:
        print(json.dumps(main(), indent=1))
