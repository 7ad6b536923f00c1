"""Speed and memory of generation (issue targets: 60 s of audio ≥ 50× faster than real time
on this CPU, model loaded; an hour of audio under 2 GB). Features and sampling separately.

And `dimitra animate` on 60 s as a whole process, as a pipeline calls it once per line
(issue 16 target: under 1.2 s), with where its time goes: start-up imports, loading, each
stage, from a child that times them in the order the command runs them."""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_STAGES_CHILD = """
import time
started = time.perf_counter()
import sys
from pathlib import Path
from dimitra.backend.generation.animate import AnimateRequest, Animator
from dimitra.backend.generation.reference import load_reference
from dimitra.backend.media.audio import load_audio, normalize_loudness
from dimitra.retarget.motion_file import save_motion
marks = {"imports": time.perf_counter()}
animator = Animator()
marks["model_load"] = time.perf_counter()
animator.speech_features(load_audio(sys.argv[1])[:16_000])   # loads Whisper (lazy)
marks["whisper_load"] = time.perf_counter()
audio = normalize_loudness(load_audio(sys.argv[1]))
marks["decode"] = time.perf_counter()
load_reference(sys.argv[2])
marks["reference"] = time.perf_counter()
motion, _, _ = animator.animate(AnimateRequest(sys.argv[1], sys.argv[2]))
marks["animate"] = time.perf_counter()
save_motion(Path(sys.argv[3]), motion)
marks["write"] = time.perf_counter()
seconds, last = {}, started
for name, mark in marks.items():
    seconds[name] = mark - last
    last = mark
seconds.update({"animate_features": motion.meta["timing_s"]["features"],
                "animate_sampling": motion.meta["timing_s"]["sampling"],
                "torch_imported": "torch" in sys.modules})
print(json.dumps(seconds))
""".replace("import time\n", "import json, time\n", 1)

_HOUR_CHILD = """
import json, resource, sys, time
import numpy as np
from dimitra.backend.demo import SPEECH
from dimitra.backend.generation.animate import Animator
from dimitra.backend.generation.generator import GenerationOptions
from dimitra.backend.media.audio import load_audio
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


def whole_process(repeats: int = 3) -> dict:
    """`dimitra animate` on 60 s of speech (the bundled speech repeated), whole processes,
    median of `repeats`; then one child's stage times (the stages run again inside
    `animate` there, so they add up to more than one command)."""
    import tempfile

    import numpy as np
    import soundfile

    from dimitra.backend.demo import REFERENCE_IMAGE, SPEECH
    from dimitra.backend.media.audio import load_audio

    with tempfile.TemporaryDirectory() as folder:
        speech = Path(folder) / "speech_60s.flac"
        soundfile.write(speech, np.resize(load_audio(SPEECH), 60 * 16_000), 16_000)
        out = Path(folder) / "line.npz"
        command = [sys.executable, "-m", "dimitra.backend.cli", "animate", str(speech), "--ref",
                   str(REFERENCE_IMAGE), "--out", str(out)]
        subprocess.run(command, check=True, capture_output=True)   # warm the file cache
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        stages = subprocess.run([sys.executable, "-c", _STAGES_CHILD, str(speech),
                                 str(REFERENCE_IMAGE), str(out)],
                                capture_output=True, text=True, check=True)
    breakdown = json.loads(stages.stdout.strip().splitlines()[-1])
    result = {"animate_60s_process_s": round(statistics.median(walls), 3),
              "runs_s": [round(w, 3) for w in walls],
              "stages_s": {k: round(v, 3) if isinstance(v, float) else v
                           for k, v in breakdown.items()}}
    print(f"`dimitra animate` on 60 s, whole process: {result['animate_60s_process_s']:.2f} s "
          f"(median of {repeats}; runs {result['runs_s']}); stages {result['stages_s']}")
    return result


def main(repeats: int = 3) -> dict:
    import numpy as np
    import torch

    from dimitra.backend.demo import SPEECH
    from dimitra.backend.features.bilabials import bilabial_frames
    from dimitra.backend.generation.animate import Animator
    from dimitra.backend.generation.generator import GenerationOptions, MotionGenerator
    from dimitra.backend.generation.motion import audio_conditioning
    from dimitra.backend.media.audio import load_audio

    animator = Animator()   # runtime auto: onnxruntime on this CPU
    options = GenerationOptions()
    audio = np.resize(load_audio(SPEECH), 60 * 16_000).astype(np.float32)
    neutral = animator.bundle.motion_space.canonical_face
    names = animator.bundle.feature_extractor
    times = {"whisper": [], "bilabials": [], "sampling": [], "pocketsphinx": [], "sampling_torch": []}
    torch_generator = MotionGenerator(animator.bundle, runtime="torch")
    for _ in range(repeats):
        line = audio.copy()     # a new array: the Animator encodes each audio array once
        start = time.perf_counter()
        features = animator.speech_features(line)
        lip_features = animator.lip_features(line)   # the lips head's: tiny.en cut after layer 3
        middle = time.perf_counter()
        conditioning = audio_conditioning(features, line, options, names,
                                          lip_features=lip_features)
        after = time.perf_counter()
        animator.generator.generate(neutral=neutral, options=options, **conditioning)
        end = time.perf_counter()
        bilabial_frames(audio)
        ended = time.perf_counter()
        torch_generator.generate(neutral=neutral, options=options, **conditioning)
        times["sampling_torch"].append(time.perf_counter() - ended)
        for name, seconds in (("whisper", middle - start), ("bilabials", after - middle),
                              ("sampling", end - after), ("pocketsphinx", ended - end)):
            times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    total = median["whisper"] + median["bilabials"] + median["sampling"]
    with_pocketsphinx = total - median["bilabials"] + median["pocketsphinx"]
    results = {"device": "cpu", "runtime": animator.runtime, "steps": options.steps,
               "torch_threads": torch.get_num_threads(), "audio_s": 60,
               **{f"{name}_s": round(value, 3) for name, value in median.items()},
               "total_s": round(total, 3), "realtime_factor": round(60 / total, 1),
               "realtime_factor_with_pocketsphinx": round(60 / with_pocketsphinx, 1)}
    print(f"60 s of audio: Whisper features {median['whisper']:.2f} s + bilabial detector "
          f"{median['bilabials'] * 1000:.0f} ms + sampling ({animator.runtime}, {options.steps} "
          f"steps) {median['sampling']:.2f} s = {total:.2f} s, {60 / total:.0f}x real time. "
          f"With PocketSphinx instead of the detector ({median['pocketsphinx']:.2f} s): "
          f"{60 / with_pocketsphinx:.0f}x; sampling with torch {median['sampling_torch']:.2f} s")
    # A short dialogue line, the unit of a studio's batch bake: everything per line.
    line = np.resize(load_audio(SPEECH), 3 * 16_000).astype(np.float32)
    line_times = []
    for _ in range(5):
        start = time.perf_counter()
        conditioning = animator.audio_conditioning(line, options)
        animator.generator.generate(neutral=neutral, options=options, **conditioning)
        line_times.append(time.perf_counter() - start)
    results["line_3s_s"] = round(statistics.median(line_times), 3)
    print(f"a 3 s line: {results['line_3s_s']:.3f} s, features and sampling "
          f"({3 / results['line_3s_s']:.0f}x real time)")
    out = subprocess.run([sys.executable, "-c", _HOUR_CHILD, "3600"], capture_output=True,
                         text=True, cwd=REPO, check=True)
    hour = json.loads(out.stdout.strip().splitlines()[-1])
    results["one_hour"] = {k: round(v, 1) for k, v in hour.items()}
    print(f"1 hour of audio: features {hour['features_s']:.0f} s, sampling "
          f"{hour['sampling_s']:.0f} s, peak {hour['peak_mb']:.0f} MB")
    results["whole_process"] = whole_process()
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
