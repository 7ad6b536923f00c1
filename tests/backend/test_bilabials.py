"""Bilabials found in real speech, and closure guidance that shuts the lips there."""

import json

import numpy as np
import torch

from backend.features.bilabials import bilabial_frames
from backend.generation.generator import ClosureGuide
from backend.media.audio import load_audio
from retarget.face import topology
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


def test_closure_guidance_shuts_the_lips_only_where_asked():
    space, neutrals, jaw = synthetic_space()
    open_mouth = space.encode(neutrals[0][None] + jaw * 1.0, neutrals[0], np.zeros((1, 6)))
    x0 = torch.tensor(np.repeat(open_mouth[None], 4, axis=1))        # (1, 4, D), mouth open
    weights = np.array([0.0, 1.0, 0.5, 0.0])
    guided = ClosureGuide(space, neutrals[0], weights).apply(x0).numpy()[0]
    canonical, _ = space.decode(guided, neutrals[0])
    gaps = np.linalg.norm(canonical[:, topology.UPPER_INNER_LIP] - canonical[:, topology.LOWER_INNER_LIP], axis=1)
    before = np.linalg.norm((neutrals[0] + jaw)[topology.UPPER_INNER_LIP] - (neutrals[0] + jaw)[topology.LOWER_INNER_LIP])
    assert gaps[1] < 0.1 * before
    assert 0.3 * before < gaps[2] < 0.7 * before
    np.testing.assert_allclose(gaps[[0, 3]], before, rtol=0.05)
