"""The onnxruntime path: the same motion as torch for the same seed, on long audio too."""

import numpy as np
import pytest

from dimitra.backend.demo import SPEECH
from dimitra.backend.generation.generator import GenerationOptions, MotionGenerator
from dimitra.backend.generation.motion import audio_conditioning
from dimitra.backend.media.audio import load_audio
from dimitra.backend.model.checkpoint import DEFAULT_MODEL, load_bundle

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model yet")


@pytest.fixture(scope="module")
def conditioning():
    from dimitra.backend.features.speech_features import get_extractor

    bundle = load_bundle()
    audio = load_audio(SPEECH)[:16_000 * 9]       # 9 s: three windows, two carried contexts
    features = get_extractor(bundle.feature_extractor).extract(audio, 25.0)
    return audio_conditioning(features, audio, GenerationOptions())


def test_onnx_gives_the_torch_motion_for_the_same_seed(conditioning, tmp_path, monkeypatch):
    monkeypatch.setenv("DIMITRA_CACHE", str(tmp_path))
    bundle = load_bundle()
    neutral = bundle.motion_space.canonical_face
    options = GenerationOptions(seed=3)
    torch_canonical, torch_pose = MotionGenerator(bundle).generate(neutral=neutral, options=options,
                                                                   **conditioning)
    onnx = MotionGenerator(load_bundle(), runtime="onnx")
    assert onnx.denoiser.path.parent.parent == tmp_path        # exported into the cache
    onnx_canonical, onnx_pose = onnx.generate(neutral=neutral, options=options, **conditioning)
    # Canonical units are inter-ocular distances: the bar is 1e-3 of it.
    assert np.abs(onnx_canonical - torch_canonical).max() < 1e-3
    assert np.abs(onnx_pose - torch_pose).max() < 1e-3
    # The motion is not trivially equal because both are still: it moves.
    assert torch_canonical.std(axis=0).max() > 0.01
    other, _ = onnx.generate(neutral=neutral, options=GenerationOptions(seed=4), **conditioning)
    assert np.abs(other - onnx_canonical).max() > 1e-2


def test_an_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime must be one of auto, torch, onnx"):
        MotionGenerator(load_bundle(), runtime="tensorrt")


def test_auto_takes_onnx_on_a_small_cpu_and_falls_back_to_torch(tmp_path, monkeypatch):
    import torch

    from dimitra.backend.model import onnx_denoiser

    monkeypatch.setenv("DIMITRA_CACHE", str(tmp_path))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert MotionGenerator(load_bundle(), runtime="auto").runtime == "onnx"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)   # torch scales, onnxruntime not
    assert MotionGenerator(load_bundle(), runtime="auto").runtime == "torch"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)

    def unavailable(*args, **kwargs):
        raise ImportError("no onnxruntime here")
    monkeypatch.setattr(onnx_denoiser, "OnnxDenoiser", unavailable)
    assert MotionGenerator(load_bundle(), runtime="auto").runtime == "torch"
    with pytest.raises(ImportError, match="no onnxruntime"):
        MotionGenerator(load_bundle(), runtime="onnx")
