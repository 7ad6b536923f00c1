"""Rebuild the shipped canonical face from a prepared dataset's `train` split.

    python -m dimitra.backend.dataset.canonical_face DATASET

Takes each training clip's neutral shape, aligns them by generalised Procrustes and writes
the mean to retarget/face/data/canonical_face.npy. Every later `prepare` depends on this face
(it is part of the content hash), so re-run `dimitra prepare` afterwards.
"""

import argparse

import numpy as np

from ...retarget.atomic_file import atomic_open
from ...retarget.face.canonical import CANONICAL_FACE_PATH, build_canonical_face
from ...retarget.face.pose import PIXEL_FROM_UPRIGHT
from .index import iter_segments


def neutral_shapes(dataset, split: str = "train") -> np.ndarray:
    """(K, 478, 3) one neutral per clip, turned back to pixel-frame axes for the builder."""
    by_clip = {}
    for clip, _, motion in iter_segments(dataset, split):
        by_clip.setdefault(clip.clip_id, motion.extras["neutral"])
    if not by_clip:
        raise SystemExit(f"{dataset}: no prepared {split!r} clips; run `dimitra prepare` first")
    return np.stack(list(by_clip.values())) @ PIXEL_FROM_UPRIGHT


def write_canonical_face(face: np.ndarray) -> None:
    with atomic_open(CANONICAL_FACE_PATH) as handle:
        np.save(handle, face.astype(np.float64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    args = parser.parse_args()
    shapes = neutral_shapes(args.dataset)
    write_canonical_face(build_canonical_face(shapes))
    print(f"canonical face from {len(shapes)} training clips -> {CANONICAL_FACE_PATH}")


if __name__ == "__main__":
    main()
