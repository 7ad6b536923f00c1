"""The renderer's acceptance measurements: `python -m dimitra.backend.render.acceptance DATASET`.

Self-reenactment: each clip of a split is rendered from its first frame, driven by its own
tracked landmarks, and compared with its real video (cropped the same way):
- fidelity: the render re-tracked with the project's tracker; mouth-opening correlation with
  the driving motion and lip vertex error (docs/EVAL.md's, in inter-ocular units) beside the
  static face's and the real video's own crops re-tracked (the tracker's floor); frames where
  no face was found;
- appearance: PSNR (the mean of per-frame PSNR, and the PSNR of the clip's pooled squared
  error) and SSIM over the face (inside the driving face oval) and the mouth patch, for the
  render, the warp alone and the static reference, on every frame but the first (the
  reference itself);
- stability: flicker, the mean absolute frame-to-frame change outside the mouth patch (0-255
  grey levels), of the render and of the real video;
- speed: frames per second of the renderer alone (no decoding or encoding);
- where the lip error is (`lve_parts`): the warp alone re-tracked too, LVE on open and on
  closed frames, the share of frames whose largest lip error is on the inner lip, and the
  gain of the re-tracked mouth opening against the driving one (below 1: it under-opens).
`--size 512` renders, crops the real video and re-tracks both at 512 px.
Nothing here trains. On `dev` and `unseen` it only reports; weights are chosen by running it on
the train clips train.py held out (`--splits train --clips ...`).
"""

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from ...retarget.face import topology
from ..evaluation.metrics import (
    CLOSURE_REOPEN,
    aperture_corr,
    lip_vertex_error,
    mouth_open,
    normalise_sequence,
)
from ..tracking.face_tracker import FaceTracker
from .clip_frames import clip_frames, clip_video
from .mouth_net import WEIGHTS, MouthNet
from .renderer import PhotorealRenderer

METHODS = ("render", "warp", "static")
_INNER = np.isin(topology.LIPS, topology.LIPS_INNER)     # (L,) which LIPS points are inner


def lve_parts(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Where a re-tracked sequence's lip error is: pred and truth (T, 478, 3) normalised.

    lve_open / lve_closed: LVE (as lip_vertex_error, means removed) on the frames where the
    driving mouth is open (inner-lip gap >= CLOSURE_REOPEN IOD) and on the others;
    max_on_inner: share of frames whose largest lip error is on an inner-lip point;
    open_gain: least-squares slope of the re-tracked opening on the driving one.
    """
    lips = list(topology.LIPS)
    both = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(truth).all(axis=(1, 2))
    p, t = pred[both][:, lips], truth[both][:, lips]
    error = np.linalg.norm((p - p.mean(axis=0)) - (t - t.mean(axis=0)), axis=-1)   # (V, L)
    per_frame = error.max(axis=1)
    opening = mouth_open(truth[both])
    is_open = opening >= CLOSURE_REOPEN
    centred = opening - opening.mean()
    pred_open = mouth_open(pred[both])
    gain = float(centred @ (pred_open - pred_open.mean()) / max(centred @ centred, 1e-12))
    return {"lve_open": float(per_frame[is_open].mean()) if is_open.any() else float("nan"),
            "lve_closed": float(per_frame[~is_open].mean()) if (~is_open).any() else float("nan"),
            "open_share": float(is_open.mean()),
            "max_on_inner": float(_INNER[error.argmax(axis=1)].mean()),
            "open_gain": gain}


def squared_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """(sum of squared differences, values summed) of two (H, W, 3) uint8 images over mask."""
    error = ((a.astype(np.float64) - b) ** 2)[mask]
    return float(error.sum()), error.size


def psnr_of(error_sum: float, count: int) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(error_sum / max(count, 1), 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM (7x7 windows, grey levels) of two (H, W, 3) uint8 images over mask."""
    a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)

    def mean(x):
        return cv2.boxFilter(x, -1, (7, 7), borderType=cv2.BORDER_REFLECT)
    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b = mean(a * a) - mu_a ** 2, mean(b * b) - mu_b ** 2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1)
                                                       * (var_a + var_b + c2))
    return float(value[mask].mean())


def regions(landmarks_crop_px: np.ndarray, mouth_side: float, size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(face, mouth) (size, size) bool masks: inside the face oval; the mouth patch square."""
    face = np.zeros((size, size), np.uint8)
    cv2.fillPoly(face, [np.round(landmarks_crop_px[list(topology.FACE_OVAL), :2]).astype(np.int32)], 1)
    centre = landmarks_crop_px[list(topology.LIPS_OUTER), :2].mean(axis=0)
    mouth = np.zeros((size, size), bool)
    x0, y0 = np.maximum(0, np.round(centre - mouth_side / 2).astype(int))
    x1, y1 = np.round(centre + mouth_side / 2).astype(int)
    mouth[y0:y1, x0:x1] = True
    return face.astype(bool), mouth


def evaluate_clip(dataset: Path, clip: dict, segment: dict, mouth_net: MouthNet,
                  size: int = 256, picture: Path | None = None) -> dict:
    with np.load(dataset / segment["file"]) as data:
        landmarks = data["landmarks"].astype(np.float64)                    # (T, 478, 3) px
    frames = clip_frames(clip_video(dataset, clip["video"]), segment["start_s"], 25.0,
                         len(landmarks))
    first = next(frames)
    render = PhotorealRenderer(first, landmarks[0], size, mouth_net)
    warp = PhotorealRenderer(first, landmarks[0], size, None)
    crop = render.crop
    static = render.warp.image
    scores = {f"{m}_{r}_{k}": [] for m in METHODS for r in ("face", "mouth") for k in ("psnr", "ssim")}
    pooled = {f"{m}_{r}": [0.0, 0] for m in METHODS for r in ("face", "mouth")}
    flicker = {"render": [], "real": []}
    tracked, tracked_real, tracked_warp = [], [], []
    render_seconds = 0.0
    previous = None
    best_open, shown = -1.0, None
    with FaceTracker() as tracker, FaceTracker() as real_tracker, FaceTracker() as warp_tracker:
        for index, frame in enumerate(_chain(first, frames)):
            real = crop.cut(frame)
            started = time.perf_counter()
            made = render.render(landmarks[index])
            render_seconds += time.perf_counter() - started
            warped = warp.render(landmarks[index])
            driving = crop.to_crop(landmarks[index])
            face, mouth = regions(driving, render.mouth.side, size)
            # Frame 0 is the reference itself, reproduced exactly by the warp and the static
            # face (PSNR without bound): appearance is scored on the frames it drives.
            scored = (("render", made), ("warp", warped), ("static", static)) if index else ()
            for method, image in scored:
                for region, mask in (("face", face), ("mouth", mouth)):
                    error_sum, count = squared_error(image, real, mask)
                    scores[f"{method}_{region}_psnr"].append(psnr_of(error_sum, count))
                    pooled[f"{method}_{region}"][0] += error_sum
                    pooled[f"{method}_{region}"][1] += count
                    scores[f"{method}_{region}_ssim"].append(ssim(image, real, mask))
            if previous is not None:
                outside = ~(mouth | previous[2])
                flicker["render"].append(float(np.abs(made.astype(np.int16) - previous[0])[outside].mean()))
                flicker["real"].append(float(np.abs(real.astype(np.int16) - previous[1])[outside].mean()))
            previous = (made, real, mouth)
            found = tracker.track(made)
            tracked.append(np.full((478, 3), np.nan) if found is None else found)
            found = real_tracker.track(real)
            tracked_real.append(np.full((478, 3), np.nan) if found is None else found)
            found = warp_tracker.track(warped)
            tracked_warp.append(np.full((478, 3), np.nan) if found is None else found)
            opening = np.linalg.norm(driving[13, :2] - driving[14, :2])
            if opening > best_open:
                best_open, shown = opening, np.concatenate([static, warped, made, real], axis=1)
    count = len(tracked)
    driving_px = crop.to_crop(landmarks[:count])
    truth = normalise_sequence(driving_px).landmarks
    retracked = normalise_sequence(np.stack(tracked)).landmarks
    real_retracked = normalise_sequence(np.stack(tracked_real)).landmarks
    warp_retracked = normalise_sequence(np.stack(tracked_warp)).landmarks
    still = np.repeat(truth[:1], count, axis=0)
    result = {"clip": segment["segment_id"], "frames": count,
              "frames_without_face": int(sum(not np.isfinite(t).all() for t in tracked)),
              "mouth_corr": aperture_corr(mouth_open(retracked), mouth_open(truth)),
              "lve": lip_vertex_error(retracked, truth),
              "lve_static": lip_vertex_error(still, truth),
              # The floor: the real video's crops re-tracked the same way.
              "lve_real_retracked": lip_vertex_error(real_retracked, truth),
              "lve_warp": lip_vertex_error(warp_retracked, truth),
              "mouth_corr_warp": aperture_corr(mouth_open(warp_retracked), mouth_open(truth)),
              "flicker_render": float(np.mean(flicker["render"])),
              "flicker_real": float(np.mean(flicker["real"])),
              "render_fps": count / render_seconds}
    for name, sequence in (("render", retracked), ("warp", warp_retracked),
                           ("real", real_retracked)):
        result.update({f"{name}_{key}": value for key, value in lve_parts(sequence, truth).items()})
    result.update({key: float(np.mean(values)) for key, values in scores.items()})
    # PSNR of the clip's pooled squared error: the mean of per-frame PSNR above weighs a frame
    # the warp already matches (near the reference) as much as an open mouth.
    result.update({f"{key}_psnr_pooled": psnr_of(*sums) for key, sums in pooled.items()})
    if picture is not None and shown is not None:
        cv2.imwrite(str(picture), cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    return result


def _chain(first, rest):
    yield first
    yield from rest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dimitra.backend.render.acceptance",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--splits", nargs="+", default=["dev", "unseen"])
    parser.add_argument("--json", required=True, help="write per-clip and mean results here")
    parser.add_argument("--pictures", help="folder for each clip's widest-mouth frame: static, "
                                           "warp, render, real")
    parser.add_argument("--max-clips", type=int, default=0, help="per split (0: all)")
    parser.add_argument("--clips", nargs="+", help="only these segments (e.g. the train clips "
                                                   "train.py held out, to choose weights)")
    parser.add_argument("--size", type=int, default=256, choices=(256, 512),
                        help="render, crop and re-track at this side in pixels")
    parser.add_argument("--mouth-net", default=str(WEIGHTS), help="the network's ONNX file")
    args = parser.parse_args(argv)
    dataset = Path(args.dataset)
    index = json.loads((dataset / "index.json").read_text())
    mouth_net = MouthNet(args.mouth_net)
    results = {}
    for split in args.splits:
        entries = [(clip, segment) for clip in index["clips"] if clip["split"] == split
                   and clip["status"] == "ok" for segment in clip["segments"]]
        if args.clips:
            entries = [(clip, segment) for clip, segment in entries
                       if segment["segment_id"] in args.clips]
        if args.max_clips:
            entries = entries[:args.max_clips]
        rows = []
        for clip, segment in entries:
            picture = None
            if args.pictures:
                Path(args.pictures).mkdir(parents=True, exist_ok=True)
                picture = Path(args.pictures) / f"{segment['segment_id']}.png"
            rows.append(evaluate_clip(dataset, clip, segment, mouth_net, args.size, picture))
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                              for k, v in rows[-1].items()}), flush=True)
        mean = {key: float(np.nanmean([row[key] for row in rows]))
                for key in rows[0] if key != "clip"}
        results[split] = {"clips": rows, "mean": mean}
        print(split, json.dumps({k: round(v, 4) for k, v in mean.items()}), flush=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
