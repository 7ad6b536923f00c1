"""The audio loader: every common format comes out as 16 kHz mono with timing intact."""

import os
import warnings

import av
import numpy as np
import pyloudnorm
import pytest
import soundfile

from dimitra.backend.media import audio
from dimitra.backend.media.audio import (
    SAMPLE_RATE,
    AudioError,
    audio_start_time,
    frame_rms_db,
    integrated_loudness,
    load_audio,
    normalize_loudness,
    write_wav_atomic,
)


def tone(sample_rate, seconds=1.0, freq=1000.0, amplitude=0.5, start_s=0.0):
    """(N,) float64 sine that is silent before `start_s`."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    return np.where(t >= start_s, amplitude * np.sin(2 * np.pi * freq * t), 0.0)


def peak_frequency(samples, sample_rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / sample_rate)[np.argmax(spectrum)]


def onset_s(samples, sample_rate=SAMPLE_RATE, threshold=0.1):
    return np.argmax(np.abs(samples) > threshold) / sample_rate


def encode_audio(path, samples, sample_rate, codec, frame_size=1024):
    """Write (N,) mono samples with one of PyAV's encoders."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        for start in range(0, len(samples), frame_size):
            chunk = samples[None, start:start + frame_size].astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def encode_video(path, speech=None, audio_start=0):
    """A 1 s, 25 fps, 32x32 MPEG-4 video, with `speech` (16 kHz) as AAC from sample `audio_start`."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        # Every stream must exist before the first packet is written.
        sound = None if speech is None else container.add_stream("aac", rate=SAMPLE_RATE,
                                                                  layout="mono")
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is None:
            return
        for start in range(0, len(speech), 1024):
            chunk = speech[None, start:start + 1024].astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, audio_start + start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_keeps_duration_pitch_and_level(tmp_path, subtype, sample_rate, channels):
    samples = tone(sample_rate, seconds=1.3)
    path = tmp_path / "speech.wav"
    soundfile.write(path, np.stack([samples] * channels, axis=1), sample_rate, subtype=subtype)

    loaded = load_audio(path)

    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) / SAMPLE_RATE - 1.3) < 0.010
    assert abs(peak_frequency(loaded) - 1000.0) < 2.0
    rms = np.sqrt(np.mean(loaded[1000:-1000] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_stereo_channels_are_averaged(tmp_path):
    left = tone(44100, amplitude=0.6)
    path = tmp_path / "left_only.wav"
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100)

    loaded = load_audio(path)

    assert np.max(np.abs(loaded[1000:-1000])) == pytest.approx(0.3, rel=0.02)


@pytest.mark.parametrize("codec, suffix, sample_rate, frame_size", [
    ("libmp3lame", "mp3", 44100, 1152),
    ("aac", "m4a", 44100, 1024),
    ("libopus", "ogg", 48000, 960),
    ("flac", "flac", 22050, 1024),
])
def test_compressed_formats_keep_timing(tmp_path, codec, suffix, sample_rate, frame_size):
    # Speech starts at 0.5 s; encoder delay and padding must not move it (lip sync).
    samples = tone(sample_rate, seconds=2.0, start_s=0.5)
    path = tmp_path / f"speech.{suffix}"
    encode_audio(path, samples, sample_rate, codec, frame_size)

    loaded = load_audio(path)

    assert abs(len(loaded) / SAMPLE_RATE - 2.0) < 0.010
    assert abs(onset_s(loaded) - 0.5) < 0.010
    assert abs(peak_frequency(loaded[SAMPLE_RATE:]) - 1000.0) < 2.0


def test_bytes_decode_like_the_file(tmp_path):
    path = tmp_path / "speech.mp3"
    encode_audio(path, tone(44100), 44100, "libmp3lame", 1152)

    assert np.array_equal(load_audio(path.read_bytes()), load_audio(path))
    assert np.array_equal(load_audio(str(path)), load_audio(path))


def test_video_audio_track_and_its_start_time(tmp_path):
    # The audio stream starts 0.5 s into the video; start time plus the decoded onset must
    # land there so callers can align speech with video frames.
    path = tmp_path / "talk.mp4"
    encode_video(path, tone(SAMPLE_RATE, seconds=1.0), audio_start=SAMPLE_RATE // 2)

    loaded = load_audio(path)

    assert abs(len(loaded) / SAMPLE_RATE - 1.0) < 0.1  # includes the AAC priming samples
    assert abs(audio_start_time(path) + onset_s(loaded) - 0.5) < 0.010
    assert abs(peak_frequency(loaded) - 1000.0) < 2.0


def test_audio_start_time_is_zero_for_plain_wav(tmp_path):
    path = tmp_path / "speech.wav"
    soundfile.write(path, tone(16000), 16000)
    assert audio_start_time(path) == 0.0


# ---------------------------------------------------------------------------------------------
# Errors a user can meet
# ---------------------------------------------------------------------------------------------

def test_video_without_audio_says_so(tmp_path):
    path = tmp_path / "silent_film.mp4"
    encode_video(path)
    with pytest.raises(AudioError, match=r"silent_film\.mp4.*no audio track.*\.wav"):
        load_audio(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nowhere\.wav.*does not exist"):
        load_audio(tmp_path / "nowhere.wav")


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_audio(path)
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")


def test_truncated_files(tmp_path):
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, tone(16000), 16000)
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(wav.read_bytes()[:44])
    cut_header = tmp_path / "cut_header.wav"
    cut_header.write_bytes(wav.read_bytes()[:30])
    m4a = tmp_path / "speech.m4a"
    encode_audio(m4a, tone(44100), 44100, "aac")
    cut_m4a = tmp_path / "cut.m4a"  # the index sits at the end: nothing can be decoded
    cut_m4a.write_bytes(m4a.read_bytes()[: m4a.stat().st_size // 2])

    with pytest.raises(AudioError, match=r"header_only\.wav.*no audio samples"):
        load_audio(header_only)
    for path in (cut_header, cut_m4a):
        with pytest.raises(AudioError, match=rf"{path.name}.*truncated"):
            load_audio(path)
    with pytest.raises(AudioError, match="could not be read"):
        load_audio(b"not audio at all" * 10)


def test_too_long_is_refused_before_and_while_decoding(tmp_path, monkeypatch):
    path = tmp_path / "lecture.wav"
    soundfile.write(path, tone(16000, seconds=3.0), 16000)

    with pytest.raises(AudioError, match=r"lecture\.wav.*limit"):
        load_audio(path, max_seconds=2.0)
    assert len(load_audio(path, max_seconds=5.0)) == 3 * SAMPLE_RATE

    # A stream whose header states no duration is stopped while decoding.
    monkeypatch.setattr(audio, "_stated_duration", lambda container, stream: None)
    with pytest.raises(AudioError, match=r"lecture\.wav.*limit"):
        load_audio(path, max_seconds=2.0)


# ---------------------------------------------------------------------------------------------
# Loudness
# ---------------------------------------------------------------------------------------------

def speech_like(seconds=3.0, amplitude=0.5, seed=0):
    """(N,) float32 16 kHz: a harmonic voice with a 4 Hz syllable envelope and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t + rng.uniform(0, 6)) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.3 * t) > -0.5)
    signal = voice * envelope
    return (amplitude * signal / np.max(np.abs(signal))).astype(np.float32)


@pytest.mark.parametrize("amplitude", [0.005, 0.95])
def test_quiet_and_loud_speech_reach_the_target(amplitude):
    normalized = normalize_loudness(speech_like(amplitude=amplitude))

    loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(normalized.astype(np.float64))
    assert abs(loudness - (-23.0)) < 0.5
    assert normalized.dtype == np.float32 and np.max(np.abs(normalized)) <= 0.99


@pytest.mark.parametrize("seconds", [0.41, 3.0, 75.0])
def test_streamed_loudness_equals_pyloudnorm(seconds):
    """The bounded-memory measure gives pyloudnorm's value, across its 60 s pieces too."""
    samples = speech_like(seconds=seconds, amplitude=0.3)
    samples[: len(samples) // 3] *= 0.05          # a quiet stretch, so the relative gate works
    expected = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(samples.astype(np.float64))
    assert integrated_loudness(samples) == pytest.approx(expected, abs=1e-6)


def test_peaks_are_limited():
    clicks = np.zeros(SAMPLE_RATE, np.float32)
    clicks[::4000] = 0.001  # very low loudness, so the gain is huge
    assert np.max(np.abs(normalize_loudness(clicks))) <= 0.99 + 1e-6


@pytest.mark.parametrize("samples", [np.zeros(SAMPLE_RATE, np.float32),
                                     speech_like(seconds=0.2)], ids=["silence", "too_short"])
def test_unmeasurable_audio_is_returned_unchanged(samples):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warnings reach the user
        normalized = normalize_loudness(samples)
    assert np.array_equal(normalized, samples)


def test_frame_rms_db():
    full_scale_sine = tone(SAMPLE_RATE, seconds=1.0, amplitude=1.0)
    silence = np.zeros(SAMPLE_RATE)

    level = frame_rms_db(np.concatenate([full_scale_sine, silence]))

    assert level.dtype == np.float32 and level.shape == (50,)
    assert np.allclose(level[:25], -3.01, atol=0.05)
    assert np.all(level[25:] == -100.0)
    assert frame_rms_db(np.zeros(1000), fps=30.0).shape == (2,)  # 1000 / 533.3 rounds to 2
    assert frame_rms_db(np.zeros(0)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def test_write_wav_atomic_round_trips_and_leaves_no_temp_files(tmp_path):
    samples = tone(SAMPLE_RATE, amplitude=0.7).astype(np.float32)
    path = tmp_path / "out.wav"

    write_wav_atomic(path, samples, SAMPLE_RATE)
    write_wav_atomic(path, samples, SAMPLE_RATE)  # overwriting is fine

    assert os.listdir(tmp_path) == ["out.wav"]
    assert soundfile.info(path).subtype == "PCM_16"
    assert np.max(np.abs(load_audio(path) - samples)) < 1.5 / 32768


def test_write_wav_atomic_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="shape"):  # soundfile refuses 3-D arrays mid-write
        write_wav_atomic(tmp_path / "bad.wav", np.zeros((10, 2, 2)), SAMPLE_RATE)
    assert os.listdir(tmp_path) == []
