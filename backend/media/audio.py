"""The project's one audio loader, and the loudness measures built on it.

Every way into the project (training data, the CLI, the backend service) decodes speech with
`load_audio`. PyAV bundles ffmpeg, so WAV in any sample format, MP3, FLAC, OGG, M4A/AAC and
the audio track of a video all take the same path: decode, average the channels to mono,
resample to 16 kHz with ffmpeg's resampler (swr).

Why swr rather than scipy's resample_poly: both keep timing (an impulse at 1 s stays at 1 s)
and both pass a 1 kHz tone untouched, but swr rejects aliases far better (a 9 kHz tone from
44.1 kHz comes out at -62 dB against -31 dB). Its own stereo-to-mono downmix weights each
channel by 0.707, so channels are averaged here instead.
"""

import functools
import io
import os
from pathlib import Path

import av
import numpy as np

from ...retarget.atomic_file import atomic_open

SAMPLE_RATE = 16_000
FLOOR_DB = -100.0
PEAK_LIMIT = 0.99
# AAC and Opus encoders pad the last frame with silence; when the decoded audio overruns the
# container's stated duration by less than this, the container is right.
_MAX_ENCODER_PADDING_S = 0.1


class AudioError(ValueError):
    """Audio that cannot be used; the message names the input and says what to do."""


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

def load_audio(source, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None
               ) -> np.ndarray:
    """Decode speech to (N,) float32 mono samples in [-1, 1] at `sample_rate` Hz.

    source: a path (str or Path) to any audio file or video with an audio track, or the bytes
    of such a file (audio sent over the network). max_seconds: refuse longer audio, checked
    from the container's header before decoding and again while decoding. The first sample is
    the first decoded sample; `audio_start_time` says where that lies on the container's clock.
    Raises AudioError for missing, empty, damaged, track-less or over-long input.
    """
    name = _describe(source)
    with _open(source, name) as container:
        stream = _audio_stream(container, name)
        stated_s = _stated_duration(container, stream)
        if max_seconds is not None and stated_s is not None and stated_s > max_seconds:
            raise _too_long(name, stated_s, max_seconds)
        samples = _decode_mono(container, stream, name, sample_rate, max_seconds)

    if len(samples) == 0:
        raise AudioError(f"{name} contains no audio samples; it may be truncated. "
                         "Export the recording again.")
    if stated_s is not None:
        stated_n = round(stated_s * sample_rate)
        if 0 < len(samples) - stated_n <= _MAX_ENCODER_PADDING_S * sample_rate:
            samples = samples[:stated_n]
    # Float files and resampler ringing can overshoot full scale.
    return np.clip(samples, -1.0, 1.0)


def audio_start_time(source) -> float:
    """Seconds at which the audio stream starts on the container's clock (0 if unknown).

    Compare it with the video stream's start time to align audio with video frames. For a
    lone MP3, ffmpeg reports the encoder delay it skipped here (about 25 ms).
    """
    name = _describe(source)
    with _open(source, name) as container:
        stream = _audio_stream(container, name)
        if stream.start_time is None:
            return 0.0
        return float(stream.start_time * stream.time_base)


def _describe(source) -> str:
    """How error messages name the input."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"the audio data ({len(source)} bytes)"
    return f"'{os.fspath(source)}'"


def _open(source, name: str) -> av.container.InputContainer:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(f"{name} is empty; send the bytes of an audio file.")
        file = io.BytesIO(source)
    else:
        path = Path(source)
        if path.is_dir():
            raise AudioError(f"{name} is a folder; pass an audio or video file.")
        if not path.exists():
            raise AudioError(f"{name} does not exist; check the path.")
        if path.stat().st_size == 0:
            raise AudioError(f"{name} is empty (0 bytes); export the recording again.")
        file = str(path)
    try:
        return av.open(file, metadata_errors="ignore")
    except av.error.FFmpegError as error:
        raise AudioError(f"{name} could not be read as audio ({error.strerror}); it may be "
                         "truncated or damaged. Export it again, e.g. as WAV.") from error


def _audio_stream(container, name: str) -> av.audio.stream.AudioStream:
    stream = container.streams.best("audio")
    if stream is None:
        raise AudioError(f"{name} has no audio track; pass the speech as a same-stem .wav "
                         "beside it.")
    return stream


def _stated_duration(container, stream) -> float | None:
    """Seconds of audio the header promises, or None if it does not say."""
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _too_long(name: str, seconds: float, max_seconds: float) -> AudioError:
    return AudioError(f"{name} is at least {seconds:.1f} s long, more than the "
                      f"{max_seconds:g} s limit; split it into shorter clips.")


def _decode_mono(container, stream, name: str, sample_rate: int,
                 max_seconds: float | None) -> np.ndarray:
    """(N,) float32: every frame of `stream`, channels averaged, resampled to `sample_rate`."""
    # fltp keeps channels apart so they can be averaged; the input's channel layout is kept.
    resampler = av.AudioResampler(format="fltp", rate=sample_rate)
    chunks = []
    decoded_s = 0.0
    try:
        for frame in container.decode(stream):
            decoded_s += frame.samples / frame.sample_rate
            if max_seconds is not None and decoded_s > max_seconds:
                raise _too_long(name, decoded_s, max_seconds)
            chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(None)]
    except av.error.FFmpegError as error:
        raise AudioError(f"{name} is damaged after {decoded_s:.2f} s of audio "
                         f"({error.strerror}); export it again.") from error
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# Loudness
# ---------------------------------------------------------------------------------------------

_FRAMES_PER_PIECE = 4096  # video frames measured at a time (bounded float64 temporaries)
GATING_BLOCK_S = 0.4     # BS.1770 gating blocks of 400 ms, every 100 ms
_STREAM_SECONDS = 60     # filtered in pieces: an hour of audio never needs a float64 copy


def integrated_loudness(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """(N,) mono -> integrated gated loudness in LUFS (ITU-R BS.1770-4), -inf for silence.

    pyloudnorm's K-weighting filters and gating, in numpy alone (no scipy: its import costs
    half a second of every `dimitra animate`) and in a stream, so memory stays bounded
    (pyloudnorm itself holds several float64 copies of the whole signal, about 1.4 GB extra
    for an hour at 16 kHz). The two IIR stages are applied as their joint impulse response,
    one second long, by FFT convolution with overlap-add: the response has decayed below
    1e-100 by then, so the value is pyloudnorm's to float precision (tested).
    """
    response = _k_weighting_response(sample_rate)                  # (taps,) float64
    step = round(0.1 * sample_rate)
    piece = _STREAM_SECONDS * sample_rate
    size = 1 << int(np.ceil(np.log2(piece + len(response) - 1)))
    spectrum = np.fft.rfft(response, size)
    sub_energy, carry, overlap = [], np.zeros(0), np.zeros(len(response) - 1)
    for start in range(0, len(samples), piece):
        x = samples[start:start + piece].astype(np.float64)
        full = np.fft.irfft(np.fft.rfft(x, size) * spectrum, size)[:len(x) + len(response) - 1]
        full[:len(overlap)] += overlap
        x, overlap = full[:len(x)], full[len(x):].copy()
        if len(overlap) < len(response) - 1:   # a last piece shorter than the response
            overlap = np.concatenate([overlap, np.zeros(len(response) - 1 - len(overlap))])
        x = np.concatenate([carry, x * x])
        whole = len(x) // step * step
        sub_energy.append(x[:whole].reshape(-1, step).sum(axis=1))
        carry = x[whole:]
    sums = np.concatenate(sub_energy)                              # (N // step,) per 100 ms
    duration = len(samples) / sample_rate
    blocks = int(np.round((duration - GATING_BLOCK_S) / 0.1)) + 1
    window = round(GATING_BLOCK_S / 0.1)
    padded = np.concatenate([sums, np.zeros(max(0, blocks + window - 1 - len(sums)))])
    z = np.convolve(padded, np.ones(window), mode="valid")[:blocks] / (GATING_BLOCK_S * sample_rate)
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10 * np.log10(z)
    gated = z[block_loudness >= -70.0]
    if len(gated) == 0:
        return float("-inf")
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    kept = z[(block_loudness > relative) & (block_loudness > -70.0)]
    with np.errstate(divide="ignore"):
        return float(-0.691 + 10 * np.log10(kept.mean())) if len(kept) else float("-inf")


@functools.cache
def _k_weighting_response(sample_rate: int) -> np.ndarray:
    """(sample_rate,) float64: the impulse response of BS.1770's K-weighting, pyloudnorm's two
    biquads (a +4 dB high shelf at 1500 Hz, a high pass at 38 Hz) in cascade."""
    response = np.zeros(sample_rate)
    response[0] = 1.0
    for gain_db, q, centre, kind in ((4.0, 1 / np.sqrt(2), 1500.0, "high_shelf"),
                                     (0.0, 0.5, 38.0, "high_pass")):
        b, a = _biquad(gain_db, q, centre, sample_rate, kind)
        response = _iir(b, a, response)
    return response


def _biquad(gain_db: float, q: float, centre: float, sample_rate: int, kind: str):
    """(b, a) normalised by a[0], pyloudnorm's IIRfilter formulas (the Audio EQ Cookbook)."""
    amplitude = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * (centre / sample_rate)
    alpha = np.sin(w0) / (2.0 * q)
    cos, root = np.cos(w0), np.sqrt(amplitude)
    if kind == "high_shelf":
        A = amplitude   # noqa: N806 (the cookbook's name)
        b = [A * ((A + 1) + (A - 1) * cos + 2 * root * alpha), -2 * A * ((A - 1) + (A + 1) * cos),
             A * ((A + 1) + (A - 1) * cos - 2 * root * alpha)]
        a = [(A + 1) - (A - 1) * cos + 2 * root * alpha, 2 * ((A - 1) - (A + 1) * cos),
             (A + 1) - (A - 1) * cos - 2 * root * alpha]
    else:   # high_pass
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array(b) / a[0], np.array(a) / a[0]


def _iir(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A biquad over a short signal (direct form I; a loop, for the impulse response only)."""
    y = np.zeros_like(x)
    x1 = x2 = y1 = y2 = 0.0
    for i, value in enumerate(x.tolist()):
        out = b[0] * value + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
        x2, x1, y2, y1 = x1, value, y1, out
        y[i] = out
    return y


def normalize_loudness(samples: np.ndarray, sample_rate: int = SAMPLE_RATE,
                       target_lufs: float = -23.0) -> np.ndarray:
    """(N,) float32 scaled to `target_lufs` integrated loudness (ITU-R BS.1770, LUFS).

    Peaks are then kept at |x| <= 0.99 by scaling the whole clip down, so a very peaky clip
    ends up quieter than the target. Silence, and clips shorter than one 0.4 s gating block,
    have no measurable loudness: they come back unchanged.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) < GATING_BLOCK_S * sample_rate:
        return samples
    loudness = integrated_loudness(samples, sample_rate)
    if not np.isfinite(loudness):
        return samples
    scaled = samples * np.float32(10.0 ** ((target_lufs - loudness) / 20.0))
    peak = float(np.max(np.abs(scaled)))
    if peak > PEAK_LIMIT:
        scaled *= np.float32(PEAK_LIMIT / peak)
    return scaled


def video_frame_count(num_samples: int, fps: float = 25.0,
                      sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames T that `num_samples` of audio span at `fps` (rounded to the nearest)."""
    return round(num_samples * fps / sample_rate)


def frame_rms_db(samples: np.ndarray, fps: float = 25.0, sample_rate: int = SAMPLE_RATE,
                 num_frames: int | None = None) -> np.ndarray:
    """(T,) float32 RMS level per video frame in dBFS, floored at -100 dB.

    dBFS here is 20·log10(RMS): a full-scale square wave is 0 dB, a full-scale sine -3 dB.
    Frame t covers samples [t, t+1) · sample_rate / fps; the last frame may be partial.
    T is `num_frames` when given (frames the audio does not reach read the floor), else it
    follows from the audio's length.
    """
    samples = np.asarray(samples).reshape(-1)
    if num_frames is None:
        num_frames = video_frame_count(len(samples), fps, sample_rate)
    edges = np.round(np.arange(num_frames + 1) * (sample_rate / fps)).astype(np.int64)
    edges = np.minimum(edges, len(samples))
    power = np.empty(num_frames)
    # A running sum of energy handles a non-integer number of samples per frame; it restarts
    # every 4096 frames so an hour of audio needs no float64 copy of itself.
    for first in range(0, num_frames, _FRAMES_PER_PIECE):
        part = edges[first:first + _FRAMES_PER_PIECE + 1]
        energy = np.concatenate([[0.0], np.cumsum(np.square(samples[part[0]:part[-1]],
                                                            dtype=np.float64))])
        power[first:first + len(part) - 1] = (np.diff(energy[part - part[0]])
                                              / np.maximum(np.diff(part), 1))
    level_db = 10.0 * np.log10(np.maximum(power, 10.0 ** (FLOOR_DB / 10.0)))
    return level_db.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_wav_atomic(path, samples: np.ndarray, sample_rate: int) -> None:
    """Write (N,) or (N, C) samples in [-1, 1] as 16-bit PCM WAV; never leaves a partial file."""
    import soundfile  # writing only: decoding is PyAV's

    with atomic_open(path) as file:
        # soundfile clips values beyond full scale when converting to 16-bit.
        soundfile.write(file, samples, sample_rate, subtype="PCM_16", format="WAV")
