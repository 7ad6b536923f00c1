"""Metrics over a dataset split (or one pair of files), the table, and the JSON record.

A result is a plain dict, the same shape for a split and for a single pair:
    dataset, split, predictions_dir   where it came from (strings or None; for a single
                                      pair, predictions_dir is the prediction file)
    methods        ["static", "amplitude", "model"?]  in table order
    metrics        metrics.METRIC_NAMES
    segments       [{"segment_id", "clip_id", "source", "frames", "fps",
                     "scores": {method: {metric: float}}}]   a method is absent where it
                                                           could not run (no prediction)
    mean           {method: {metric: float}}   over the segments that method scored, NaN skipped;
                   besides the metrics, "lve_vs_static": the method's mean LVE over the static
                   face's on the same segments (below 1: the lips err less than a face that
                   does not move)
    sources        {source: {method: {metric: float}}}   the same means per source (the
                   repository a clip comes from; backend.dataset.folds.source_name)
    scored         {method: number of segments scored}
    missing_predictions  [segment_id]   segments with no <segment_id>.npz in predictions_dir
Metrics that a segment cannot measure are NaN in memory and null in JSON.
"""

import json
import math
import textwrap
from pathlib import Path

import numpy as np

from ...retarget.atomic_file import atomic_open
from ...retarget.motion_file import Motion, load_motion
from ..dataset.folds import source_name
from ..dataset.index import iter_segments
from .baselines import amplitude_baseline, static_baseline
from .metrics import METRIC_NAMES, evaluate

BASELINES = ("static", "amplitude")
MODEL = "model"
COLUMN_HEADERS = {"aperture_corr": "corr", "best_lag": "lag", "best_lag_corr": "corr@lag",
                  "lve": "LVE", "lve_vs_static": "LVE/static",
                  "closure_recall": "recall", "closure_precision": "precision",
                  "motion_energy": "energy", "head_motion": "head"}
TABLE_LEGEND = ("corr = aperture_corr, lag = best_lag (frames, + = prediction late), corr@lag = "
                "aperture_corr at that lag, LVE in inter-ocular units, LVE/static = mean LVE over "
                "the static face's, recall/precision = lip closures, energy = motion_energy, "
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
        segments.append(_score_segment(segment.segment_id, clip.clip_id, truth, audio, pred,
                                       source_name(clip)))
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
                             truth, audio, pred, "")
    methods = [m for m in (*BASELINES, MODEL) if m in segment["scores"]]
    return _result([segment], methods, None, None, str(pred_path), [])


def format_table(result: dict) -> str:
    """Fixed-width text: one block per method (segments, then MEAN), then the means side by
    side, then per source when the segments come from several."""
    return _table(result, list(result["metrics"]))


def _table(result: dict, names: list[str]) -> str:
    mean_names = names + ["lve_vs_static"]
    label_width = max([len("amplitude")] + [len(s["segment_id"]) for s in result["segments"]]
                      + [len(source) + 12 for source in result.get("sources", {})]) + 2

    def row(label: str, scores: dict, columns: list[str] = names) -> str:
        cells = [_cell(scores.get(name)).rjust(max(len(COLUMN_HEADERS.get(name, name)), 6) + 3)
                 for name in columns]
        return label.ljust(label_width) + "".join(cells)

    def header(label: str, columns: list[str] = names) -> list[str]:
        line = label.ljust(label_width) + "".join(
            COLUMN_HEADERS.get(n, n).rjust(max(len(COLUMN_HEADERS.get(n, n)), 6) + 3)
            for n in columns)
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
    lines += header("method", mean_names)
    lines += [row(method, result["mean"][method], mean_names) for method in result["methods"]]
    if result.get("sources"):
        lines += ["", "mean per source"]
        lines += header("source, method", mean_names)
        for source, means in result["sources"].items():
            lines += [row(f"{source} {method}", means[method], mean_names)
                      for method in result["methods"]]
    lines += [""] + textwrap.wrap(TABLE_LEGEND, 98)
    if result["missing_predictions"]:
        lines.append(f"no prediction for {len(result['missing_predictions'])} segment(s), the "
                     f"model's mean leaves them out: {', '.join(result['missing_predictions'])}")
    return "\n".join(lines)


# The worse end of each metric, for the worst fold: lower, higher, or farther from 0 or 1.
WORSE = {"aperture_corr": "low", "best_lag": "off0", "best_lag_corr": "low", "lve": "high",
         "closure_recall": "low", "closure_precision": "low", "motion_energy": "off1",
         "head_motion": "off1", "lve_vs_static": "high"}


def evaluate_folds(dataset_dir: str | Path, model_pattern: str, options) -> dict:
    """Each leave-source-out fold's model (`model_pattern` with {fold} = 1, 2, ...) scored on
    the train sources it was trained without (split "fold-K"), then over the folds:
        folds   [evaluate_split result of fold K]
        mean    {metric: mean over the folds of the model's mean}
        worst   {metric: the worst fold's model mean (WORSE says which end is worse)}
    """
    import tempfile

    from ..dataset.folds import FOLD_COUNT
    from ..generation.motion import predict_split

    if "{fold}" not in model_pattern:
        raise ValueError(f"--fold-models {model_pattern!r} must contain {{fold}}, e.g. "
                         "runs/x_f{fold}/last.safetensors")
    folds = []
    for number in range(1, FOLD_COUNT + 1):
        model = Path(model_pattern.format(fold=number))
        if not model.is_file():
            raise FileNotFoundError(f"{model}: no model for fold {number}; train it with "
                                    f"`dimitra train DATASET --holdout-fold {number} --out ...`")
        with tempfile.TemporaryDirectory(prefix="dimitra-fold-") as predictions:
            predict_split(model, dataset_dir, f"fold-{number}", predictions, options)
            result = evaluate_split(dataset_dir, f"fold-{number}", predictions)
        result["model"] = str(model)
        folds.append(result)
    names = list(METRIC_NAMES) + ["lve_vs_static"]
    per_fold = {name: [fold["mean"][MODEL][name] for fold in folds] for name in names}
    return {"dataset": str(dataset_dir), "model_pattern": model_pattern, "folds": folds,
            "mean": {name: _nanmean(values) for name, values in per_fold.items()},
            "worst": {name: _worst(values, WORSE[name]) for name, values in per_fold.items()}}


def format_folds_table(result: dict) -> str:
    """The model's mean per fold (with the sources it held out), then mean and worst fold."""
    names = list(METRIC_NAMES) + ["lve_vs_static"]
    headers = [COLUMN_HEADERS.get(name, name) for name in names]
    widths = [max(len(h), 6) + 3 for h in headers]
    line = "fold".ljust(14) + "".join(h.rjust(w) for h, w in zip(headers, widths))
    lines = [line, "-" * len(line)]
    rows = [(f"fold {k + 1}", fold["mean"][MODEL]) for k, fold in enumerate(result["folds"])]
    rows += [("mean", result["mean"]), ("worst fold", result["worst"])]
    for label, scores in rows:
        lines.append(label.ljust(14) + "".join(_cell(scores.get(n)).rjust(w)
                                               for n, w in zip(names, widths)))
    lines.append("")
    for k, fold in enumerate(result["folds"]):
        held_out = sorted({s["source"] for s in fold["segments"]})
        lines.append(f"fold {k + 1}: {len(fold['segments'])} segments of {', '.join(held_out)}; "
                     f"model {fold['model']}")
    return "\n".join(lines + [""] + textwrap.wrap(TABLE_LEGEND, 98))


def _worst(values: list[float], direction: str) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan")
    if direction == "low":
        return min(finite)
    if direction == "high":
        return max(finite)
    target = 0.0 if direction == "off0" else 1.0
    return max(finite, key=lambda v: abs(v - target))


def write_json(path: str | Path, result: dict) -> Path:
    """Write the result as JSON (NaN as null) atomically: a temp file, then a rename."""
    path = Path(path)
    text = json.dumps(_without_nan(result), indent=1, allow_nan=False)
    with atomic_open(path, "w") as handle:
        handle.write(text + "\n")
    return path


def _score_segment(segment_id: str, clip_id: str, truth: Motion, audio: np.ndarray | None,
                   pred: Motion | None, source: str) -> dict:
    scores = {"static": evaluate(static_baseline(truth), truth, audio)}
    if audio is not None:
        scores["amplitude"] = evaluate(amplitude_baseline(truth, audio), truth, audio)
    if pred is not None:
        scores[MODEL] = evaluate(pred, truth, audio)
    return {"segment_id": segment_id, "clip_id": clip_id, "source": source,
            "frames": truth.frame_count,
            "fps": truth.fps, "scores": scores}


def _result(segments: list[dict], methods: list[str], dataset: str | None, split: str | None,
            predictions_dir: str | None, missing: list[str]) -> dict:
    scored = {method: sum(method in s["scores"] for s in segments) for method in methods}
    sources = sorted({s["source"] for s in segments})
    return {"dataset": dataset, "split": split, "predictions_dir": predictions_dir,
            "methods": methods, "metrics": list(METRIC_NAMES), "segments": segments,
            "mean": _means(segments, methods), "scored": scored,
            "sources": {source: _means([s for s in segments if s["source"] == source], methods)
                        for source in sources} if len(sources) > 1 else {},
            "missing_predictions": missing}


def _means(segments: list[dict], methods: list[str]) -> dict:
    """{method: {metric: mean over the segments it scored, "lve_vs_static": ratio}}."""
    mean = {}
    for method in methods:
        scored = [s for s in segments if method in s["scores"]]
        mean[method] = {name: _nanmean([s["scores"][method][name] for s in scored])
                        for name in METRIC_NAMES}
        static_lve = _nanmean([s["scores"]["static"]["lve"] for s in scored])
        mean[method]["lve_vs_static"] = (mean[method]["lve"] / static_lve
                                         if static_lve and math.isfinite(static_lve) else math.nan)
    return mean


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
