"""When the lips must meet: bilabial phones (p, b, m) found in speech by PocketSphinx.

PocketSphinx 5 ships an English acoustic model and a phone language model, so phones can be
recognised offline without a transcript. On the reference alignments in
shared/data/speech-alignments (LibriVox, 29 bilabials) these settings find 66% of the
bilabials with 95% precision at about 37x real time on one core; wider beams find more
(86% at 1e-20) but run at 15x. The generator pulls the lips together where this says so.
"""

import os

import numpy as np

from backend.media.audio import frame_rms_db

SAMPLE_RATE = 16_000
BILABIALS = ("P", "B", "M")
CHUNK_SECONDS = 30.0
SILENT_DB = -50.0    # a chunk whose loudest frame is quieter than this holds no speech
_DECODER = None


def _decoder():
    """One decoder per process (loading the model takes ~0.3 s)."""
    global _DECODER
    if _DECODER is None:
        from pocketsphinx import Decoder, get_model_path

        model = get_model_path()
        _DECODER = Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                           allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
                           lw=2.0, pip=0.3, beam=1e-10, pbeam=1e-10, ds=2, loglevel="FATAL")
    return _DECODER


def bilabial_frames(samples_16k: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """(N,) float32 16 kHz speech -> (T,) float32 in [0, 1], 1 on frames inside a p, b or m.

    T = round(N / 16000 * fps). Long audio is decoded in 30 s chunks (bounded memory).
    """
    frames = round(len(samples_16k) / SAMPLE_RATE * fps)
    out = np.zeros(frames, np.float32)
    decoder = _decoder()
    chunk = int(CHUNK_SECONDS * SAMPLE_RATE)
    for offset in range(0, len(samples_16k), chunk):
        piece = np.clip(samples_16k[offset:offset + chunk], -1, 1)
        # Nothing to find in silence (and the recogniser invents phones in digital zeros).
        if len(piece) < SAMPLE_RATE // 10 or frame_rms_db(piece, fps).max() < SILENT_DB:
            continue
        decoder.start_utt()
        decoder.process_raw((piece * 32767).astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        for segment in decoder.seg():
            if segment.word not in BILABIALS:
                continue
            # PocketSphinx frames are 10 ms; mark video frames whose centre lies in the phone.
            start = offset / SAMPLE_RATE + segment.start_frame / 100
            end = offset / SAMPLE_RATE + (segment.end_frame + 1) / 100
            first = max(0, int(np.ceil(start * fps - 0.5)))
            last = min(frames, int(np.floor(end * fps - 0.5)) + 1)
            out[first:max(last, first + 1)] = 1.0
    return out
