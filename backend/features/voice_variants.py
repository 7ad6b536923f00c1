"""Training-time audio variants: the same speech as another voice, room or channel would give it.

Ten minutes of video hold a few dozen voices and recording set-ups; users bring others. Each
variant turns (N,) float32 samples at 16 kHz into a changed copy whose speech features still
line up frame for frame with the original video:

    "voice-high", "voice-low"  speed perturbation (Kaldi-style resampling): pitch and formants
                               move together, like a shorter or longer vocal tract; the copy is
                               shorter or longer by the factor, and its features are taken at
                               the frame rate times that factor, so frame t still covers the
                               same speech
    "room"                     a synthetic reverberant room (RT60 0.25-0.6 s) and mild noise
    "noisy"                    broadband noise at 8-15 dB SNR
    "phone"                    a 300-3400 Hz channel with 8-bit mu-law coding

Variants are seeded by the audio itself, so a dataset prepared twice gets the same copies.
Only training uses them (backend.training.windows draws one per window); generation never
changes the user's audio.
"""

import hashlib
from collections.abc import Callable

import numpy as np
from scipy import signal

SAMPLE_RATE = 16_000


def _rng(samples: np.ndarray, name: str) -> np.random.Generator:
    digest = hashlib.sha256(np.ascontiguousarray(samples[:SAMPLE_RATE * 5]).tobytes())
    digest.update(name.encode())
    return np.random.default_rng(int.from_bytes(digest.digest()[:8], "little"))


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)) + 1e-9)


def _speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times faster: pitch and formants times `factor`, length / `factor`."""
    length = max(1, round(len(samples) / factor))
    return signal.resample_poly(samples, 1000, round(1000 * factor))[:length].astype(np.float32)


def _room(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.25, 0.6)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 0.3
    response[0] = 1.0                                          # the direct path
    wet = signal.fftconvolve(samples, response)[:len(samples)]
    wet *= _rms(samples) / _rms(wet)
    return _with_noise(wet, rng, snr_db=rng.uniform(25, 35))


def _with_noise(samples: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    white = rng.standard_normal(len(samples))
    # Half white, half low-frequency (rumble, fans): a one-pole filter of white noise.
    low = signal.lfilter([1.0], [1.0, -0.97], rng.standard_normal(len(samples)))
    noise = white / _rms(white) + low / _rms(low)
    noise *= _rms(samples) / _rms(noise) * 10 ** (-snr_db / 20)
    return (samples + noise).astype(np.float32)


def _phone(samples: np.ndarray) -> np.ndarray:
    band = signal.butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = signal.sosfiltfilt(band, samples)
    peak = np.abs(narrow).max() + 1e-9
    x = np.clip(narrow / peak, -1, 1)
    coded = np.round(np.sign(x) * np.log1p(255 * np.abs(x)) / np.log(256) * 127) / 127
    decoded = np.sign(coded) * np.expm1(np.abs(coded) * np.log(256)) / 255
    return (decoded * peak).astype(np.float32)


# name -> (transform(samples, rng) -> samples, speed factor of the result)
VARIANTS: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], float]] = {
    "voice-high": (lambda x, rng: _speed(x, 1.15), 1.15),
    "voice-low": (lambda x, rng: _speed(x, 0.87), 0.87),
    "room": (_room, 1.0),
    "noisy": (lambda x, rng: _with_noise(x, rng, snr_db=rng.uniform(8, 15)), 1.0),
    "phone": (lambda x, rng: _phone(x), 1.0),
}


def voice_variant(samples_16k: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """(changed samples, speed factor): features of the copy taken at fps * factor have one
    row per frame of the original."""
    if name not in VARIANTS:
        raise ValueError(f"unknown voice variant {name!r}; choose one of: {', '.join(VARIANTS)}")
    transform, factor = VARIANTS[name]
    samples = np.asarray(samples_16k, dtype=np.float32)
    return transform(samples, _rng(samples, name)), factor
