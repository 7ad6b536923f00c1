"""The onnxruntime path: the same motion as torch for the same seed, on long audio too."""

import shutil

import numpy as np
import pytest

from dimitra.backend.demo import SPEECH
from dimitra.backend.generation.generator import GenerationOptions, MotionGenerator, choose_runtime
from dimitra.backend.generation.motion import audio_conditioning
from dimitra.backend.media.audio import load_audio
from dimitra.backend.model.checkpoint import DEFAULT_MODEL, load_bundle
from dimitra.backend.model.onnx_denoiser import shipped_export

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model yet")


@pytest.fixture(scope="module")
def conditioning():
    from dimitra.backend.features.speech_features import get_extractor

    bundle = load_bundle()
    audio = load_audio(SPEECH)[:16_000 * 9]       # 9 s: three windows, two carried contexts
    features = get_extractor(bundle.feature_extractor).extract(audio, 25.0)
    return audio_conditioning(features, audio, GenerationOptions())


def test_onnx_gives_the_torch_motion_for_the_same_seed(conditioning):
    bundle = load_bundle()
    neutral = bundle.motion_space.canonical_face
    options = GenerationOptions(seed=3)
    torch_canonical, torch_pose = MotionGenerator(bundle).generate(neutral=neutral, options=options,
                                                                   **conditioning)
    onnx = MotionGenerator(load_bundle(network=False), runtime="onnx")
    assert onnx.network.path == shipped_export(DEFAULT_MODEL)   # the export shipped beside it
    onnx_canonical, onnx_pose = onnx.generate(neutral=neutral, options=options, **conditioning)
    # Canonical units are inter-ocular distances: the bar is 1e-3 of it.
    assert np.abs(onnx_canonical - torch_canonical).max() < 1e-3
    assert np.abs(onnx_pose - torch_pose).max() < 1e-3
    # The motion is not trivially equal because both are still: it moves.
    assert torch_canonical.std(axis=0).max() > 0.01
    other, _ = onnx.generate(neutral=neutral, options=GenerationOptions(seed=4), **conditioning)
    assert np.abs(other - onnx_canonical).max() > 1e-2


def test_a_model_without_a_shipped_export_is_exported_into_the_cache_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DIMITRA_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "retrained.safetensors"
    shutil.copyfile(DEFAULT_MODEL, model)
    first = MotionGenerator(load_bundle(model, network=False), runtime="onnx")
    assert first.network.path.parent.parent == tmp_path / "cache"
    made = (first.network.path / "denoiser.onnx").stat().st_mtime_ns
    again = MotionGenerator(load_bundle(model, network=False), runtime="onnx")
    assert (again.network.path / "denoiser.onnx").stat().st_mtime_ns == made   # not exported again


def test_a_stale_shipped_export_is_not_used(tmp_path, monkeypatch):
    """A model file retrained in place must not run on the export of the old weights."""
    monkeypatch.setenv("DIMITRA_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "cmdt_default.safetensors"
    shutil.copyfile(DEFAULT_MODEL, model)
    shutil.copytree(shipped_export(DEFAULT_MODEL), shipped_export(model))
    (shipped_export(model) / "model.sha256").write_text("0" * 64 + "\n")
    generator = MotionGenerator(load_bundle(model, network=False), runtime="onnx")
    assert generator.network.path.parent.parent == tmp_path / "cache"


def test_an_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime must be one of auto, torch, onnx"):
        MotionGenerator(load_bundle(), runtime="tensorrt")


def test_auto_takes_onnx_on_a_cpu_and_torch_on_a_gpu_or_when_onnxruntime_fails(monkeypatch):
    from dimitra.backend.model import onnx_denoiser

    assert choose_runtime("auto", "cpu") == "onnx"
    assert choose_runtime("auto", "cuda") == "torch"
    assert choose_runtime("torch", "cpu") == "torch"
    assert MotionGenerator(load_bundle(network=False), runtime="auto").runtime == "onnx"

    def unavailable(*args, **kwargs):
        raise ImportError("no onnxruntime here")
    monkeypatch.setattr(onnx_denoiser, "OnnxNetwork", unavailable)
    assert MotionGenerator(load_bundle(network=False), runtime="auto").runtime == "torch"
    with pytest.raises(ImportError, match="no onnxruntime"):
        MotionGenerator(load_bundle(network=False), runtime="onnx")
