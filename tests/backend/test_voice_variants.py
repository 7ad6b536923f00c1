"""Voice variants for training: another voice, room or channel, still in step with the video."""

from pathlib import Path

import numpy as np
import pytest

from dimitra.backend.features.speech_features import get_extractor
from dimitra.backend.features.voice_variants import VARIANTS, voice_variant

RATE = 16_000


def tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[spectrum.argmax()])


@pytest.mark.parametrize("name, factor", [("voice-high", 1.15), ("voice-low", 0.87)])
def test_voice_changes_move_pitch_and_length_together(name, factor):
    changed, reported = voice_variant(tone(2.0, 200.0), name)
    assert reported == factor
    assert len(changed) == pytest.approx(2.0 * RATE / factor, abs=2)
    assert peak_hz(changed) == pytest.approx(200.0 * factor, rel=0.01)


def test_variants_are_repeatable_and_change_the_sound():
    speech = tone(1.0, 180.0) * (1 + np.sin(np.arange(RATE) / RATE * 2 * np.pi * 4))
    for name in VARIANTS:
        first, _ = voice_variant(speech, name)
        again, _ = voice_variant(speech, name)
        assert np.array_equal(first, again), name
        assert np.isfinite(first).all() and np.abs(first).max() < 10, name
        if len(first) == len(speech):
            assert not np.allclose(first, speech, atol=1e-3), name
    with pytest.raises(ValueError, match="voice-high"):
        voice_variant(speech, "robot")


@pytest.mark.parametrize("name", ["voice-high", "voice-low", "room"])
def test_variant_features_keep_one_row_per_video_frame_in_step_with_the_original(name):
    from dimitra.backend.media.audio import load_audio

    speech = load_audio(Path(__file__).parents[2] / "samples" / "speech_en.flac")[:8 * RATE]
    clean = get_extractor("whisper-tiny-en").extract(speech, 25.0)
    changed = get_extractor(f"whisper-tiny-en~{name}").extract(speech, 25.0)
    assert changed.shape == clean.shape == (200, 384)

    def similarity(lag: int) -> float:   # mean cosine of changed[t + lag] and clean[t]
        a, b = changed[10 + lag:190 + lag], clean[10:190]
        return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1)
                             / np.linalg.norm(b, axis=1)))

    scores = {lag: similarity(lag) for lag in range(-3, 4)}
    assert max(scores, key=scores.get) == 0, scores     # the same speech at the same frame
    assert scores[0] < 0.99                              # and yet another sound
    with pytest.raises(ValueError, match="voice variant"):
        get_extractor("whisper-tiny-en~robot")
