"""Metrics over a dataset split (or one pair of files), the table, and the JSON record.

A result is a plain dict, the same shape for a split and for a single pair:
    dataset, split, predictions_dir   where it came from (strings or None; for a single
                                      pair, predictions_dir is the prediction file)
    methods        ["static", "amplitude", "model"?]  in table order
    metrics        metrics.METRIC_NAMES
    segments       [{"segment_id", "clip_id", "frames", "fps",
                     "scores": {method: {metric: float}}}]   a method is absent where it
                                                           could not run (no prediction)
    mean           {method: {metric: float}}   over the segments that method scored, NaN skipped
    scored         {method: number of segments scored}
    missing_predictions  [segment_id]   segments with no <segment_id>.npz in predictions_dir
Metrics that a segment cannot measure are NaN in memory and null in JSON.
"""

import json
import math
import textwrap
from pathlib import Path

import numpy as np

from backend.dataset.index import iter_segments
from retarget.atomic_file import atomic_open
from retarget.motion_file import Motion, load_motion

from .baselines import amplitude_baseline, static_baseline
from .metrics import METRIC_NAMES, evaluate

BASELINES = ("static", "amplitude")
MODEL = "model"
COLUMN_HEADERS = {"aperture_corr": "corr", "best_lag": "lag", "lve": "LVE",
                  "closure_recall": "recall", "closure_precision": "precision",
                  "motion_energy": "energy", "head_motion": "head"}
TABLE_LEGEND = ("corr = aperture_corr, lag = best_lag (frames, + = prediction late), LVE in "
                "inter-ocular units, recall/precision = lip closures, energy = motion_energy, "
                "head = head_motion; - = not measurable on that segment (docs/EVAL.md)")


def evaluate_split(dataset_dir: str | Path, split: str = "dev",
                   predictions_dir: str | Path | None = None) -> dict:
    """Score the baselines, and the model's `<segment_id>.npz` predictions when given, on a split.

    The truth of each segment is its motion file; its `audio` extra (16 kHz, sample 0 =
    frame 0) drives the amplitude baseline and the speech mask.
    """
    dataset_dir = Path(dataset_dir)
    if predictions_dir is not None:
        predictions_dir = Path(predictions_dir)
        if not predictions_dir.is_dir():
            raise FileNotFoundError(f"{predictions_dir}: no such predictions folder; it should "
                                    "hold one <segment_id>.npz motion file per segment")
    segments, missing = [], []
    for clip, segment, truth in iter_segments(dataset_dir, split):
        audio = truth.extras.get("audio")
        if audio is None:
            raise ValueError(f"{dataset_dir / segment.file}: the segment has no 'audio' extra; "
                             "re-run `dimitra prepare` on the dataset")
        pred = None
        if predictions_dir is not None:
            pred_path = predictions_dir / f"{segment.segment_id}.npz"
            if pred_path.is_file():
                pred = load_motion(pred_path, extras=False)
            else:
                missing.append(segment.segment_id)
        segments.append(_score_segment(segment.segment_id, clip.clip_id, truth, audio, pred))
    if not segments:
        raise ValueError(f"{dataset_dir}: no prepared segments in split {split!r}; run "
                         "`dimitra prepare` first or choose another split")
    methods = list(BASELINES) + ([MODEL] if predictions_dir is not None else [])
    return _result(segments, methods, str(dataset_dir), split,
                   None if predictions_dir is None else str(predictions_dir), missing)


def evaluate_files(pred_path: str | Path, truth_path: str | Path) -> dict:
    """Score one predicted motion file against one true one, beside the baselines.

    The result has the shape of `evaluate_split`'s, with a single segment named after the
    truth file. Without an `audio` extra in the truth, every frame counts as speech and the
    amplitude baseline is left out.
    """
    truth = load_motion(truth_path)
    pred = load_motion(pred_path, extras=False)
    audio = truth.extras.get("audio")
    segment = _score_segment(Path(truth_path).stem, str(truth.meta.get("clip_id", "")),
                             truth, audio, pred)
    methods = [m for m in (*BASELINES, MODEL) if m in segment["scores"]]
    return _result([segment], methods, None, None, str(pred_path), [])


def format_table(result: dict) -> str:
    """Fixed-width text: one block per method (segments, then MEAN), then the means side by side."""
    names = list(result["metrics"])
    headers = [COLUMN_HEADERS.get(name, name) for name in names]
    widths = [max(len(header), 6) + 3 for header in headers]
    label_width = max([len("amplitude")] + [len(s["segment_id"]) for s in result["segments"]]) + 2

    def row(label: str, scores: dict) -> str:
        cells = [_cell(scores.get(name)).rjust(width) for name, width in zip(names, widths)]
        return label.ljust(label_width) + "".join(cells)

    def header(label: str) -> list[str]:
        line = label.ljust(label_width) + "".join(h.rjust(w) for h, w in zip(headers, widths))
        return [line, "-" * len(line)]

    lines = []
    for method in result["methods"]:
        scored, total = result["scored"][method], len(result["segments"])
        lines.append(f"{method}  ({scored} of {total} segments)")
        lines += header("segment")
        lines += [row(s["segment_id"], s["scores"][method]) for s in result["segments"]
                  if method in s["scores"]]
        lines += [row("MEAN", result["mean"][method]), ""]
    lines.append("mean per method")
    lines += header("method")
    lines += [row(method, result["mean"][method]) for method in result["methods"]]
    lines += [""] + textwrap.wrap(TABLE_LEGEND, 98)
    if result["missing_predictions"]:
        lines.append(f"no prediction for {len(result['missing_predictions'])} segment(s), the "
                     f"model's mean leaves them out: {', '.join(result['missing_predictions'])}")
    return "\n".join(lines)


def write_json(path: str | Path, result: dict) -> Path:
    """Write the result as JSON (NaN as null) atomically: a temp file, then a rename."""
    path = Path(path)
    text = json.dumps(_without_nan(result), indent=1, allow_nan=False)
    with atomic_open(path, "w") as handle:
        handle.write(text + "\n")
    return path


def _score_segment(segment_id: str, clip_id: str, truth: Motion, audio: np.ndarray | None,
                   pred: Motion | None) -> dict:
    scores = {"static": evaluate(static_baseline(truth), truth, audio)}
    if audio is not None:
        scores["amplitude"] = evaluate(amplitude_baseline(truth, audio), truth, audio)
    if pred is not None:
        scores[MODEL] = evaluate(pred, truth, audio)
    return {"segment_id": segment_id, "clip_id": clip_id, "frames": truth.frame_count,
            "fps": truth.fps, "scores": scores}


def _result(segments: list[dict], methods: list[str], dataset: str | None, split: str | None,
            predictions_dir: str | None, missing: list[str]) -> dict:
    mean, scored = {}, {}
    for method in methods:
        rows = [s["scores"][method] for s in segments if method in s["scores"]]
        scored[method] = len(rows)
        mean[method] = {name: _nanmean([row[name] for row in rows]) for name in METRIC_NAMES}
    return {"dataset": dataset, "split": split, "predictions_dir": predictions_dir,
            "methods": methods, "metrics": list(METRIC_NAMES), "segments": segments,
            "mean": mean, "scored": scored, "missing_predictions": missing}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _cell(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _without_nan(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    if isinstance(value, np.generic):
        return _without_nan(value.item())
    return value
