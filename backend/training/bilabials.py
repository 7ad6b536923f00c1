"""`dimitra train-bilabials DATASET --out FILE`: the bilabial detector on a prepared dataset.

Labels per train segment: the phone labels shipped beside the clip's audio where there are
any (`aligned_bilabial_frames`), else PocketSphinx phone recognition with a wide beam; clips
whose manifest names a language other than English are left out (the recogniser is English).
The detector then learns to find those frames from the speech features the motion model
uses, so at generation time PocketSphinx need not run. Scores on the dev split's phone
labels (where it has any) are printed and kept in the file's metadata.
"""

import argparse
import time

import numpy as np
import torch
from torch import nn

from ..dataset.index import iter_segments, load_features
from ..features.bilabials import (
    BilabialDetector,
    BilabialNet,
    aligned_bilabial_frames,
    bilabial_frames,
    save_detector,
)

LABEL_BEAM = 1e-20
CROP_FRAMES = 200


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dimitra train-bilabials", description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--out", required=True, help="detector file (.safetensors)")
    parser.add_argument("--features", default="whisper-tiny-en")
    parser.add_argument("--split", default="train",
                        help="split or train-minus-fold-K to train on (default train)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8, help="crops of 200 frames per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=int, default=3,
                        help="nets averaged, trained from seeds seed, seed+1, ... (default 3)")
    return parser.parse_args(argv)


def labelled_segments(dataset, split: str, features: str) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """[(features (T, F), labels (T,) in {0, 1}, label source)] for the split's English segments."""
    out = []
    for clip, segment, motion in iter_segments(dataset, split):
        if clip.language not in ("", "en"):
            continue
        x = load_features(dataset, segment, features)
        labels = aligned_bilabial_frames(clip.audio, len(x), segment.start_s)
        source = "aligned"
        if labels is None:
            labels = bilabial_frames(motion.extras["audio"], beam=LABEL_BEAM)
            source = "pocketsphinx"
        y = np.zeros(len(x), np.float32)
        y[:min(len(y), len(labels))] = labels[:len(y)]
        out.append((x.astype(np.float32), y, source))
    return out


def train_detector(segments: list[tuple[np.ndarray, np.ndarray, str]], feature_extractor: str,
                   steps: int = 1500, batch: int = 8, seed: int = 0, members: int = 1
                   ) -> BilabialDetector:
    """`members` nets, each from its own seed (seed, seed+1, ...), averaged."""
    nets = [train_net(segments, steps, batch, seed + i) for i in range(members)]
    return BilabialDetector(nets, feature_extractor)


def train_net(segments: list[tuple[np.ndarray, np.ndarray, str]], steps: int, batch: int,
              seed: int) -> BilabialNet:
    """AdamW on random 8 s crops with feature noise; positives weighted up to 5x (they are
    about 7% of frames)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs = [torch.from_numpy(x) for x, _, _ in segments]
    ys = [torch.from_numpy(y) for _, y, _ in segments]
    stacked = torch.cat(xs)
    net = BilabialNet(stacked.shape[1])
    net.feature_mean.copy_(stacked.mean(0))
    net.feature_std.copy_(stacked.std(0) + 1e-3)
    positive = float(torch.cat(ys).mean())
    pos_weight = torch.tensor(min((1 - positive) / max(positive, 1e-6), 5.0))
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    net.train()
    for _ in range(steps):
        loss = 0.0
        for i in rng.integers(len(xs), size=batch):
            x, y = xs[i], ys[i]
            length = min(len(x), CROP_FRAMES)
            start = int(rng.integers(0, len(x) - length + 1))
            noisy = x[start:start + length] + 0.1 * net.feature_std * torch.randn(length, x.shape[1])
            logits = net(noisy[None])[0]
            loss = loss + nn.functional.binary_cross_entropy_with_logits(
                logits, y[start:start + length], pos_weight=pos_weight)
        optimiser.zero_grad()
        (loss / batch).backward()
        optimiser.step()
    return net.eval()


def event_scores(truth: np.ndarray, found: np.ndarray, fps: float = 25.0,
                 tolerance_s: float = 0.1) -> tuple[int, int, int, int]:
    """Bilabials as events (runs of marked frames, at their centres): (true ones found, true
    ones, found ones that are true, found ones), matched within `tolerance_s`."""
    a, b = run_centres(truth, fps), run_centres(found, fps)
    hits = sum(bool(len(b)) and np.abs(b - t).min() < tolerance_s for t in a)
    correct = sum(bool(len(a)) and np.abs(a - f).min() < tolerance_s for f in b)
    return int(hits), len(a), int(correct), len(b)


def run_centres(marks: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """(K,) centre times (s) of the runs of frames > 0.5 in (T,) marks."""
    edges = np.diff(np.concatenate([[0], (np.asarray(marks) > 0.5).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return (starts + ends) / 2 / fps


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    train = labelled_segments(args.dataset, args.split, args.features)
    if not train:
        raise SystemExit(f"{args.dataset}: no English {args.split} segments with "
                         f"{args.features!r} features")
    sources = {s: sum(len(y) for _, y, src in train if src == s) for s in ("aligned", "pocketsphinx")}
    print(f"{len(train)} train segments; labelled frames: {sources}")
    detector = train_detector(train, args.features, args.steps, args.batch, args.seed, args.members)
    dev = [(x, y) for x, y, source in labelled_segments(args.dataset, "dev", args.features)
           if source == "aligned"]
    totals = np.sum([event_scores(y, detector(x)) for x, y in dev], axis=0) if dev else np.zeros(4)
    scores = {"dev_aligned_recall": float(totals[0] / max(totals[1], 1)),
              "dev_aligned_precision": float(totals[2] / max(totals[3], 1)),
              "dev_aligned_bilabials": int(totals[1])}
    meta = {"split": args.split, "steps": args.steps, "batch": args.batch, "seed": args.seed,
            "members": args.members,
            "label_frames": sources, **scores}
    save_detector(args.out, detector, meta)
    print(f"dev (phone labels, {scores['dev_aligned_bilabials']} bilabials): recall "
          f"{scores['dev_aligned_recall']:.2f}, precision {scores['dev_aligned_precision']:.2f}")
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0
