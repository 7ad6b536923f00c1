"""The lips head: a ridge map from speech features to the lower face, stored in the model file,
used by the generator in place of the network's lower-face draw."""

import numpy as np
import pytest

from dimitra.backend.generation.generator import GenerationOptions, MotionGenerator
from dimitra.backend.model.checkpoint import DEFAULT_MODEL, load_bundle, save_with_lips_head
from dimitra.backend.model.lips_head import fit_lips_head
from dimitra.retarget.face.measures import inner_lip_gap
from dimitra.retarget.face.topology import LOWER_INNER_LIP, UPPER_INNER_LIP

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model yet")


def speech_like(frames: int, dims: int, rng) -> np.ndarray:
    """(T, F) features that vary slowly, as speech features do at 25 fps."""
    noise = rng.normal(size=(frames + 8, dims))
    return np.stack([np.convolve(noise[:, i], np.ones(5) / 5, "valid")[:frames]
                     for i in range(dims)], 1).astype(np.float32)


def synthetic_segments(lower_dims: int, seed: int = 0, count: int = 12, with_closures=False):
    """Segments whose lower face is a fixed linear function of the features two frames ahead
    (a speaker's lips lead the sound), each segment with its own loudness and offset; with
    closures, also (T,) bool frames where the lips are together: two-frame runs every
    12-30 frames, which feature 0 shows as a bump two frames later (the lips lead the sound)."""
    mix = np.random.default_rng(100).normal(size=(16, lower_dims))     # the same "face"
    rng, closure_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    segments, closures = [], []
    for _ in range(count):
        features = speech_like(200, 16, rng)
        closed = np.zeros(200, bool)
        for start in np.cumsum(closure_rng.integers(12, 30, size=20)):
            closed[start:start + 2] = start + 2 <= 200
        if with_closures:
            features[:, 0] += 2 * np.convolve(np.roll(closed, 2), [0.5, 1, 0.5], "same")
        lower = np.roll(features, -2, axis=0) @ mix
        channel = rng.uniform(0.5, 2.0) * features + rng.normal(size=16)   # room, microphone
        segments.append((channel.astype(np.float32), lower.astype(np.float32)))
        closures.append(closed)
    return (segments, mix, closures) if with_closures else (segments, mix)


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_the_head_learns_the_lips_from_features_under_any_channel():
    segments, mix = synthetic_segments(lower_dims=4)
    head = fit_lips_head(segments, "synthetic", ridge=1e-3, gain=1.0)
    held_out, _ = synthetic_segments(lower_dims=4, seed=1, count=1)
    features, lower = held_out[0]
    predicted = head.predict(features)
    assert predicted.shape == lower.shape
    # A new "speaker" on another channel: the line's own normalisation undoes loudness/offset
    # (0.90 and 0.91 here; normalised by the training statistics alone, 0.79 and 0.81).
    assert correlation(predicted[10:-10], lower[10:-10]) > 0.85
    assert correlation(head.predict(3 * features + 1)[10:-10], lower[10:-10]) > 0.85


def test_the_head_marks_one_closure_where_the_lips_met_in_training():
    segments, _, closed = synthetic_segments(lower_dims=4, with_closures=True)
    head = fit_lips_head(segments, "synthetic", ridge=1e-3, gain=1.0, closed=closed,
                         closure_threshold=0.4)
    (held_out,), _, (truth,) = synthetic_segments(lower_dims=4, seed=1, count=1,
                                                  with_closures=True)
    marks = head.closure_marks(held_out[0])
    assert set(np.unique(marks)) <= {0.0, 1.0}
    marked = np.flatnonzero(marks)
    true_runs = runs(truth)
    assert len(true_runs) >= 5
    found = [any(start - 1 <= m < end + 1 for m in marked) for start, end in true_runs]
    right = [any(start - 1 <= m < end + 1 for start, end in true_runs) for m in marked]
    assert np.mean(found) >= 0.8 and np.mean(right) >= 0.8
    # One mark per closure, not one per closed frame.
    assert len(marked) <= len(true_runs) + 2
    # A head fitted without closures marks none.
    assert not fit_lips_head(segments, "synthetic").closure_marks(held_out[0]).any()


def test_a_wrong_feature_width_is_refused_by_name():
    segments, _ = synthetic_segments(lower_dims=4, count=3)
    head = fit_lips_head(segments, "synthetic")
    with pytest.raises(ValueError, match="synthetic"):
        head.predict(np.zeros((10, 5), np.float32))


@pytest.fixture(scope="module")
def model_with_head(tmp_path_factory):
    """The shipped model with a head fitted on synthetic features (64 wide), closures too."""
    space = load_bundle(DEFAULT_MODEL, network=False).motion_space
    segments, _, closed = synthetic_segments(lower_dims=space.dims["lower"], with_closures=True)
    head = fit_lips_head([(np.tile(f, (1, 4)), lower) for f, lower in segments], "synthetic",
                         closed=closed, closure_threshold=0.4)
    path = tmp_path_factory.mktemp("model") / "with_head.safetensors"
    save_with_lips_head(DEFAULT_MODEL, head, path, {"note": "test"})
    (held_out,), _ = synthetic_segments(lower_dims=space.dims["lower"], seed=7, count=1,
                                        with_closures=True)[:2]
    return path, head, np.tile(held_out[0], (1, 4))      # (200, 64) features of a new line


def test_the_head_travels_in_the_model_file(model_with_head):
    path, head, features = model_with_head
    bundle = load_bundle(path, network=False)
    assert bundle.lips_head is not None and bundle.meta["note"] == "test"
    assert np.allclose(bundle.lips_head.predict(features), head.predict(features), atol=1e-5)
    assert bundle.lips_head.closure_marks(features).any()
    assert np.array_equal(bundle.lips_head.closure_marks(features), head.closure_marks(features))


def test_the_generator_takes_the_lips_from_the_head_and_still_closes_them(model_with_head):
    path, _, line = model_with_head
    bundle = load_bundle(path, network=False)
    generator = MotionGenerator(bundle, runtime="onnx")
    frames = 120
    features = np.zeros((frames, bundle.config.audio_dim), np.float32)
    lip_features = line[:frames] * 3
    neutral = bundle.motion_space.canonical_face
    settings = {"lip_sharpen": 0.0, "lip_contact": 0.0, "audio_delay": 0, "closure_guidance": 0.0}
    options = GenerationOptions(seed=1, lips_head=1.0, **settings)
    without, _ = generator.generate(features, neutral, options)
    with_head, _ = generator.generate(features, neutral, options, lip_features=lip_features)
    # All from the head: the same head output gives the same mouth, whatever the seed.
    again, _ = generator.generate(features, neutral, GenerationOptions(
        seed=9, lips_head=1.0, **settings), lip_features=lip_features)
    assert np.abs(inner_lip_gap(again) - inner_lip_gap(with_head)).max() < 1e-4
    assert np.abs(inner_lip_gap(with_head) - inner_lip_gap(without)).max() > 0.01
    # lips_head 0 is the network's draw alone; in between, a mix of the two.
    off, _ = generator.generate(features, neutral, GenerationOptions(
        seed=1, lips_head=0.0, **settings), lip_features=lip_features)
    assert np.abs(inner_lip_gap(off) - inner_lip_gap(without)).max() < 1e-5
    half, _ = generator.generate(features, neutral, GenerationOptions(
        seed=1, lips_head=0.5, **settings), lip_features=lip_features)
    def signed_gap(canonical):      # upper minus lower inner lip, height: linear in the motion
        return canonical[:, UPPER_INNER_LIP, 1] - canonical[:, LOWER_INNER_LIP, 1]

    assert np.allclose(signed_gap(half), (signed_gap(with_head) + signed_gap(without)) / 2,
                       atol=1e-4)
    # Bilabial frames close the lips the head opened.
    settings["closure_guidance"] = 1.0
    bilabials = np.zeros(frames, np.float32)
    bilabials[60:64] = 1
    closed, _ = generator.generate(features, neutral, GenerationOptions(
        seed=1, lips_head=1.0, **settings), bilabials=bilabials, lip_features=lip_features)
    assert inner_lip_gap(closed)[63] < 0.5 * max(inner_lip_gap(with_head)[63], 0.02)
    # So do the head's own closure marks, with no bilabial marks at all.
    marked = np.flatnonzero(bundle.lips_head.closure_marks(lip_features))
    assert len(marked) >= 2      # (the head recalls closures: the test above; here, it acts)
    by_head, _ = generator.generate(features, neutral, GenerationOptions(
        seed=1, lips_head=1.0, **settings), lip_features=lip_features)
    assert (inner_lip_gap(by_head)[marked] < 0.5 * np.maximum(inner_lip_gap(with_head)[marked],
                                                              0.02)).all()


@pytest.mark.parametrize("frames", [1, 3, 200])
def test_generation_reads_the_map_the_fit_solved_for(frames):
    """The generator's fast read (no stacked inputs) equals the fit's definition, the
    standardised stacked context times the maps, on lines shorter than the context too."""
    segments, _, closed = synthetic_segments(lower_dims=4, with_closures=True)
    head = fit_lips_head(segments, "synthetic", ridge=1e-2, gain=1.3, closed=closed,
                         closure_threshold=0.4, context=(-3, -1, 0, 2, 5))
    features = segments[0][0][:frames]
    stacked = (head.stacked(features) - head.input_mean) / head.input_std
    raw = stacked @ np.concatenate([head.weights, head.closure_weights[:, None]], axis=1)
    expected = (raw[:, :4] * head.gain + head.bias) * head.output_scale
    lower, _ = head.read(features)
    np.testing.assert_allclose(lower, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_fit_lips_defaults_to_the_shipped_heads_recipe_and_names_a_bad_context(capsys):
    from dimitra.backend.training.fit_lips import parse_args

    required = ["data", "--model", "in.safetensors", "--out", "out.safetensors"]
    defaults = vars(parse_args(required))
    shipped = load_bundle(DEFAULT_MODEL, network=False).meta["lips_head"]
    for name in ("split", "features", "ridge", "gain", "lead", "closure_weight", "closures",
                 "variants", "smoothing", "context", "balance_sources"):
        assert list(np.atleast_1d(defaults[name])) == list(np.atleast_1d(shipped[name])), name
    assert parse_args(required + ["--context=2,-6,0,-6"]).context == (-6, 0, 2)
    for bad, says in (("-2,x,2", "comma-separated whole frames"), ("-2,2", "must include 0")):
        with pytest.raises(SystemExit):
            parse_args(required + [f"--context={bad}"])
        assert says in capsys.readouterr().err
