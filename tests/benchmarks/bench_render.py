"""Speed of `dimitra render` (issue 15 targets: 256 px at >= 25 frames/s on this 2-core CPU,
an hour in bounded memory). The sample face driven by a talking-like motion: its own
landmarks with the jaw and lower lip dropping and rising and the head turning a little.

- frames/s of the renderer alone (warp + mouth network, and the warp alone), 256 and 512 px,
  medians of 3 runs of 100 frames after a warm-up;
- the whole command (decode, render, H.264 encode, audio) on 10 s and 60 s of motion, each in
  a child process that reports its peak memory: bounded memory means the two peaks match.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dimitra.backend.demo import REFERENCE_IMAGE
from dimitra.backend.generation.reference import load_reference
from dimitra.backend.render.mouth_net import MouthNet
from dimitra.backend.render.renderer import PhotorealRenderer
from dimitra.retarget.face import topology
from dimitra.retarget.motion_file import Motion, save_motion

REPO = Path(__file__).resolve().parents[2]
FPS = 25.0


def talking_motion(landmarks: np.ndarray, frames: int, image_size) -> Motion:
    """(frames, 478, 3): the reference face, jaw open 0..0.3 IOD at a syllable rate, head
    turning +-3 degrees in the picture plane."""
    t = np.arange(frames) / FPS
    iod = np.linalg.norm(landmarks[topology.LEFT_EYE_OUTER, :2] - landmarks[topology.RIGHT_EYE_OUTER, :2])
    chin = landmarks[topology.CHIN, 1]
    below_mouth = landmarks[:, 1] - landmarks[topology.UPPER_INNER_LIP, 1]
    weight = np.clip(below_mouth / max(chin - landmarks[topology.UPPER_INNER_LIP, 1], 1e-6), 0, 1)
    weight[list(topology.LIPS_INNER)[:11]] = 1.0     # the lower inner lip moves with the jaw
    opening = 0.3 * iod * (0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t))
    moved = np.repeat(landmarks[None].astype(np.float64), frames, axis=0)
    moved[..., 1] += opening[:, None] * weight[None]
    angle = np.radians(3.0) * np.sin(2 * np.pi * 0.3 * t)
    centre = landmarks[:, :2].mean(axis=0)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x, y = moved[..., 0] - centre[0], moved[..., 1] - centre[1]
    moved[..., 0], moved[..., 1] = centre[0] + cos * x - sin * y, centre[1] + sin * x + cos * y
    return Motion(moved.astype(np.float32), np.zeros((frames, 6), np.float32), FPS,
                  {"image_size": list(image_size)})


def bench_frames(repeats: int = 3, frames: int = 100) -> dict:
    reference = load_reference(REFERENCE_IMAGE)
    motion = talking_motion(reference.landmarks_px, frames, reference.image_size)
    results = {}
    for size in (256, 512):
        for label, net in (("warp_and_mouth_net", MouthNet()), ("warp_alone", None)):
            renderer = PhotorealRenderer(reference.image, reference.landmarks_px, size, net)
            renderer.render(motion.landmarks[0])
            rates = []
            for _ in range(repeats):
                started = time.perf_counter()
                for landmarks in motion.landmarks:
                    renderer.render(landmarks)
                rates.append(frames / (time.perf_counter() - started))
            results[f"{size}px_{label}_fps"] = round(statistics.median(rates), 1)
    return results


_COMMAND_CHILD = """
import json, resource, sys, time
from dimitra.backend.render.renderer import render_motion_file
started = time.perf_counter()
result = render_motion_file(sys.argv[1], sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - started
print(json.dumps({"frames": result["frames"], "seconds": round(seconds, 2),
                  "fps": round(result["frames"] / seconds, 1),
                  "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def bench_command(durations_s=(10, 60)) -> dict:
    """The whole render (no audio: the motion names none) in a child process per length."""
    reference = load_reference(REFERENCE_IMAGE)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for seconds in durations_s:
            motion_path = Path(folder) / f"motion_{seconds}.npz"
            save_motion(motion_path, talking_motion(reference.landmarks_px, int(seconds * FPS),
                                                    reference.image_size))
            out = subprocess.run([sys.executable, "-c", _COMMAND_CHILD, str(motion_path),
                                  str(REFERENCE_IMAGE), str(Path(folder) / f"out_{seconds}.mp4")],
                                 check=True, capture_output=True, text=True, cwd=REPO)
            results[f"{seconds}s"] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def main() -> dict:
    return {"renderer": bench_frames(), "command_256px": bench_command()}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
