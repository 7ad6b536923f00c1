"""Audio-video offsets of training clips from fold models' lags."""

import json

import numpy as np
import pytest

from dimitra.backend.training.av_offsets import (
    load_offsets,
    offsets_from_fold_scores,
    shift_features,
)


def fold_result(rows):
    """rows: (segment_id, frames, best_lag, best_lag_corr) -> a --fold-models result."""
    segments = [{"segment_id": sid, "frames": frames,
                 "scores": {"static": {}, "model": {"best_lag": lag, "best_lag_corr": r}}}
                for sid, frames, lag, r in rows]
    return {"folds": [{"segments": segments[:2]}, {"segments": segments[2:]}]}


def test_offsets_are_lags_from_the_typical_one_for_clips_that_can_tell():
    result = fold_result([("late", 500, 4.0, 0.6), ("typical", 400, 1.0, 0.5),
                          ("also_typical", 300, 1.0, 0.4), ("early", 300, -1.0, 0.5),
                          ("short", 40, 9.0, 0.9), ("unfollowed", 500, 7.0, 0.1),
                          ("flat", 500, float("nan"), float("nan"))])
    offsets = offsets_from_fold_scores(result)
    # median of the trusted lags (4, 1, 1, -1) is 1
    assert offsets == {"late": 3, "typical": 0, "also_typical": 0, "early": -2}


def test_offsets_are_capped():
    offsets = offsets_from_fold_scores(fold_result([("a", 500, 10.0, 0.5), ("b", 500, 0.0, 0.5),
                                                    ("c", 500, 0.0, 0.5)]))
    assert offsets["a"] == 5


def test_shift_pairs_frame_t_with_the_features_of_t_plus_offset():
    features = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    shifted = shift_features(features, 2)
    assert shifted[:, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 9, 9]
    assert shift_features(features, -1)[:, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert shift_features(features, 0) is features


def test_load_offsets_reads_fold_results_and_plain_tables(tmp_path):
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps(fold_result([("a", 500, 3.0, 0.5), ("b", 500, 0.0, 0.5),
                                             ("c", 500, 0.0, 0.5)])))
    assert load_offsets(folds) == {"a": 3, "b": 0, "c": 0}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"a": 2}))
    assert load_offsets(plain) == {"a": 2}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: cannot read"):
        load_offsets(broken)
    with pytest.raises(ValueError, match="neither a fold result"):
        plain.write_text(json.dumps(["a"]))
        load_offsets(plain)
