"""The CPU inference path runs without torch: `dimitra animate` and a service worker's job,
in processes where importing torch fails (so any import of it on the way would show)."""

import subprocess
import sys

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
