"""Whisper's log-mel spectrogram in numpy: the input of its encoder.

The same computation as faster-whisper's `FeatureExtractor` (MIT licence), which the
features were made with, written out here so the inference path does not import the
faster_whisper package (its import pulls in PyAV, tokenizers and huggingface_hub, none of
which the encoder needs, and the Blender extension would have to carry them). Equal to it to
the last bit (tested).
"""

import functools

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 400       # samples: 25 ms windows
HOP = 160         # samples: 10 ms, 100 frames per second
N_MELS = 80


@functools.cache
def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS
                ) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64 Slaney-style mel filter bank (librosa's, as Whisper's)."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mels = np.linspace(0.0, 45.245640471924965, n_mels + 2)   # 0 Hz .. Nyquist of 16 kHz, in mel
    f_sp = 200.0 / 3
    freqs = f_sp * mels                                         # the linear part, below 1 kHz
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    log_step = np.log(6.4) / 27.0
    above = mels >= min_log_mel
    freqs[above] = min_log_hz * np.exp(log_step * (mels[above] - min_log_mel))
    spacing = np.diff(freqs)
    ramps = freqs.reshape(-1, 1) - fft_freqs.reshape(1, -1)
    lower = -ramps[:-2] / np.expand_dims(spacing[:-1], axis=1)
    upper = ramps[2:] / np.expand_dims(spacing[1:], axis=1)
    weights = np.maximum(np.zeros_like(lower), np.minimum(lower, upper))
    weights *= np.expand_dims(2.0 / (freqs[2:n_mels + 2] - freqs[:n_mels]), axis=1)
    return weights


def whisper_log_mel(samples: np.ndarray) -> np.ndarray:
    """(N,) float32 at 16 kHz -> (80, N // 160) float32 log-mel, scaled as Whisper expects:
    log10 power floored 8 below the clip's maximum, then (x + 4) / 4. Frames are centred
    (reflect padding), the last one dropped, as in Whisper."""
    samples = np.asarray(samples, dtype=np.float32)
    window = np.hanning(N_FFT + 1)[:-1].astype("float32")        # periodic Hann
    padded = np.pad(samples[None], ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    count = 1 + (padded.shape[1] - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, (1, count, N_FFT), (padded.strides[0], HOP * padded.strides[1], padded.strides[1]))
    spectrum = np.fft.rfft(frames * window, n=N_FFT, axis=-1).transpose((0, 2, 1))[0]
    power = np.abs(spectrum.astype("complex64")[..., :-1]) ** 2
    mel = mel_filters().astype("float32") @ power
    log_spec = np.log10(np.clip(mel, a_min=1e-10, a_max=None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
