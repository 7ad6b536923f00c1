"""Shape-key names in every common style, mapped to one canonical name and a face region.

Rigs name the same shape in many ways: exact ARKit (`jawOpen`), prefixed (`AK_25_JawOpen`,
`blendShape1.jawOpen`), suffixed sides (`eyeBlink_L`, `EyeBlink.Left`), Oculus visemes
(`viseme_aa`, `aa`, `AA_VI_10_aa`, `vrc.v_aa`) and VRoid (`Fcl_MTH_A`, `Fcl_EYE_Close_L`).
The solve measures each key's real effect on the mesh, so a name is never required; the
canonical name only decides the region a key belongs to (for per-region strength) and what
reports call it. "Left"/"Right" are the subject's, as in ARKit.
"""

import re

# ARKit's 52 coefficients, by region.
ARKIT_EYES = ("eyeBlinkLeft", "eyeSquintLeft", "eyeWideLeft",
              "eyeBlinkRight", "eyeSquintRight", "eyeWideRight")
ARKIT_GAZE = ("eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
              "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight")
ARKIT_MOUTH = (
    "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "cheekPuff", "tongueOut")
ARKIT_BROWS = ("browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
               "browOuterUpRight", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
               "noseSneerRight")
ARKIT_52 = ARKIT_EYES + ARKIT_GAZE + ARKIT_MOUTH + ARKIT_BROWS

# Oculus / Meta 15 visemes (also Ready Player Me and VRChat's order).
VISEMES = ("viseme_sil", "viseme_PP", "viseme_FF", "viseme_TH", "viseme_DD", "viseme_kk",
           "viseme_CH", "viseme_SS", "viseme_nn", "viseme_RR", "viseme_aa", "viseme_E",
           "viseme_I", "viseme_O", "viseme_U")

# Per-region strength controls act on these groups.
REGIONS = ("mouth", "eyes", "gaze", "brows")

_ARKIT_BY_KEY = {name.lower(): name for name in ARKIT_52}
# Base names that come in a Left and a Right version. (`mouthLeft`, `jawLeft` are not sided.)
_SIDED = {name[:-4].lower(): name[:-4] for name in ARKIT_52
          if name.endswith("Left") and name[:-4] + "Right" in ARKIT_52}
_VISEME_BY_KEY = {name[len("viseme_"):].lower(): name for name in VISEMES}
_VISEME_BY_KEY.update({
    "ih": "viseme_I", "oh": "viseme_O", "ou": "viseme_U", "a": "viseme_aa", "ah": "viseme_aa",
    "ee": "viseme_E", "silence": "viseme_sil", "rest": "viseme_sil",
    # Mouth-shape sets (Preston Blair and its descendants).
    "mbp": "viseme_PP", "bmp": "viseme_PP", "fv": "viseme_FF", "ai": "viseme_aa",
    "wq": "viseme_U", "ldt": "viseme_DD", "cdgknrsthyz": "viseme_DD",
})
_VROID = {  # VRoid `Fcl_<GROUP>_<Shape>` names, alphanumerics after `Fcl_` (and `ALL_`)
    "mtha": "viseme_aa", "mthi": "viseme_I", "mthu": "viseme_U", "mthe": "viseme_E",
    "mtho": "viseme_O", "eyeclose": "eyeBlink", "eyesurprised": "eyeWide",
    "brwangry": "browDown", "brwsurprised": "browInnerUp", "mthangry": "mouthFrown",
    "mthfun": "mouthSmile", "mthjoy": "mouthSmile",
}

_SIDE = re.compile(r"^(.+?)[._\- ](left|right|l|r)$", re.IGNORECASE)
# Namespaces and numbering that exporters put in front of the name.
_PREFIXES = [re.compile(pattern, re.IGNORECASE) for pattern in (
    r"^[^.:|]*[.:|]",             # blendShape1.jawOpen, Face:jawOpen, mesh|jawOpen, vrc.v_aa
    r"^[a-z]+_vi_\d+_",           # AA_VI_10_aa
    r"^(?:ak_\d+_|a\d+_|arkit_?|bs_|sk_|v_|viseme[._ ]?)",
)]
_SIDE_WORDS = {"left": "Left", "l": "Left", "right": "Right", "r": "Right"}


def canonical_name(name: str) -> str | None:
    """The ARKit or viseme name that `name` stands for, or None when it is not a known shape.

    A sided name without a side (VRoid's `Fcl_EYE_Close`) maps to its base (`eyeBlink`),
    which `region_of` still knows.
    """
    name = name.strip()
    vroid = re.search(r"fcl_(?:all_)?(.+)$", name, re.IGNORECASE)
    if vroid:
        return _from_vroid(vroid.group(1))
    side_match = _SIDE.match(name)
    base, side = (side_match.group(1), _SIDE_WORDS[side_match.group(2).lower()]) if side_match \
        else (name, None)
    stripped = base
    for pattern in _PREFIXES:
        shorter = pattern.sub("", stripped, count=1)
        stripped = shorter or stripped
    for key in dict.fromkeys((_alnum(stripped), _alnum(base))):
        if side:
            if key in _SIDED:
                return _SIDED[key] + side
            if key + side.lower() in _ARKIT_BY_KEY:      # jaw_Left -> jawLeft
                return _ARKIT_BY_KEY[key + side.lower()]
            continue
        if key in _ARKIT_BY_KEY:
            return _ARKIT_BY_KEY[key]
        for word, word_side in _SIDE_WORDS.items():        # eyeBlinkL, lefteyeBlink
            if key.endswith(word) and key[: -len(word)] in _SIDED:
                return _SIDED[key[: -len(word)]] + word_side
            if len(word) > 1 and key.startswith(word) and key[len(word):] in _SIDED:
                return _SIDED[key[len(word):]] + word_side
    # Visemes are short and easy to confuse with other words: only a sideless stripped name.
    if side is None and _alnum(stripped) in _VISEME_BY_KEY:
        return _VISEME_BY_KEY[_alnum(stripped)]
    return None


def _from_vroid(shape: str) -> str | None:
    key = _alnum(shape)
    if key in _VROID:
        return _VROID[key]
    if key[-1:] in ("l", "r") and _VROID.get(key[:-1]) in _SIDED.values():
        return _VROID[key[:-1]] + _SIDE_WORDS[key[-1]]
    return None


def region_of(name: str) -> str | None:
    """'mouth', 'eyes', 'gaze' or 'brows' for a known shape (raw or canonical name), else None."""
    canonical = canonical_name(name) or name
    if canonical.startswith("viseme_"):
        return "mouth"
    for region, names in (("eyes", ARKIT_EYES), ("gaze", ARKIT_GAZE), ("mouth", ARKIT_MOUTH),
                          ("brows", ARKIT_BROWS)):
        if canonical in names or canonical + "Left" in names:
            return region
    return None


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())
