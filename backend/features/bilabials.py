"""When the lips must meet: frames inside a bilabial phone (p, b, m), three ways.

- `BilabialDetector`, the default at generation time: a small convolutional net on the speech
  features the motion model already has (Whisper tiny.en states), so finding bilabials costs
  little beside the features themselves. Trained by `dimitra train-bilabials` on the train
  split, from the two label sources below; the shipped one is
  `backend/model/weights/bilabials_<features>.safetensors`, run at generation from its ONNX
  export beside it (`OnnxBilabialDetector`: no torch).
- `bilabial_frames`: PocketSphinx phone recognition (English), which needs no training but
  costs about as much as the rest of generation. The default beam (1e-10) misses more
  bilabials than a wide one (1e-20), at twice the speed. The training labels (with the wide
  beam), and the fallback for features without a detector.
- `aligned_bilabial_frames`: phone labels shipped beside a clip's audio (StyleTalk's
  `<stem>_seq.json`, one ARPAbet id per 1/30 s, with `phindex.json`), for training labels.

Their scores and costs: docs/MODEL_CARD.md, "Bilabial detector".
"""

import functools
import json
import os
from pathlib import Path

import numpy as np

from .speech_activity import holds_no_speech

SAMPLE_RATE = 16_000
BILABIALS = ("P", "B", "M")
CHUNK_SECONDS = 30.0
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "model" / "weights"


# ---------------------------------------------------------------------------------------------
# The learned detector
# ---------------------------------------------------------------------------------------------

class OnnxBilabialDetector:
    """The shipped detector's export (`bilabials_<features>.onnx`, made by
    `python -m dimitra.backend.model.onnx_denoiser`) on onnxruntime: (T, F) speech features at
    25 fps -> (T,) float32, 1 on frames inside a p, b or m. The same marks as the torch
    `BilabialDetector` it was exported from (backend.features.bilabial_net)."""

    def __init__(self, path: str | Path):
        import onnxruntime

        from ..model.onnx_denoiser import cpu_threads

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.feature_extractor = meta["feature_extractor"]
        self.threshold = float(meta["threshold"])
        self.source_digest = meta.get("source_sha256")   # of the .safetensors it came from

    def probability(self, features: np.ndarray) -> np.ndarray:
        """(T, F) -> (T,) float32 mean probability of a bilabial."""
        out = np.zeros(len(features), np.float32)
        # 9000 frames (6 min) at a time: bounded memory for an hour; the 12-frame overlap
        # covers the receptive field, so the pieces join exactly.
        piece, margin = 9000, 12
        for start in range(0, len(features), piece):
            lo, hi = max(0, start - margin), min(len(features), start + piece + margin)
            x = np.ascontiguousarray(features[lo:hi], dtype=np.float32)[None]
            probability = self.session.run(None, {"features": x})[0][0]
            kept = probability[start - lo:start - lo + min(piece, len(features) - start)]
            out[start:start + len(kept)] = kept
        return out

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (self.probability(features) > self.threshold).astype(np.float32)


def detector_path(feature_extractor: str) -> Path:
    return WEIGHTS_DIR / f"bilabials_{feature_extractor}.safetensors"


@functools.cache
def shipped_detector(feature_extractor: str):
    """The detector shipped for these speech features, or None (then use PocketSphinx): its
    ONNX export when it is beside the weights (no torch needed), else the torch detector."""
    path = detector_path(feature_extractor)
    if not path.is_file():
        return None
    if path.with_suffix(".onnx").is_file():
        from ..model.onnx_denoiser import file_digest

        exported = OnnxBilabialDetector(path.with_suffix(".onnx"))
        if exported.source_digest == file_digest(path):   # not a stale export
            return exported
    from .bilabial_net import load_detector_file

    return load_detector_file(path)


_TORCH_NAMES = ("BilabialNet", "BilabialDetector", "save_detector", "load_detector_file")


def __getattr__(name: str):
    """The torch side (backend.features.bilabial_net) under its old names, imported on use."""
    if name in _TORCH_NAMES:
        from . import bilabial_net

        return getattr(bilabial_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# PocketSphinx phone recognition
# ---------------------------------------------------------------------------------------------

@functools.cache
def _decoder(beam: float):
    """One decoder per process and beam (loading the model takes ~0.3 s)."""
    from pocketsphinx import Decoder, get_model_path

    model = get_model_path()
    return Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                   allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
                   lw=2.0, pip=0.3, beam=beam, pbeam=beam, ds=2, loglevel="FATAL")


def bilabial_frames(samples_16k: np.ndarray, fps: float = 25.0, beam: float = 1e-10) -> np.ndarray:
    """(N,) float32 16 kHz speech -> (T,) float32 in [0, 1], 1 on frames inside a p, b or m.

    T = round(N / 16000 * fps). Long audio is decoded in 30 s chunks (bounded memory).
    """
    frames = round(len(samples_16k) / SAMPLE_RATE * fps)
    out = np.zeros(frames, np.float32)
    decoder = _decoder(beam)
    chunk = int(CHUNK_SECONDS * SAMPLE_RATE)
    for offset in range(0, len(samples_16k), chunk):
        piece = np.clip(samples_16k[offset:offset + chunk], -1, 1)
        # Nothing to find in silence (and the recogniser invents phones in digital zeros).
        if len(piece) < SAMPLE_RATE // 10 or holds_no_speech(piece, fps):
            continue
        decoder.start_utt()
        decoder.process_raw((piece * 32767).astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        for segment in decoder.seg():
            if segment.word in BILABIALS:
                # PocketSphinx frames are 10 ms.
                _mark(out, offset / SAMPLE_RATE + segment.start_frame / 100,
                      offset / SAMPLE_RATE + (segment.end_frame + 1) / 100, fps)
    return out


# ---------------------------------------------------------------------------------------------
# Phone labels shipped with a clip
# ---------------------------------------------------------------------------------------------

ALIGNED_RATE = 30.0  # StyleTalk's phone labels: one per 1/30 s


def aligned_bilabial_frames(audio_path: str | Path, frames: int, start_s: float = 0.0,
                            fps: float = 25.0) -> np.ndarray | None:
    """(frames,) float32 from `<stem>_seq.json` + `phindex.json` beside the audio, for video
    frames starting `start_s` into it; None when the clip has no such labels."""
    audio_path = Path(audio_path)
    labels = audio_path.with_name(f"{audio_path.stem}_seq.json")
    index = audio_path.with_name("phindex.json")
    if not (labels.is_file() and index.is_file()):
        return None
    phone_of = {number: phone for phone, number in json.loads(index.read_text()).items()}
    sequence = json.loads(labels.read_text())
    at = np.floor((start_s + (np.arange(frames) + 0.5) / fps) * ALIGNED_RATE).astype(int)
    out = np.zeros(frames, np.float32)
    inside = at < len(sequence)
    out[inside] = [phone_of.get(sequence[i]) in BILABIALS for i in at[inside]]
    return out


def _mark(out: np.ndarray, start_s: float, end_s: float, fps: float) -> None:
    """Set the video frames whose centre lies in [start_s, end_s) (at least one frame)."""
    first = max(0, int(np.ceil(start_s * fps - 0.5)))
    last = min(len(out), int(np.floor(end_s * fps - 0.5)) + 1)
    out[first:max(last, first + 1)] = 1.0
