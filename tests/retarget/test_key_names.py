"""Shape-key names in the styles real rigs use map to one canonical name and region."""

import pytest

from dimitra.retarget.key_names import ARKIT_52, VISEMES, canonical_name, region_of


@pytest.mark.parametrize("name, canonical", [
    ("jawOpen", "jawOpen"), ("JawOpen", "jawOpen"), ("AK_25_JawOpen", "jawOpen"),
    ("A25_Jaw_Open", "jawOpen"), ("blendShape1.jawOpen", "jawOpen"), ("Face:jawOpen", "jawOpen"),
    ("eyeBlink_L", "eyeBlinkLeft"), ("EyeBlink.Left", "eyeBlinkLeft"), ("eyeBlinkR", "eyeBlinkRight"),
    ("eye_blink_r", "eyeBlinkRight"), ("mouthSmile_R", "mouthSmileRight"),
    ("eyeLookUp_L", "eyeLookUpLeft"), ("jaw_Left", "jawLeft"), ("mouthLeft", "mouthLeft"),
    ("viseme_aa", "viseme_aa"), ("aa", "viseme_aa"), ("AA_VI_10_aa", "viseme_aa"),
    ("vrc.v_aa", "viseme_aa"), ("viseme_PP", "viseme_PP"), ("PP", "viseme_PP"), ("ih", "viseme_I"),
    ("viseme_RR", "viseme_RR"), ("MBP", "viseme_PP"),
    ("Fcl_MTH_A", "viseme_aa"), ("Fcl_MTH_O", "viseme_O"), ("Fcl_EYE_Close_L", "eyeBlinkLeft"),
    ("Fcl_EYE_Close_R", "eyeBlinkRight"), ("Fcl_EYE_Close", "eyeBlink"),
])
def test_names_in_every_style(name, canonical):
    assert canonical_name(name) == canonical


@pytest.mark.parametrize("name", ["Basis", "Key 1", "smile_custom", "Fcl_ALL_Neutral", "L", "R"])
def test_unknown_names_are_not_guessed(name):
    assert canonical_name(name) is None


def test_every_canonical_name_maps_to_itself_with_a_region():
    for name in ARKIT_52 + VISEMES:
        assert canonical_name(name) == name
        assert region_of(name) in ("mouth", "eyes", "gaze", "brows")
    assert region_of("Fcl_MTH_A") == "mouth"
    assert region_of("eyeBlink_L") == "eyes"
    assert region_of("eyeLookIn_R") == "gaze"
    assert region_of("browInnerUp") == "brows"
    assert region_of("Key 1") is None
