"""Speed and memory of generation (issue targets: 60 s of audio ≥ 50× faster than real time
on this CPU, model loaded; an hour of audio under 2 GB). Features and sampling separately."""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_HOUR_CHILD = """
import json, resource, sys, time
import numpy as np
from backend.demo import SPEECH
from backend.generation.animate import Animator
from backend.generation.generator import GenerationOptions
from backend.media.audio import load_audio
seconds = float(sys.argv[1])
options = GenerationOptions()
animator = Animator()
speech = load_audio(SPEECH)
audio = np.resize(speech, int(seconds * 16_000)).astype(np.float32)
start = time.perf_counter()
conditioning = animator.audio_conditioning(audio, options)
middle = time.perf_counter()
canonical, pose = animator.generator.generate(neutral=animator.bundle.motion_space.canonical_face,
                                              options=options, **conditioning)
end = time.perf_counter()
print(json.dumps({"features_s": middle - start, "sampling_s": end - middle,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(repeats: int = 3) -> dict:
    import numpy as np
    import torch

    from backend.demo import SPEECH
    from backend.generation.animate import Animator
    from backend.generation.generator import GenerationOptions, MotionGenerator
    from backend.media.audio import load_audio

    animator = Animator()
    options = GenerationOptions()
    audio = np.resize(load_audio(SPEECH), 60 * 16_000).astype(np.float32)
    neutral = animator.bundle.motion_space.canonical_face
    feature_times, sampling_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        conditioning = animator.audio_conditioning(audio, options)
        middle = time.perf_counter()
        animator.generator.generate(neutral=neutral, options=options, **conditioning)
        feature_times.append(middle - start)
        sampling_times.append(time.perf_counter() - middle)
    features_s, sampling_s = statistics.median(feature_times), statistics.median(sampling_times)
    onnx = MotionGenerator(animator.bundle, runtime="onnx")
    onnx_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        onnx.generate(neutral=neutral, options=options, **conditioning)
        onnx_times.append(time.perf_counter() - start)
    onnx_s = statistics.median(onnx_times)
    results = {"device": "cpu", "torch_threads": torch.get_num_threads(),
               "audio_s": 60, "features_s": round(features_s, 3), "sampling_s": round(sampling_s, 3),
               "realtime_factor": round(60 / (features_s + sampling_s), 1),
               "sampling_onnx_s": round(onnx_s, 3),
               "realtime_factor_onnx": round(60 / (features_s + onnx_s), 1)}
    print(f"60 s of audio: features {features_s:.2f} s + sampling {sampling_s:.2f} s = "
          f"{60 / (features_s + sampling_s):.0f}x real time; with onnxruntime sampling "
          f"{onnx_s:.2f} s = {60 / (features_s + onnx_s):.0f}x")
    out = subprocess.run([sys.executable, "-c", _HOUR_CHILD, "3600"], capture_output=True,
                         text=True, cwd=REPO, check=True)
    hour = json.loads(out.stdout.strip().splitlines()[-1])
    results["one_hour"] = {k: round(v, 1) for k, v in hour.items()}
    print(f"1 hour of audio: features {hour['features_s']:.0f} s, sampling "
          f"{hour['sampling_s']:.0f} s, peak {hour['peak_mb']:.0f} MB")
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
