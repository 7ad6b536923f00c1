"""Speech in other languages animates: syllables open the mouth, p, b and m close the lips.

Lines of syllables spoken by espeak-ng (tests/backend/synthetic_speech.py) know where every
syllable starts, so what an animator would check by eye is checked here, in English (which
must not get worse) and in four other languages, with the shipped model and defaults.
"""

import numpy as np
import pytest

from dimitra.backend.evaluation.metrics import CLOSURE_THRESHOLD, mouth_open, normalise_sequence
from dimitra.backend.generation.animate import Animator
from dimitra.backend.generation.generator import GenerationOptions
from dimitra.backend.generation.motion import audio_conditioning, generate_motion
from dimitra.backend.generation.reference import load_reference
from dimitra.backend.media.audio import normalize_loudness
from tests.backend.synthetic_speech import espeak_available, syllable_line

pytestmark = pytest.mark.skipif(not espeak_available(),
                                reason="espeak-ng is not installed (.ci/run installs it)")

SYLLABLES = ["pa", "la", "ma", "ta", "ba", "na", "pa", "sa", "ma", "la", "ba", "ta"]
FPS = 25
OPEN_VOWEL = 0.04        # IOD: a vowel the eye reads as open (closed lips: under 0.025)


@pytest.fixture(scope="module")
def animator():
    return Animator()


@pytest.fixture(scope="module")
def reference():
    from dimitra.backend.demo import REFERENCE_IMAGE

    return load_reference(REFERENCE_IMAGE)


def animate_line(animator, reference, voice):
    line = syllable_line(voice, SYLLABLES)
    audio = normalize_loudness(line.audio)
    options = GenerationOptions()
    motion = generate_motion(animator.generator, animator.audio_conditioning(audio, options),
                             reference.canonical, reference.head_pose, options)
    opening = mouth_open(normalise_sequence(motion.landmarks).landmarks)    # (T,) IOD
    onsets, nuclei = [], []
    for start, end in zip(line.starts_s, line.ends_s):
        first, last = round(start * FPS), round(end * FPS)
        onsets.append(opening[max(first - 3, 0):first + 3].min())
        nuclei.append(opening[first + max(1, (last - first) // 3):last + 2].max())
    return line, np.array(onsets), np.array(nuclei), animator.language(audio, options)


@pytest.mark.parametrize("voice", ["en-us", "fr", "de", "es", "ja"])
def test_syllables_open_the_mouth_and_bilabials_close_the_lips(animator, reference, voice):
    line, onsets, nuclei, _ = animate_line(animator, reference, voice)
    bilabial = line.bilabial
    closed = onsets[bilabial] < CLOSURE_THRESHOLD
    assert closed.mean() >= 5 / 6, f"{voice}: lips apart at p/b/m onsets {onsets[bilabial]}"
    opened = nuclei > OPEN_VOWEL
    assert opened.mean() >= 10 / 12, f"{voice}: vowels left closed: {nuclei.round(3)}"
    # The mouth follows the syllables: vowels well open against the closures before them.
    assert np.median(nuclei[bilabial] - onsets[bilabial]) > OPEN_VOWEL


def test_the_language_is_heard_and_kept_and_english_only_steps_skip_other_languages(
        animator, monkeypatch):
    line = syllable_line("fr", ["bonjour", "merci", "beaucoup", "pomme"])
    audio = normalize_loudness(line.audio)
    animator.speech_features(audio)
    heard = animator.language(audio, GenerationOptions())
    if animator.bundle.feature_extractor == "whisper-tiny-en":
        assert heard == {"code": None, "probability": None, "detected": False}
    else:
        assert heard["code"] == "fr" and heard["detected"] and heard["probability"] > 0.5
    told = animator.language(audio, GenerationOptions(language="de"))
    assert told == {"code": "de", "probability": None, "detected": False}
    with pytest.raises(ValueError, match="ISO 639"):
        GenerationOptions(language="French").validate()

    # PocketSphinx (English phones) is not run on French speech, even when asked for.
    import dimitra.backend.features.bilabials as bilabials

    def english_only(*args, **kwargs):
        raise AssertionError("PocketSphinx ran on French speech")

    monkeypatch.setattr(bilabials, "bilabial_frames", english_only)
    features = animator.speech_features(audio)
    conditioning = audio_conditioning(features, audio, GenerationOptions(bilabials="pocketsphinx"),
                                      animator.bundle.feature_extractor, "fr")
    assert conditioning["bilabials"] is None or conditioning["bilabials"].shape == (len(features),)
