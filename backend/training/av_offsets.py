"""Audio-video offsets of training clips, measured by models that never saw them.

Web and broadcast clips come with their sound a few frames early or late (the shared data's
README: "the audio/video offset of these pairs was not measured"). A model trained on them
learns each speaker's offset by heart and, on a new speaker, hedges between them: the mouth
comes out blurred in time. Leave-source-out fold models give an estimate that needs no
SyncNet: scored on the clips they were not trained on (`dimitra eval --fold-models ...
--json FOLDS.json`), the lag at which each clip's generated mouth best follows the real one
is that clip's offset from the timing the model learnt elsewhere.

    offset (frames) = best_lag of the clip - the median best_lag of all clips

Positive: the clip's video runs ahead of its sound; training pairs motion frame t with the
features of frame t + offset. Lags of short clips or of clips the model hardly follows are
noise, so those clips keep offset 0.
"""

import json
from pathlib import Path

import numpy as np

MIN_FRAMES = 100          # 4 s: shorter clips give lags that wander
MIN_LAG_CORR = 0.3        # the model follows the mouth at that lag
MAX_OFFSET = 5            # frames (200 ms); the metric searches ±10


def offsets_from_fold_scores(folds_result: dict) -> dict[str, int]:
    """{segment_id: offset in frames} from a `dimitra eval --fold-models` result."""
    rows = [(segment["segment_id"], segment["frames"], segment["scores"]["model"])
            for fold in folds_result["folds"] for segment in fold["segments"]
            if "model" in segment["scores"]]
    trusted = {sid: scores["best_lag"] for sid, frames, scores in rows
               if frames >= MIN_FRAMES and _finite(scores.get("best_lag"))
               and _finite(scores.get("best_lag_corr"))
               and scores["best_lag_corr"] >= MIN_LAG_CORR}
    if not trusted:
        return {}
    typical = float(np.median(list(trusted.values())))
    return {sid: int(np.clip(round(lag - typical), -MAX_OFFSET, MAX_OFFSET))
            for sid, lag in trusted.items()}


def load_offsets(path: str | Path) -> dict[str, int]:
    """Offsets from a fold result's JSON, or from a plain {segment_id: frames} JSON."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read audio-video offsets ({error}); give the JSON "
                         "of `dimitra eval --fold-models ... --json FILE`") from error
    if isinstance(data, dict) and "folds" in data:
        return offsets_from_fold_scores(data)
    if isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
        return data
    raise ValueError(f"{path}: neither a fold result nor {{segment_id: frames}}")


def shift_features(features: np.ndarray, offset: int) -> np.ndarray:
    """(T, F) -> (T, F): row t holds the features of frame t + offset (the edge rows held)."""
    if offset == 0:
        return features
    rows = np.clip(np.arange(len(features)) + offset, 0, len(features) - 1)
    return features[rows]


def _finite(value) -> bool:
    return value is not None and bool(np.isfinite(value))
