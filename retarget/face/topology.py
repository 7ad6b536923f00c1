"""The 478-point MediaPipe Face Mesh topology, defined once for the whole project.

Indices 0..467 are the face mesh, 468..477 the irises (refined landmarks). "Right" and "left"
are the subject's: the right eye (33..133) appears on the left of a frontal image.
Index lists come from MediaPipe's `face_mesh_connections` (Apache-2.0); loops are ordered.
Numpy only: the Blender extension vendors this package.
"""

from pathlib import Path

import numpy as np

NUM_LANDMARKS = 478
NUM_MESH_LANDMARKS = 468

# Points that EVAL.md names.
UPPER_INNER_LIP = 13
LOWER_INNER_LIP = 14
RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10

LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375,
              291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324,
              308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
# FACEMESH_LIPS: the lip points EVAL.md measures LVE on.
LIPS = tuple(sorted(set(LIPS_OUTER) | set(LIPS_INNER)))

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
             54, 103, 67, 109)
# The lower half of the oval, ear to ear through the chin.
JAW_LINE = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
            377, 400, 378, 379, 365, 397, 288, 361, 323, 454)

# Eyelids run from the outer to the inner corner.
RIGHT_UPPER_LID = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_LOWER_LID = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_UPPER_LID = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_LOWER_LID = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE = tuple(sorted(set(RIGHT_UPPER_LID) | set(RIGHT_LOWER_LID)))
LEFT_EYE = tuple(sorted(set(LEFT_UPPER_LID) | set(LEFT_LOWER_LID)))
# (upper, lower) lid mid points and (outer, inner) corners, for eyelid aperture.
RIGHT_LID_MIDDLE = (159, 145)
LEFT_LID_MIDDLE = (386, 374)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)

RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)

# Iris centre first, then the four rim points.
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)

NOSE = (1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197,
        220, 275, 278, 294, 326, 327, 344, 440)

REGIONS: dict[str, tuple[int, ...]] = {
    "lips_outer": LIPS_OUTER,
    "lips_inner": LIPS_INNER,
    "jaw_line": JAW_LINE,
    "face_oval": FACE_OVAL,
    "right_upper_lid": RIGHT_UPPER_LID,
    "right_lower_lid": RIGHT_LOWER_LID,
    "left_upper_lid": LEFT_UPPER_LID,
    "left_lower_lid": LEFT_LOWER_LID,
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "right_iris": RIGHT_IRIS,
    "left_iris": LEFT_IRIS,
    "nose": NOSE,
}

# Points that move with the skull and hardly with expression: forehead, nose bridge, eye
# corners, temples and cheekbones. The rigid fit (head pose) uses only these.
STABLE_POINTS = (
    10, 151, 9, 108, 337, 109, 338, 67, 297, 69, 299,   # forehead
    168, 6, 197, 195, 5, 4,                             # nose bridge and tip
    33, 133, 263, 362,                                  # eye corners
    127, 356, 234, 454, 162, 389, 21, 251,              # temples
    116, 345, 117, 346, 123, 352, 50, 280, 101, 330,    # cheekbones
)
# Eye corners blink-adjacent and nose tip flares: trusted a little less than the bone points.
STABLE_WEIGHTS = np.array(
    [0.5 if i in (33, 133, 263, 362, 4, 5) else 1.0 for i in STABLE_POINTS], dtype=np.float64)

_DATA = Path(__file__).resolve().parent / "data"


def triangles() -> np.ndarray:
    """(852, 3) int32 mesh triangles over points 0..467, wound outward (normal toward camera)."""
    return np.load(_DATA / "triangles.npy")


def region_mask(*names: str) -> np.ndarray:
    """(478,) bool mask of the union of named regions."""
    mask = np.zeros(NUM_LANDMARKS, dtype=bool)
    for name in names:
        if name not in REGIONS:
            raise KeyError(f"unknown face region {name!r}; known: {', '.join(REGIONS)}")
        mask[list(REGIONS[name])] = True
    return mask
