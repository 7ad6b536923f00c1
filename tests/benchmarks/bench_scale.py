"""Batch bakes on Ray against the single-process manifest bake (issue 17): 100 lines of 3 s on
the sample rig, baked to .glb by `dimitra bake --manifest` in one process, and on a local Ray
with 1 and 2 workers.

Each run is a fresh process and starts from nothing (Ray started, model loaded), as a user's
run does: `bake_manifest` as `dimitra bake --manifest` runs it, and `bake_on_ray` as
`--ray local --workers N` runs it. Reported per run: lines per minute of wall time; the model load each worker pays once
(the bpy import, the model, the first render and fit is then part of its first line); the
steady per-line bake time; and Ray's own overhead per line: the worker's wall time between
lines less the bake itself (the driver's dispatch, the result's trip, the progress bar).
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINES, LINE_SECONDS = 100, 3.0

# The single-process manifest bake (what `dimitra bake --manifest` runs), left with os._exit:
# bpy 4.5 can deadlock in its C++ exit handlers.
_ONE_PROCESS_CHILD = """
import json, os, sys, time
started = time.perf_counter()
from dimitra.blender_addon.bake import bake_manifest
reports = bake_manifest(sys.argv[1], sys.argv[2], progress=False)
print(json.dumps({"wall": time.perf_counter() - started, "reports": reports}))
sys.stdout.flush()
os._exit(0)
"""

_RAY_CHILD = """
import json, sys, time
started = time.perf_counter()
from dimitra.backend.scale.bake import bake_on_ray
from dimitra.blender_addon.bake_settings import BakeSettings
from dimitra.blender_addon.manifest import read_manifest
manifest, rig, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
run = bake_on_ray(read_manifest(manifest, rig), BakeSettings(), "local", workers, progress=False)
print(json.dumps({"wall": time.perf_counter() - started, "stages": run.seconds,
                  "workers": run.workers, "reports": run.reports}))
"""


def make_lines(folder: Path) -> tuple[Path, Path]:
    """The sample rig and a manifest of LINES slices of the bundled speech (wrapping round)."""
    import numpy as np
    import soundfile

    from dimitra.backend.demo import SPEECH
    from dimitra.backend.media.audio import load_audio

    subprocess.run([sys.executable, "-c", "import os, sys; from dimitra.blender_addon.sample_rig "
                    "import save_sample_rig; save_sample_rig(sys.argv[1]); os._exit(0)",
                    str(folder / "rig.blend")], check=True, capture_output=True)
    speech = load_audio(SPEECH)
    length = int(LINE_SECONDS * 16_000)
    rows = []
    for index in range(LINES):
        start = (index * 7_919) % len(speech)   # a prime stride: 100 different cuts
        cut = np.take(speech, np.arange(start, start + length), mode="wrap")
        soundfile.write(folder / f"line{index:03d}.wav", cut, 16_000)
        rows.append(f"line{index:03d}.wav,OUT/line{index:03d}.glb")
    manifest = folder / "lines.csv"
    manifest.write_text("audio,out\n" + "\n".join(rows) + "\n")
    return folder / "rig.blend", manifest


def one_process(rig: Path, manifest: Path, folder: Path) -> dict:
    lines = manifest.read_text().replace("OUT/", "single/")
    (folder / "single.csv").write_text(lines)
    out = subprocess.run([sys.executable, "-c", _ONE_PROCESS_CHILD, str(folder / "single.csv"),
                          str(rig)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    wall, reports = result["wall"], result["reports"]
    assert all(r["status"] == "ok" for r in reports), reports
    seconds = [r["seconds"] for r in reports]
    median = statistics.median(seconds)
    return {"wall_s": round(wall, 1), "lines_per_min": round(60 * LINES / wall, 1),
            "start_up_s": round(wall - sum(seconds) + seconds[0] - median, 2),
            "median_line_s": round(median, 3)}


def on_ray(rig: Path, manifest: Path, folder: Path, workers: int) -> dict:
    name = f"ray{workers}"
    (folder / f"{name}.csv").write_text(manifest.read_text().replace("OUT/", f"{name}/"))
    out = subprocess.run([sys.executable, "-c", _RAY_CHILD, str(folder / f"{name}.csv"),
                          str(rig), str(workers)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    reports = result["reports"]
    assert all(r["status"] == "ok" for r in reports), reports
    seconds = [r["seconds"] for r in reports]
    median = statistics.median(seconds)
    stages = result["stages"]
    # A worker's first line also renders the rig and fits the correspondence, and runs the
    # model's first inference: counted with its start as the cost paid once per worker.
    first_extra = [next(r["seconds"] for r in reports if r["worker"] == worker) - median
                   for worker in {r["worker"] for r in reports}]
    # Once started, each worker is busy baking or waiting on Ray: the difference per line.
    overhead = (stages["lines"] * workers - sum(seconds)) / LINES
    return {"wall_s": round(result["wall"], 1),
            "lines_per_min": round(60 * LINES / result["wall"], 1),
            "lines_per_min_once_started": round(60 * LINES / stages["lines"], 1),
            "ray_start_s": round(stages["ray"], 2),
            "worker_start_up_s": round(statistics.median(
                [w["load_seconds"] for w in result["workers"]])
                + statistics.median(first_extra), 2),
            "median_line_s": round(median, 3),
            "ray_overhead_per_line_s": round(overhead, 3)}


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="dimitra-bench-scale-") as work:
        folder = Path(work)
        rig, manifest = make_lines(folder)
        results = {"lines": LINES, "line_seconds": LINE_SECONDS,
                   "one_process": one_process(rig, manifest, folder)}
        print(f"one process: {results['one_process']}")
        for workers in (1, 2):
            results[f"ray_{workers}_workers"] = on_ray(rig, manifest, folder, workers)
            print(f"ray, {workers} workers: {results[f'ray_{workers}_workers']}")
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
