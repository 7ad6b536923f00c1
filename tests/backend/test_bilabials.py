"""Bilabials found in real speech, and closure guidance that shuts the lips there."""

import json

import numpy as np
import pytest
import torch

from dimitra.backend.evaluation.metrics import closure_frames
from dimitra.backend.features import bilabials as bilabials_module
from dimitra.backend.features.bilabials import (
    BilabialDetector,
    BilabialNet,
    aligned_bilabial_frames,
    bilabial_frames,
    shipped_detector,
)
from dimitra.backend.features.speech_features import get_extractor
from dimitra.backend.generation.generator import (
    ClosureGuide,
    GenerationOptions,
    near_closure,
    press_toward_release,
    sharpen_in_time,
)
from dimitra.backend.generation.motion import audio_conditioning
from dimitra.backend.media.audio import load_audio, normalize_loudness
from dimitra.backend.training.bilabials import event_scores, train_detector
from dimitra.retarget.face import topology
from tests.backend.test_cmdt import synthetic_space
from tests.conftest import shared_file


def reference_bilabials(phone_json) -> list[float]:
    """Centre times (s) of P, B, M in a pocketsphinx reference alignment."""
    centres = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("t") in ("P", "B", "M"):
                centres.append(node["b"] + node["d"] / 2)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(json.loads(phone_json.read_text()))
    return centres


def test_most_detected_bilabials_are_real_and_many_real_ones_are_found():
    found = real = hits = correct = 0
    for stem in ("0890", "0920", "0930"):
        base = f"data/speech-alignments/librivox/sense_and_sensibility_01_austen_64kb-{stem}"
        audio = load_audio(shared_file(base + ".wav"))
        frames = bilabial_frames(audio)
        assert len(frames) == round(len(audio) / 640)
        truth = reference_bilabials(shared_file(base + ".phone.json"))
        starts = np.flatnonzero(np.diff(np.concatenate([[0], frames])) > 0)
        detected = [(s + 0.5) / 25 for s in starts]
        real += len(truth)
        found += len(detected)
        hits += sum(any(abs(t - d) < 0.1 for d in detected) for t in truth)
        correct += sum(any(abs(t - d) < 0.1 for t in truth) for d in detected)
    assert hits / real > 0.5
    assert correct / found > 0.8


def test_silence_has_no_bilabials():
    assert bilabial_frames(np.zeros(16_000 * 3, np.float32)).sum() == 0


LIBRIVOX = [f"data/speech-alignments/librivox/sense_and_sensibility_01_austen_64kb-{stem}"
            for stem in ("0870", "0880", "0890", "0920", "0930")]


def test_the_shipped_detector_finds_bilabials_in_real_speech_it_never_saw():
    """Held-out LibriVox reference alignments (29 bilabials): measured recall 0.48 and
    precision 0.67, against PocketSphinx's 0.66 and 0.90 (docs/MODEL_CARD.md)."""
    detector, extractor = shipped_detector("whisper-tiny-en"), get_extractor("whisper-tiny-en")
    assert detector is not None
    totals = np.zeros(4)
    for base in LIBRIVOX:
        audio = normalize_loudness(load_audio(shared_file(base + ".wav")))
        truth = np.zeros(round(len(audio) / 640), np.float32)
        for centre in reference_bilabials(shared_file(base + ".phone.json")):
            truth[min(int(centre * 25), len(truth) - 1)] = 1
        totals += event_scores(truth, detector(extractor.extract(audio)))
    hits, real, correct, found = totals
    assert real == 29
    assert hits / real > 0.4
    assert correct / found > 0.5


def test_the_detector_marks_nothing_in_silence():
    detector = shipped_detector("whisper-tiny-en")
    features = get_extractor("whisper-tiny-en").extract(np.zeros(16_000 * 5, np.float32))
    assert detector(features).sum() == 0


def test_long_audio_is_detected_in_pieces_that_join_exactly():
    torch.manual_seed(0)
    net = BilabialNet(8, width=4).eval()
    features = np.random.default_rng(0).normal(size=(20_000, 8)).astype(np.float32)
    with torch.no_grad():
        probability = torch.sigmoid(net(torch.from_numpy(features)[None]))[0].numpy()
    threshold = float(np.median(probability))   # an untrained net: half the frames marked
    found = BilabialDetector([net], "test", threshold)(features)
    whole = probability > threshold
    assert 0 < found.sum() < len(found)
    np.testing.assert_array_equal(found, whole)


def test_the_detector_learns_its_labels():
    """Features where one channel carries the label, behind noise: the net finds it."""
    rng = np.random.default_rng(0)
    segments = []
    for _ in range(6):
        labels = np.zeros(300, np.float32)
        for start in rng.choice(290, 15, replace=False):
            labels[start:start + 2] = 1
        features = rng.normal(size=(300, 16)).astype(np.float32)
        features[:, 3] += 4.0 * labels
        segments.append((features, labels, "aligned"))
    detector = train_detector(segments[:5], "test", steps=300, batch=4)
    hits, real, correct, found = event_scores(segments[5][1], detector(segments[5][0]))
    assert hits / real > 0.8 and correct / found > 0.8


def test_phone_labels_beside_the_audio_mark_bilabial_frames(tmp_path):
    (tmp_path / "phindex.json").write_text(json.dumps({"AA": 0, "B": 1, "M": 2, "SIL": 3}))
    # 30 labels per second: 0.5 s of silence, 0.2 s of B, 0.3 s of AA, then M to 1.5 s
    sequence = [3] * 15 + [1] * 6 + [0] * 9 + [2] * 15
    (tmp_path / "clip_seq.json").write_text(json.dumps(sequence))
    marks = aligned_bilabial_frames(tmp_path / "clip.wav", frames=25)
    assert marks.tolist() == [0] * 12 + [1] * 5 + [0] * 8
    later = aligned_bilabial_frames(tmp_path / "clip.wav", frames=20, start_s=1.0)
    assert later.tolist() == [1] * 12 + [0] * 8         # past the labels' end: nothing marked
    assert aligned_bilabial_frames(tmp_path / "other.wav", frames=25) is None


def test_generation_asks_the_detector_and_pocketsphinx_only_when_told(monkeypatch):
    audio = normalize_loudness(load_audio(shared_file(LIBRIVOX[3] + ".wav")))
    features = get_extractor("whisper-tiny-en").extract(audio)
    calls = []
    real = bilabials_module.bilabial_frames
    monkeypatch.setattr(bilabials_module, "bilabial_frames",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    fast = audio_conditioning(features, audio, GenerationOptions(), "whisper-tiny-en")
    assert not calls and fast["bilabials"].sum() > 0
    slow = audio_conditioning(features, audio, GenerationOptions(bilabials="pocketsphinx"),
                              "whisper-tiny-en")
    assert calls and slow["bilabials"].sum() > 0
    # Features without a shipped detector fall back to PocketSphinx.
    calls.clear()
    audio_conditioning(np.zeros((len(features), 320), np.float32), audio, GenerationOptions(),
                       "log-mel")
    assert calls
    with pytest.raises(ValueError, match="bilabials"):
        GenerationOptions(bilabials="whisper").validate()


def test_closure_guidance_shuts_the_lips_only_where_asked():
    space, neutrals, jaw = synthetic_space()
    open_mouth = space.encode(neutrals[0][None] + jaw * 1.0, neutrals[0], np.zeros((1, 6)))
    x0 = np.repeat(open_mouth[None], 4, axis=1).astype(np.float32)   # (1, 4, D), mouth open
    weights = np.array([0.0, 1.0, 0.5, 0.0])
    guided = ClosureGuide(space, neutrals[0], weights).apply(x0)[0]
    canonical, _ = space.decode(guided, neutrals[0])
    gaps = np.linalg.norm(canonical[:, topology.UPPER_INNER_LIP] - canonical[:, topology.LOWER_INNER_LIP], axis=1)
    before = np.linalg.norm((neutrals[0] + jaw)[topology.UPPER_INNER_LIP] - (neutrals[0] + jaw)[topology.LOWER_INNER_LIP])
    assert gaps[1] < 0.1 * before
    assert 0.3 * before < gaps[2] < 0.7 * before
    np.testing.assert_allclose(gaps[[0, 3]], before, rtol=0.05)


def test_the_lips_press_hardest_at_the_end_of_a_bilabial():
    marks = np.array([0, 1, 1, 1, 0, 1, 0, 0.5, 0.5], np.float32)
    weights = press_toward_release(marks)
    np.testing.assert_allclose(weights, [0, 0.5, 0.75, 1, 0, 1, 0, 0.25, 0.5])
    space, neutrals, jaw = synthetic_space()
    open_mouth = space.encode(neutrals[0][None] + jaw * 1.0, neutrals[0], np.zeros((1, 6)))
    x0 = np.repeat(open_mouth[None], 5, axis=1).astype(np.float32)   # (1, 5, D), mouth open
    guided = ClosureGuide(space, neutrals[0], weights[:5]).apply(x0)[0]
    canonical, _ = space.decode(guided, neutrals[0])
    gaps = np.linalg.norm(canonical[:, topology.UPPER_INNER_LIP] - canonical[:, topology.LOWER_INNER_LIP], axis=1)
    assert gaps[3] < gaps[2] < gaps[1] < gaps[0]                     # deepest at the release


def test_sharpening_brings_back_a_closure_that_averaging_blurred_away():
    # Mouth opening (IOD) with two quick closures, and its 3-frame mean: the kind of blur that
    # few-step sampling leaves. The blurred one never gets under the closure threshold.
    opening = np.array([0.15, 0.12, 0.06, 0.0, 0.08, 0.14, 0.1, 0.02, 0.0, 0.07, 0.15, 0.15])
    padded = np.pad(opening, 1, mode="edge")
    blurred = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    assert len(closure_frames(blurred)) == 0
    sharpened = sharpen_in_time(blurred[:, None], 0.2)[:, 0]
    np.testing.assert_array_equal(closure_frames(sharpened), [8])
    assert sharpened[8] < blurred[8] and sharpened[5] > blurred[5]   # deeper dips, higher peaks
    slow = np.stack([np.linspace(0, 1, 50), np.full(50, 0.3)], axis=1)   # a ramp, a hold
    np.testing.assert_allclose(sharpen_in_time(slow, 0.2)[1:-1], slow[1:-1], atol=1e-12)
    np.testing.assert_array_equal(sharpen_in_time(blurred[:, None], 0.0)[:, 0], blurred)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lip_sharpen must be between 0 and 1"):
            GenerationOptions(lip_sharpen=bad).validate()


def test_only_the_frames_near_a_closure_are_sharpened():
    np.testing.assert_allclose(near_closure(np.array([0.0, 0.05, 0.075, 0.1, 0.3])),
                               [1, 1, 0.5, 0, 0])
    wobble = np.sin(np.arange(20.0))[:, None] * [1.0, 2.0]           # (20, 2)
    amount = np.where(np.arange(20) < 10, 0.2, 0.0)
    sharpened = sharpen_in_time(wobble, amount)
    np.testing.assert_array_equal(sharpened[10:], wobble[10:])
    assert np.abs(sharpened[1:10] - wobble[1:10]).min() > 0.01
