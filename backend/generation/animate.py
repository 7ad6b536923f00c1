"""`dimitra animate AUDIO --ref IMAGE --out OUT.npz`: speech + a reference face -> motion file
(or, with `--curves`, ARKit-52 or viseme curves for game engines: OUT.csv or OUT.json).

Audio is decoded and loudness-normalised (the training audio was), turned into speech
features, and the cMDT generates motion from the reference face's neutral shape; the motion
is placed in the reference image's pixel frame and written atomically. `--preview` renders the
landmark mesh over the reference, with the audio.
"""

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...retarget.curves import check_curves_path, solve_curves, write_curves
from ...retarget.motion_file import Motion, resample_motion, save_motion
from ..model.checkpoint import DEFAULT_MODEL, load_bundle
from .generator import GenerationOptions, MotionGenerator
from .motion import audio_conditioning, generate_motion

MAX_AUDIO_SECONDS = 4 * 3600


@dataclass
class AnimateRequest:
    audio: str | Path | bytes
    reference: str | Path | bytes
    options: GenerationOptions = field(default_factory=GenerationOptions)
    fps: float = 25.0
    max_audio_seconds: float = MAX_AUDIO_SECONDS   # longer audio is refused (AudioError)


class Animator:
    """The model loaded once; `animate` for every request (the server keeps one per worker)."""

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, device: str = "cpu",
                 runtime: str = "auto"):
        from ..features.speech_features import get_extractor

        device = resolve_device(device)
        self.model_path = Path(model_path)
        # The torch network is built only if the torch runtime is chosen (or onnx fails).
        self.bundle = load_bundle(model_path, device, network=False)
        self.generator = MotionGenerator(self.bundle, device, runtime)
        self.device, self.runtime = device, self.generator.runtime
        head = self.bundle.lips_head
        # One extractor per encoder: the network's and the lips head's names may share parts
        # ("whisper-tiny-en" and "whisper-tiny-en+whisper-base"), each part runs once per line.
        names = self.bundle.feature_extractor.split("+") + (head.features.split("+") if head else [])
        self.extractors = {name: get_extractor(name) for name in dict.fromkeys(names)}
        self._encoded: tuple[np.ndarray, dict[str, np.ndarray]] | None = None

    def _features(self, audio_16k: np.ndarray, name: str) -> np.ndarray:
        """(T, F) at 25 fps of `name` ("a+b" concatenated), each part encoded once per audio."""
        parts = self._encode(audio_16k, name.split("+"))
        return np.concatenate([parts[part] for part in name.split("+")], axis=1)

    def _encode(self, audio_16k: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """{part: (T, F_part)} for this audio, each part encoded once; the missing ones side by
        side in threads. CTranslate2 lets go of the GIL while it encodes: on 2 cores the
        network's and the lips head's encoders take 60 s of speech in 0.34 s together
        against 0.45-0.53 s one after the other (docs/BENCHMARKS.md)."""
        if self._encoded is None or self._encoded[0] is not audio_16k:
            self._encoded = (audio_16k, {})     # holds the audio, so `is` cannot be fooled
        parts = self._encoded[1]
        missing = [name for name in dict.fromkeys(names) if name not in parts]
        if len(missing) == 1:
            parts[missing[0]] = self.extractors[missing[0]].extract(audio_16k, 25.0)
        elif missing:
            with ThreadPoolExecutor(len(missing), thread_name_prefix="dimitra-encode") as pool:
                encoded = pool.map(lambda part: self.extractors[part].extract(audio_16k, 25.0),
                                   missing)
                parts.update(zip(missing, encoded))
        return parts

    def speech_features(self, audio_16k: np.ndarray) -> np.ndarray:
        """(N,) 16 kHz -> (T, F) at 25 fps: the network's features."""
        return self._features(audio_16k, self.bundle.feature_extractor)

    def lip_features(self, audio_16k: np.ndarray) -> np.ndarray | None:
        """(N,) 16 kHz -> (T, F_l) at 25 fps: the lips head's features (None without a head)."""
        head = self.bundle.lips_head
        return None if head is None else self._features(audio_16k, head.features)

    def audio_conditioning(self, audio_16k: np.ndarray, options: GenerationOptions) -> dict:
        """Features, silence and bilabials for `MotionGenerator.generate` (keyword arguments)."""
        self._encode(audio_16k, list(self.extractors))   # the network's and the head's at once
        features = self.speech_features(audio_16k)
        conditioning = audio_conditioning(features, audio_16k, options,
                                          self.bundle.feature_extractor,
                                          self.language(audio_16k, options)["code"],
                                          self.lip_features(audio_16k))
        self._encoded = None      # an hour's audio is not kept between requests
        return conditioning

    def language(self, audio_16k: np.ndarray, options: GenerationOptions) -> dict:
        """{"code": ISO code or None (unknown), "probability": float or None, "detected": bool}:
        options.language, or with "auto" Whisper's own guess (a multilingual encoder only;
        after speech_features on the same audio it costs ~0.03 s)."""
        if options.language != "auto":
            return {"code": options.language, "probability": None, "detected": False}
        detectors = [e.detect_language for e in self.extractors.values()
                     if hasattr(e, "detect_language")]   # a multilingual encoder, if any
        found = detectors[0](audio_16k) if detectors else None
        if found is None:
            return {"code": None, "probability": None, "detected": False}
        return {"code": found[0], "probability": round(found[1], 3), "detected": True}

    def animate(self, request: AnimateRequest, progress: Callable[[str, float], None] | None = None
                ) -> tuple[Motion, np.ndarray, object]:
        """Returns the motion, the normalised 16 kHz audio, and the Reference.

        progress(stage, fraction of the whole job) is called between stages and after every
        generated window; an exception raised there stops the job (the service's cancel).
        """
        from ..media.audio import load_audio, normalize_loudness
        from .reference import load_reference

        report = progress or (lambda stage, fraction: None)
        report("decoding", 0.0)
        audio = normalize_loudness(load_audio(request.audio, max_seconds=request.max_audio_seconds))
        report("reference", 0.05)
        reference = load_reference(request.reference)
        report("features", 0.1)
        started = time.perf_counter()
        self._encode(audio, list(self.extractors))   # the network's and the head's at once
        features = self.speech_features(audio)
        language = self.language(audio, request.options)   # reuses the features' encoding
        conditioning = audio_conditioning(features, audio, request.options,
                                          self.bundle.feature_extractor, language["code"],
                                          self.lip_features(audio))
        self._encoded = None      # an hour's audio is not kept between requests
        feature_seconds = time.perf_counter() - started
        report("sampling", 0.3)
        motion = generate_motion(self.generator, conditioning, reference.canonical, reference.head_pose,
                                 request.options, {
                                     "audio": _describe(request.audio),
                                     "reference": reference.source,
                                     "image_size": list(reference.image_size),
                                     "model": self.model_path.name,
                                     "features": self.bundle.feature_extractor,
                                     "language": language},
                                 lambda done: report("sampling", 0.3 + 0.7 * done))
        sampling_seconds = time.perf_counter() - started - feature_seconds
        motion.meta["timing_s"] = {"features": round(feature_seconds, 3),
                                   "sampling": round(sampling_seconds, 3)}
        if not (np.isfinite(motion.landmarks).all() and np.isfinite(motion.pose).all()):
            raise RuntimeError("the model produced non-finite motion; please report this input")
        return resample_motion(motion, request.fps), audio, reference


def animate_to_file(request: AnimateRequest, out: str | Path, preview: str | Path | None = None,
                    model_path: str | Path = DEFAULT_MODEL, device: str = "cpu",
                    runtime: str = "auto", curves: str | None = None) -> Motion:
    """Generate and write `out`: the motion file, or with `curves` ("arkit", "visemes") the
    motion solved onto the built-in face as a Live Link Face .csv or a .json
    (retarget/curves.py), refused before generating when `out` exists."""
    if curves:
        check_curves_path(out, curves)
    motion, audio, reference = Animator(model_path, device, runtime).animate(request)
    if curves:
        write_curves(out, solve_curves(motion, curves))
    else:
        save_motion(out, motion)
    if preview:
        from .preview import render_preview

        render_preview(motion, reference.image, audio, preview, image_size=reference.image_size)
    return motion


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; 'cuda' without one is an error.

    'auto' asks torch only where a CUDA build of it is installed: a CPU-only machine (or none
    with torch) never imports it, which costs most of a second."""
    if device == "auto":
        return "cuda" if _cuda_torch_installed() and _torch_sees_cuda() else "cpu"
    if device.startswith("cuda") and not _torch_sees_cuda():
        raise RuntimeError(f"device {device!r}: torch sees no CUDA GPU here; use --device cpu "
                           "(or auto), or install a CUDA build of torch")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


def _torch_sees_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _cuda_torch_installed() -> bool:
    """Whether the installed torch (if any) is a GPU build (CUDA or ROCm), from its version.py,
    unimported: CPU builds say `cuda: Optional[str] = None` and `hip: ... = None` there."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version.read_text()
    except OSError:
        return True   # unknown build: let torch answer
    builds = re.findall(r"^(?:cuda|hip)\b[^=\n]*=\s*(.+?)\s*$", text, re.MULTILINE)
    return any(value != "None" for value in builds) if builds else True


def _describe(source) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)
