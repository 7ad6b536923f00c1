"""Training pairs for the mouth network: self-reenactment within one `train` clip.

For a clip, the take's crop comes from its first frame (as `dimitra render` takes it from the
reference picture); a few of its frames serve as references, and each sampled driving frame
gives one pair: the reference warped to the driving landmarks, cut to the mouth patch (the
network's input, built by the renderer's own code) and the real driving frame's patch (the
target). Mouth-open frames are drawn more often: they are where the network has work to do;
but frames near the reference's own mouth must be drawn too, or the network learns to repaint
every mouth and spoils the ones the warp already gets right (`open_floor`).
Only clips of the `train` split are read; `dev` and `unseen` never are.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...retarget.face import topology
from .clip_frames import clip_frames, clip_video
from .mouth_net import MouthPatch, lip_masks
from .warp import FaceWarp, crop_around_face

SIZE = 256                 # the crop side pairs are made at (the renderer's default)
REFERENCES_PER_CLIP = 4    # the first frame and three others


@dataclass
class Pairs:
    """N pairs: uint8 patches (N, P, P, 3) and float16 lip masks (N, 2, P, P); P = mouth_net.PATCH."""

    warped: np.ndarray
    reference: np.ndarray
    target: np.ndarray
    masks: np.ndarray
    clip: np.ndarray          # (N,) int: index into clip_ids
    clip_ids: list[str]

    def save(self, path: str | Path) -> None:
        np.savez(path, warped=self.warped, reference=self.reference, target=self.target,
                 masks=self.masks, clip=self.clip, clip_ids=np.array(json.dumps(self.clip_ids)))

    @classmethod
    def load(cls, path: str | Path) -> "Pairs":
        with np.load(path) as data:
            return cls(data["warped"], data["reference"], data["target"], data["masks"],
                       data["clip"], json.loads(str(data["clip_ids"])))


def train_segments(dataset: str | Path) -> list[tuple[dict, dict]]:
    """(clip entry, segment) of every usable `train` segment in the dataset's index."""
    index = json.loads((Path(dataset) / "index.json").read_text())
    return [(clip, segment) for clip in index["clips"]
            if clip["split"] == "train" and clip["status"] == "ok"
            for segment in clip["segments"]]


def driving_frame_odds(opening: np.ndarray, open_floor: float = 0.2) -> np.ndarray:
    """(T,) the chance of each frame of a clip to be drawn as a driving frame, from its
    inner-lip opening (T,) in any unit: open_floor × the clip's widest opening + its own. The
    widest-open frame is drawn 1 + 1 / open_floor times as often as a fully closed one: 6
    times at 0.2, twice at 1.0; at 0 only by the opening."""
    weight = open_floor * opening.max() + opening
    return weight / weight.sum()


def clip_pairs(dataset: str | Path, clip: dict, segment: dict, count: int,
               rng: np.random.Generator, open_floor: float = 0.2) -> tuple[np.ndarray, ...]:
    """Up to `count` pairs from one segment: (warped, reference, target, masks) arrays; the
    driving frames drawn as driving_frame_odds says (open_floor)."""
    with np.load(Path(dataset) / segment["file"]) as data:
        landmarks = data["landmarks"].astype(np.float64)                    # (T, 478, 3) px
    crop = crop_around_face(landmarks[0], SIZE)
    video = clip_video(dataset, clip["video"])
    frames = np.stack([crop.cut(image) for image in
                       clip_frames(video, segment["start_s"], 25.0, len(landmarks))])
    crop_px = crop.to_crop(landmarks)                                       # (T, 478, 3)
    references = [0] + list(rng.choice(np.arange(1, len(frames)),
                                       min(REFERENCES_PER_CLIP - 1, len(frames) - 1),
                                       replace=False))
    warps = [(FaceWarp(frames[r], crop_px[r]), MouthPatch(crop_px[r]), r) for r in references]
    opening = np.linalg.norm(crop_px[:, topology.UPPER_INNER_LIP, :2]
                             - crop_px[:, topology.LOWER_INNER_LIP, :2], axis=1)
    drawn = rng.choice(len(frames), min(count, len(frames)), replace=False,
                       p=driving_frame_odds(opening, open_floor))
    out = [], [], [], []
    for driving in drawn:
        warp, patch, r = warps[rng.integers(len(warps))]
        to_patch = patch.to_patch(crop_px[driving])
        out[0].append(patch.cut(warp.warp(crop_px[driving]), to_patch))
        out[1].append(patch.cut(frames[r], patch.to_patch(crop_px[r])))
        out[2].append(patch.cut(frames[driving], to_patch))
        out[3].append(lip_masks(crop_px[driving], to_patch).astype(np.float16))
    return tuple(np.stack(part) for part in out)


def build_pairs(dataset: str | Path, per_clip: int = 160, seed: int = 0,
                open_floor: float = 0.2, log=print) -> Pairs:
    if not 0.0 <= open_floor <= 1.0:
        raise ValueError(f"open_floor {open_floor}: give a share between 0 and 1")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    clip_index, clip_ids = [], []
    for clip, segment in train_segments(dataset):
        pairs = clip_pairs(dataset, clip, segment, per_clip, rng, open_floor)
        for part, array in zip(parts, pairs, strict=True):
            part.append(array)
        clip_index.append(np.full(len(pairs[0]), len(clip_ids)))
        clip_ids.append(segment["segment_id"])
        log(f"{segment['segment_id']}: {len(pairs[0])} pairs")
    stacked = [np.concatenate(part) for part in parts]
    return Pairs(*stacked, np.concatenate(clip_index), clip_ids)

