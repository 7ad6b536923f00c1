"""The yardstick: every metric of docs/EVAL.md can succeed and can fail.

The truth is a talking face built from the data-made canonical face: the jaw follows a known
opening signal with lip closures and a pause, the head turns, drifts and zooms, and the
"audio" is noise whose loudness follows the speech. The prepared dev split, when it is on
this machine, is checked too.
"""

import json
import math
import warnings

import numpy as np
import pytest

from dimitra.backend.evaluation import metrics
from dimitra.backend.evaluation.baselines import (
    amplitude_baseline,
    loudness_envelope,
    open_jaw,
    static_baseline,
)
from dimitra.backend.evaluation.report import (
    evaluate_files,
    evaluate_split,
    format_table,
    write_json,
)
from dimitra.retarget.face import canonical, pose
from dimitra.retarget.motion_file import Motion, save_motion

FPS = 25.0
RATE = metrics.AUDIO_RATE
PERFECT = {"aperture_corr": 1.0, "best_lag": 0.0, "best_lag_corr": 1.0, "lve": 0.0,
           "closure_recall": 1.0,
           "closure_precision": 1.0, "motion_energy": 1.0, "head_motion": 1.0}


# ---------------------------------------------------------------------------------------------
# A synthetic talking face
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def canonical_face() -> np.ndarray:
    if not canonical.CANONICAL_FACE_PATH.is_file():
        pytest.skip("retarget/face/data/canonical_face.npy is not built yet")
    return canonical.load_canonical_face()


@pytest.fixture(scope="module")
def reference_px(canonical_face) -> np.ndarray:
    """(478, 3) the canonical face as a 256x256 video would show it (90 px between the eyes)."""
    return pose.PIXEL_FROM_UPRIGHT.dot(canonical_face.T).T * 90.0 + np.array([128.0, 150.0, 0.0])


def speech_opening(seconds: float, fps: float) -> np.ndarray:
    """(T,) jaw angle (rad) at `fps`, a smooth function of time: syllables, closures, a pause.

    Keyframes every 0.2 s alternate between a syllable peak and a valley; every third valley
    is a closure (0), the others stay ajar; 2.0-2.8 s is a closed-mouth pause.
    """
    rng = np.random.default_rng(7)
    key_times = np.arange(0.0, seconds + 0.2, 0.1)
    key_values = np.where(np.arange(len(key_times)) % 2 == 1,
                          rng.uniform(0.10, 0.24, len(key_times)),
                          np.where(np.arange(len(key_times)) % 6 == 0, 0.0,
                                   rng.uniform(0.06, 0.09, len(key_times))))
    key_values[(key_times >= 2.0) & (key_times <= 2.8)] = 0.0
    t = np.arange(round(seconds * fps)) / fps
    index = np.clip(np.searchsorted(key_times, t, side="right") - 1, 0, len(key_times) - 2)
    phase = (t - key_times[index]) / (key_times[index + 1] - key_times[index])
    ease = (1 - np.cos(np.pi * phase)) / 2                              # smooth between keys
    return key_values[index] * (1 - ease) + key_values[index + 1] * ease


def head_motion_of_time(t: np.ndarray) -> pose.Similarity:
    """Per-frame camera-side motion: turns of a few degrees, drift, zoom (pixel frame)."""
    angles = np.stack([np.radians(4) * np.sin(2 * np.pi * t / 2.3),
                       np.radians(6) * np.sin(2 * np.pi * t / 3.1 + 1.0),
                       np.radians(3) * np.sin(2 * np.pi * t / 1.7)], -1)
    scale = 1.0 + 0.15 * np.sin(2 * np.pi * t / 4.0)
    translation = np.stack([10 * np.sin(2 * np.pi * t / 2.9), 6 * np.cos(2 * np.pi * t / 3.7),
                            np.zeros_like(t)], -1)
    return pose.Similarity(scale, pose.euler_xyz_to_rotation(angles), translation)


def talking_landmarks(reference_px, canonical_face, fps: float, seconds: float = 6.0,
                      head: bool = True) -> np.ndarray:
    """(T, 478, 3) pixel landmarks of the reference face speaking at `fps`."""
    landmarks = open_jaw(reference_px, speech_opening(seconds, fps), canonical_face,
                         from_closed=True)
    if head:
        centre = reference_px.mean(axis=0)
        moved = head_motion_of_time(np.arange(len(landmarks)) / fps).apply(landmarks - centre)
        landmarks = moved + centre
    return landmarks


def speech_audio(opening: np.ndarray, fps: float) -> np.ndarray:
    """(N,) 16 kHz noise, loud while the jaw moves, near silent in the pause."""
    rng = np.random.default_rng(3)
    count = round(len(opening) / fps * RATE)
    frame_of_sample = np.minimum((np.arange(count) * fps / RATE).astype(int), len(opening) - 1)
    t = frame_of_sample / fps
    level = np.where((t >= 2.05) & (t < 2.75), 1e-4, 0.05 + opening[frame_of_sample])
    return (rng.standard_normal(count) * level).astype(np.float32)


@pytest.fixture(scope="module")
def truth(reference_px, canonical_face) -> Motion:
    landmarks = talking_landmarks(reference_px, canonical_face, FPS)
    audio = speech_audio(speech_opening(6.0, FPS), FPS)
    return Motion(landmarks.astype(np.float32), np.zeros((len(landmarks), 6), np.float32), FPS,
                  extras={"audio": audio})


def with_landmarks(motion: Motion, landmarks: np.ndarray, fps: float | None = None) -> Motion:
    return Motion(np.asarray(landmarks, np.float32), np.zeros((len(landmarks), 6), np.float32),
                  motion.fps if fps is None else fps)


def assert_perfect(scores: dict, names=tuple(PERFECT), head_tolerance: float = 1e-6):
    for name in names:
        tolerance = head_tolerance if name == "head_motion" else 1e-5
        assert scores[name] == pytest.approx(PERFECT[name], abs=tolerance), (name, scores)


# ---------------------------------------------------------------------------------------------
# Truth against itself, shifted, and moved
# ---------------------------------------------------------------------------------------------

def test_truth_against_itself_is_perfect(truth):
    true_open = metrics.mouth_open(metrics.normalise_sequence(truth.landmarks).landmarks)
    speech = metrics.speech_frames(truth.extras["audio"], truth.frame_count, FPS)
    assert len(metrics.closure_frames(true_open, speech)) >= 5   # the data has closures
    assert_perfect(metrics.evaluate(truth, truth))


@pytest.mark.parametrize("shift", [3, -2])
def test_shifted_truth_gives_best_lag_k_and_lower_correlation(truth, shift):
    # pred[t] = truth[t - shift]: the truth delayed by `shift` frames (edges hold).
    index = np.clip(np.arange(truth.frame_count) - shift, 0, truth.frame_count - 1)
    scores = metrics.evaluate(with_landmarks(truth, truth.landmarks[index]), truth)
    assert scores["best_lag"] == shift
    assert scores["aperture_corr"] < 0.9
    # Undone by the lag, the same motion follows again: the gap shows mistiming.
    assert scores["best_lag_corr"] > 0.97 > scores["aperture_corr"] + 0.07
    assert scores["lve"] > 0.02


def test_closures_more_than_two_frames_off_are_missed(truth):
    index = np.clip(np.arange(truth.frame_count) - 4, 0, truth.frame_count - 1)
    scores = metrics.evaluate(with_landmarks(truth, truth.landmarks[index]), truth)
    assert scores["closure_recall"] < 0.5 and scores["closure_precision"] < 0.5
    index = np.clip(np.arange(truth.frame_count) - 2, 0, truth.frame_count - 1)
    scores = metrics.evaluate(with_landmarks(truth, truth.landmarks[index]), truth)
    assert scores["closure_recall"] == 1.0


def test_rigidly_moved_and_zoomed_copy_scores_perfect(truth):
    # Another camera: closer (scale 1.7), turned 15° and shifted, and zooming over time.
    t = np.arange(truth.frame_count) / FPS
    camera = pose.Similarity(np.float64(1.7), pose.euler_xyz_to_rotation(np.radians([5, -15, 8])),
                             np.array([40.0, -25.0, 3.0]))
    moved = camera.apply(truth.landmarks.astype(np.float64))
    zoom = pose.Similarity(1.0 + 0.3 * np.sin(t), np.broadcast_to(np.eye(3), (len(t), 3, 3)),
                           np.stack([20 * t, -5 * t, 0 * t], -1))
    scores = metrics.evaluate(with_landmarks(truth, zoom.apply(moved)), truth)
    # The turned camera sees the same head motion about other axes: pooled std keeps it.
    assert_perfect(scores, head_tolerance=0.03)


def test_normalisation_removes_pose_and_scale(truth, reference_px, canonical_face):
    still = talking_landmarks(reference_px, canonical_face, FPS, head=False)
    normalised_moving = metrics.normalise_sequence(truth.landmarks)
    normalised_still = metrics.normalise_sequence(still)
    assert np.abs(normalised_moving.landmarks - normalised_still.landmarks).max() < 1e-4
    assert np.abs(normalised_still.head_angles).max() < 1e-6
    assert np.degrees(np.abs(normalised_moving.head_angles).max()) > 3


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------

def test_static_baseline_is_frozen(truth):
    static = static_baseline(truth)
    assert static.frame_count == truth.frame_count and not static.pose.any()
    scores = metrics.evaluate(static, truth)
    assert scores["motion_energy"] < 1e-3
    assert scores["closure_recall"] == 0.0
    assert scores["aperture_corr"] == 0.0
    assert scores["head_motion"] == 0.0
    assert math.isnan(scores["best_lag"]) and math.isnan(scores["closure_precision"])


def test_amplitude_baseline_opens_with_loudness_in_a_plausible_range(truth, canonical_face):
    audio = truth.extras["audio"]
    amplitude = amplitude_baseline(truth, audio, canonical_face)
    opening = metrics.mouth_open(metrics.normalise_sequence(amplitude.landmarks).landmarks)
    envelope = loudness_envelope(audio, truth.frame_count, FPS)
    assert np.corrcoef(opening, envelope)[0, 1] > 0.8
    assert 0.2 < opening.max() < 0.35          # wide speech openings, not a yawn
    assert opening.min() < metrics.CLOSURE_THRESHOLD   # lips meet in the pause
    scores = metrics.evaluate(amplitude, truth)
    assert scores["head_motion"] == 0.0
    assert 0.0 < scores["aperture_corr"] < 1.0


def test_amplitude_baseline_closes_a_reference_caught_mid_word(truth, canonical_face):
    opened = open_jaw(truth.landmarks[0], np.array([0.15]), canonical_face)
    truth_open_start = with_landmarks(truth, np.concatenate([opened, truth.landmarks[1:]]))
    silence = np.zeros(round(truth.frame_count / FPS * RATE), np.float32)
    amplitude = amplitude_baseline(truth_open_start, silence, canonical_face)
    opening = metrics.mouth_open(metrics.normalise_sequence(amplitude.landmarks).landmarks)
    assert opening.max() < 1e-3


# ---------------------------------------------------------------------------------------------
# Resampling, speech, single metrics
# ---------------------------------------------------------------------------------------------

def test_resample_is_linear_in_time_and_holds_the_last_frame():
    ramp = np.arange(12, dtype=np.float64)[:, None] * np.array([1.0, -2.0])   # (12, 2) at 30 fps
    out = metrics.resample_to(ramp, 30.0, 12, 25.0)
    expected = np.minimum(np.arange(12) * 30 / 25, 11)[:, None] * np.array([1.0, -2.0])
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert out.shape == (12, 2)
    np.testing.assert_array_equal(metrics.resample_to(ramp, 25.0, 12, 25.0), ramp)


def test_prediction_at_30_fps_is_resampled_to_a_25_fps_truth(truth, reference_px, canonical_face):
    pred_30 = talking_landmarks(reference_px, canonical_face, 30.0)
    resampled = metrics.resample_to(pred_30, 30.0, truth.frame_count, FPS)
    iod = np.linalg.norm(reference_px[263] - reference_px[33])
    assert np.abs(resampled - truth.landmarks).max() / iod < 0.02   # interpolation error only
    scores = metrics.evaluate(with_landmarks(truth, pred_30, fps=30.0), truth)
    assert scores["aperture_corr"] > 0.99 and scores["best_lag"] == 0
    # Linear interpolation shaves the sharpest syllable peaks a little.
    assert scores["lve"] < 0.01 and scores["motion_energy"] == pytest.approx(1, abs=0.1)
    # A prediction that stops early holds its last frame.
    short = with_landmarks(truth, pred_30[:90], fps=30.0)
    held = metrics.resample_to(short.landmarks, 30.0, truth.frame_count, FPS)
    np.testing.assert_array_equal(held[-1], short.landmarks[-1])


def test_speech_frames_follow_loudness():
    t = np.arange(4 * RATE) / RATE
    audio = np.where((t > 1.0) & (t < 2.0), 0.3 * np.sin(2 * np.pi * 220 * t), 1e-5)
    speech = metrics.speech_frames(audio, 100, 25.0)
    assert speech[30:45].all()
    assert not speech[:20].any() and not speech[60:].any()
    assert speech[23] and speech[51]            # dilated by 80 ms
    assert not metrics.speech_frames(np.zeros(RATE), 25, 25.0).any()


def test_frame_loudness_matches_the_audio_module():
    audio_module = pytest.importorskip("dimitra.backend.media.audio")
    rng = np.random.default_rng(0)
    samples = rng.standard_normal(RATE * 2).astype(np.float32) * np.linspace(0, 0.5, RATE * 2)
    expected = audio_module.frame_rms_db(samples, 30.0)
    np.testing.assert_allclose(metrics.frame_loudness_db(samples, len(expected), 30.0),
                               expected, atol=1e-3)


def test_best_lag_sign_convention():
    t = np.arange(200)
    signal = np.sin(t / 3.0) + 0.5 * np.sin(t / 7.0 + 1)
    late = np.concatenate([np.full(4, signal[0]), signal[:-4]])   # pred[t] = truth[t - 4]
    early = np.concatenate([signal[3:], np.full(3, signal[-1])])  # pred[t] = truth[t + 3]
    assert metrics.best_lag(late, signal) == 4
    assert metrics.best_lag(early, signal) == -3
    assert metrics.best_lag(signal, signal) == 0


def test_closure_detection():
    opening = np.array([0.2, 0.1, 0.0, 0.1, 0.2, 0.02, 0.03, 0.01, 0.2, 0.04, 0.2, 0.001, 0.2])
    # The dip at 5-7 jitters across the threshold but never reopens: one closure, at 7.
    # The dip to 0.04 is a narrow slit, not a closure.
    np.testing.assert_array_equal(metrics.closure_frames(opening), [2, 7, 11])
    speech = np.ones(len(opening), bool)
    speech[10:] = False
    np.testing.assert_array_equal(metrics.closure_frames(opening, speech), [2, 7])
    assert len(metrics.closure_frames(np.full(20, 0.001))) == 0   # a frozen mouth never closes

    truth, pred = np.full(40, 0.2), np.full(40, 0.2)
    truth[[5, 20, 33]] = 0.0
    pred[[6, 23, 33, 37]] = 0.0       # 1 and 0 frames off match; 3 off does not
    assert metrics.closure_recall_precision(pred, truth) == (2 / 3, 2 / 4)
    recall, precision = metrics.closure_recall_precision(np.full(40, 0.2), truth)
    assert recall == 0.0 and math.isnan(precision)
    recall, precision = metrics.closure_recall_precision(truth, np.full(40, 0.2))
    assert math.isnan(recall) and precision == 0.0


def test_flat_sequences_give_documented_values():
    moving = np.sin(np.arange(50) / 4.0)
    flat = np.full(50, 0.1)
    assert metrics.aperture_corr(flat, moving) == 0.0
    assert math.isnan(metrics.aperture_corr(moving, flat))
    assert math.isnan(metrics.best_lag(flat, moving))
    assert metrics.motion_energy(flat, moving) == 0.0
    assert math.isnan(metrics.motion_energy(moving, flat))
    assert math.isnan(metrics.head_motion(np.ones((50, 3)), np.zeros((50, 3))))
    assert metrics.motion_energy(2 * moving, moving) == pytest.approx(2.0)


def test_constant_and_broken_input_never_raise(truth):
    static = static_baseline(truth)
    zeros = with_landmarks(truth, np.zeros_like(truth.landmarks))
    holes = truth.landmarks.copy()
    holes[[0, 10, 11, 40]] = np.nan                     # tracking lost, first frame included
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # not even a RuntimeWarning
        for pred, true in [(static, static), (zeros, zeros), (zeros, truth), (truth, zeros),
                           (with_landmarks(truth, holes), truth),
                           (truth, with_landmarks(truth, holes))]:
            scores = metrics.evaluate(pred, true)
            assert set(scores) == set(metrics.METRIC_NAMES)
            assert all(isinstance(v, float) for v in scores.values())
        scores = metrics.evaluate(with_landmarks(truth, holes), truth)
    assert scores["aperture_corr"] > 0.99 and scores["best_lag"] == 0


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def small_dataset(tmp_path, truth):
    from dimitra.backend.dataset.index import ClipRecord, SegmentRecord, save_index

    clips = []
    for clip_id, split, frames, source in [("alpha", "dev", 150, "lab/one@c:a.mp4"),
                                           ("beta", "dev", 100, "studio/two@c:b.mp4"),
                                           ("gamma", "train", 120, "lab/one@c:c.mp4")]:
        segment_id = f"{clip_id}_000"
        samples = round(frames / FPS * RATE)
        motion = Motion(truth.landmarks[:frames], truth.pose[:frames], FPS,
                        extras={"audio": truth.extras["audio"][:samples]})
        save_motion(tmp_path / "clips" / f"{segment_id}.npz", motion)
        clips.append(ClipRecord(clip_id, f"{clip_id}.mp4", f"{clip_id}.mp4", "hash", split=split,
                                source=source,
                                segments=[SegmentRecord(segment_id, f"clips/{segment_id}.npz",
                                                        frames, 0.0)]))
    save_index(tmp_path, clips)
    return tmp_path


def test_evaluate_split_reports_baselines_model_and_missing(small_dataset, tmp_path):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    # The model "predicts" alpha perfectly; beta has no prediction.
    alpha = (small_dataset / "clips" / "alpha_000.npz").read_bytes()
    (predictions / "alpha_000.npz").write_bytes(alpha)
    result = evaluate_split(small_dataset, "dev", predictions)
    assert [s["segment_id"] for s in result["segments"]] == ["alpha_000", "beta_000"]
    assert result["methods"] == ["static", "amplitude", "model"]
    assert result["missing_predictions"] == ["beta_000"]
    assert result["scored"] == {"static": 2, "amplitude": 2, "model": 1}
    assert "model" not in result["segments"][1]["scores"]
    assert_perfect(result["mean"]["model"])
    assert result["mean"]["static"]["motion_energy"] < 1e-3

    # Per source: the perfect prediction belongs to lab/one's clip alone.
    assert set(result["sources"]) == {"lab/one", "studio/two"}
    assert_perfect(result["sources"]["lab/one"]["model"])
    assert math.isnan(result["sources"]["studio/two"]["model"]["aperture_corr"])
    assert result["mean"]["static"]["lve_vs_static"] == 1.0
    assert result["mean"]["model"]["lve_vs_static"] == 0.0
    beta = result["sources"]["studio/two"]
    assert beta["amplitude"]["lve_vs_static"] == pytest.approx(
        beta["amplitude"]["lve"] / beta["static"]["lve"])

    table = format_table(result)
    for text in ("alpha_000", "beta_000", "MEAN", "amplitude", "no prediction", "corr",
                 "corr@lag", "LVE/static", "mean per source", "studio/two amplitude"):
        assert text in table
    assert len({len(line) for line in table.splitlines() if line.startswith("alpha_000")}) == 1

    path = write_json(tmp_path / "out" / "eval.json", result)
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text)["mean"]["static"]["best_lag"] is None
    assert list(path.parent.iterdir()) == [path]      # no temp file left behind

    baselines_only = evaluate_split(small_dataset, "dev")
    assert baselines_only["methods"] == ["static", "amplitude"]
    with pytest.raises(ValueError, match="no prepared segments"):
        evaluate_split(small_dataset, "test")
    with pytest.raises(FileNotFoundError, match="predictions folder"):
        evaluate_split(small_dataset, "dev", tmp_path / "nowhere")


def test_evaluate_files_scores_one_pair(small_dataset):
    truth_path = small_dataset / "clips" / "beta_000.npz"
    result = evaluate_files(truth_path, truth_path)
    assert result["methods"] == ["static", "amplitude", "model"]
    assert_perfect(result["segments"][0]["scores"]["model"])
    assert "beta_000" in format_table(result)


# ---------------------------------------------------------------------------------------------
# The real prepared dataset
# ---------------------------------------------------------------------------------------------

def test_real_dev_split(real_dev_dataset, tmp_path):
    from dimitra.backend.dataset.index import iter_segments

    predictions = tmp_path / "predictions"
    count = 0
    for _, segment, motion in iter_segments(real_dev_dataset, "dev"):
        save_motion(predictions / f"{segment.segment_id}.npz", motion)   # truth as prediction
        count += 1
    assert count == 2
    result = evaluate_split(real_dev_dataset, "dev", predictions)
    assert_perfect(result["mean"]["model"])
    assert result["mean"]["static"]["motion_energy"] < 1e-3
    assert result["mean"]["static"]["closure_recall"] == 0.0
    assert -1.0 <= result["mean"]["amplitude"]["aperture_corr"] < 1.0
