"""Speed and memory of `dimitra prepare` (issue targets: ≥150 video frames/s per core at
256–512 px; a 10-minute 1080p clip within 1.5 GB).

Each measurement runs in a fresh single-worker process (`--jobs 1`). Reported: frames per
second of wall time of that process, and frames per CPU-second (user + system time of all its
threads: MediaPipe and the decoder use more than one), which is the per-core figure; the peak
resident memory is the process's own.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TALKING_FACES = REPO.parent / "shared" / "data" / "talking-faces"
CACHE = REPO / ".bench_cache"

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from dimitra.backend.dataset.prepare import find_sources, prepare_clip, track_video
from dimitra.backend.media.video import probe_video
video, dataset, stage = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
info = probe_video(video)
start, cpu_start = time.perf_counter(), time.process_time()
if stage == "track":
    times, _, _ = track_video(Path(video), info.width)
    frames = len(times)
else:
    record = prepare_clip(find_sources([video])[0], dataset, ("whisper-tiny-en",))
    frames = record.source_frames
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": frames, "seconds": seconds, "cpu_seconds": cpu_seconds,
                  "peak_mb": peak_mb}))
"""


def run_child(video: Path, stage: str, workdir: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(video), str(workdir), stage],
                         capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def long_1080p_clip(minutes: float = 10.0) -> Path:
    """A 1080p clip of the sample face moving, made once and kept in .bench_cache/."""
    import cv2
    import numpy as np
    from PIL import Image

    from dimitra.backend.demo import REFERENCE_IMAGE
    from dimitra.backend.media.video import write_video

    path = CACHE / f"sample_1080p_{minutes:g}min.mp4"
    if path.exists():
        return path
    face = np.asarray(Image.open(REFERENCE_IMAGE).convert("RGB"))
    canvas = np.full((1080, 1920, 3), 200, np.uint8)
    canvas[60:1020, 480:1440] = cv2.resize(face, (960, 960))
    frames = int(minutes * 60 * 25)

    def moving():
        for i in range(frames):
            matrix = cv2.getRotationMatrix2D((960, 540), 3 * np.sin(i / 40), 1.0)
            yield cv2.warpAffine(canvas, matrix, (1920, 1080))

    return write_video(path, moving(), 25, np.zeros(frames * 640, np.float32), crf=30,
                       preset="ultrafast")


def main(repeats: int = 3) -> dict:
    import tempfile

    results = {}
    clips = {"256px (styletalk Obama_clip2, 902 frames)": TALKING_FACES / "styletalk/Obama_clip2.mp4",
             "512px (sadtalker KatieHill, 200 frames)": TALKING_FACES / "sadtalker/WDA_KatieHill_000.mp4"}
    for label, clip in clips.items():
        if not clip.exists():
            print(f"skip {label}: shared data not here")
            continue
        for stage in ("track", "prepare"):
            runs = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as workdir:
                    runs.append(run_child(clip, stage, Path(workdir)))
            fps = statistics.median(r["frames"] / r["seconds"] for r in runs)
            per_core = statistics.median(r["frames"] / r["cpu_seconds"] for r in runs)
            results[f"{stage} {label}"] = {"frames_per_s_one_process": round(fps, 1),
                                           "frames_per_cpu_second": round(per_core, 1),
                                           "peak_mb": round(max(r["peak_mb"] for r in runs))}
            print(f"{stage:8} {label}: {fps:.0f} frames/s in one process, "
                  f"{per_core:.0f} frames per CPU-second")
    start = time.perf_counter()
    long_clip = long_1080p_clip()
    print(f"1080p 10-minute clip ready ({time.perf_counter() - start:.0f} s)")
    with tempfile.TemporaryDirectory() as workdir:
        run = run_child(long_clip, "prepare", Path(workdir))
    results["prepare 1080p 10-minute clip"] = {
        "frames_per_s_one_process": round(run["frames"] / run["seconds"], 1),
        "frames_per_cpu_second": round(run["frames"] / run["cpu_seconds"], 1),
        "peak_mb": round(run["peak_mb"]), "seconds": round(run["seconds"])}
    print(f"prepare 1080p 10 min: {run['seconds']:.0f} s, peak {run['peak_mb']:.0f} MB")
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
