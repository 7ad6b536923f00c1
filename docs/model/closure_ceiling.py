"""How much closure_recall a near-perfect prediction gets on a prepared split: the tracked
mouth itself, slightly smoothed, shifted or jittered, scored against the original.

    .venv/bin/python docs/model/closure_ceiling.py data/dataset [--split dev]

Closures are the lowest frames of dips under a threshold (EVAL.md), so recall measures how
exactly a prediction reproduces the tracker's frame-level minima; this shows how much of the
0.7 bar is left for a model that is right about the mouth but not about the tracker's noise.
"""

import argparse

import numpy as np

from backend.dataset.index import iter_segments
from backend.evaluation.metrics import (
    closure_recall_precision,
    mouth_open,
    normalise_sequence,
    speech_frames,
)

JITTER_IOD = 0.005   # Gaussian noise, inter-ocular units (the tracker's own jitter is ~0.001)
JITTER_DRAWS = 20


def variants(opening: np.ndarray, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """(T,) true mouth opening -> named lists of altered copies."""
    padded = np.pad(opening, 1, mode="edge")
    return {
        "mean of 3 frames (120 ms)": [np.convolve(padded, np.ones(3) / 3, mode="valid")],
        "one frame late": [np.concatenate([opening[:1], opening[:-1]])],
        f"noise {JITTER_IOD} IOD": [opening + rng.normal(0, JITTER_IOD, len(opening))
                                    for _ in range(JITTER_DRAWS)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table: dict[str, list[float]] = {}
    for _, segment, truth in iter_segments(args.dataset, args.split):
        opening = mouth_open(normalise_sequence(truth.landmarks)[0])   # (T,) IOD
        speech = speech_frames(truth.extras["audio"], truth.frame_count, truth.fps)
        cells = []
        for name, altered in variants(opening, rng).items():
            recall = np.mean([closure_recall_precision(a, opening, speech)[0] for a in altered])
            table.setdefault(name, []).append(recall)
            cells.append(f"{recall:.2f}")
        print(f"{segment.segment_id:32s}", "  ".join(cells))
    for name, recalls in table.items():
        print(f"mean closure_recall, {name}: {np.mean(recalls):.3f}")


if __name__ == "__main__":
    main()
