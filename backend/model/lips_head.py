"""The lips head: the lower face (lips, jaw, cheeks) read from the speech features by one
regularised linear map, in place of the diffusion model's lower-face draw.

Why: with minutes of video, the cMDT learns each training clip's voice and timing; on sources
it has never seen its lips follow the speech less well than a ridge regression from the same
frozen Whisper features does (docs/MODEL_CARD.md, "The lips head"). The head is deterministic
(the same line gives the same lips), fitted in closed form in seconds, and numpy-only at
inference. The cMDT still makes the upper face, blinks and head motion.

The map, per frame t:
  x_t    the features of frames t + c for c in `context` (edges held), each feature
         standardised over the line itself (speaker and channel normalised), shrunk toward the
         training statistics for short lines;
  lower  (K_l,) whitened lower-face coefficients of the motion space = gain * (x_t @ W) + b.
Targets are each training segment's coefficients divided by that segment's own motion spread,
so a speaker who opens wide does not weigh more than one who mumbles; `output_scale` puts the
typical spread back. `gain` undoes the shrinkage that regularisation (and uncertainty) gives
a least-squares fit, so the mouth moves about as much as a real one.

Closures: a linear map blurs them (a quick closure between two vowels becomes a shallow dip),
so the same inputs also feed a second map, fitted in the same solve, to "the lips are together"
(1 on frames where the real lips touch during speech, 0 elsewhere). Each peak of that score
over `closure_threshold` marks one closure; the generator closes the lips there as it does on
p, b, m. It learns every closure the video shows, not only bilabials: the pauses between
words, a speaker's habits.
"""

from dataclasses import dataclass

import numpy as np

# Features of these frames around t (25 fps: -160 ms .. +160 ms) feed frame t. Every frame of
# a narrower span read the mouth better on held-out sources than a wider, sparser one
# (docs/MODEL_CARD.md, "The head's context").
DEFAULT_CONTEXT = (-4, -3, -2, -1, 0, 1, 2, 3, 4)
# A line's own feature statistics count as this many frames' worth against the training ones.
SHRINK_FRAMES = 100
# Two lip closures are at least this many frames apart on each side (25 fps: 80 ms).
CLOSURE_SPACING = 2
# Header fields a head fitted before closure maps and smoothing does not have (their defaults).
OPTIONAL_HEADER = ("closure_bias", "closure_threshold", "smoothing")


@dataclass
class LipsHead:
    features: str                  # feature extractor name, e.g. "whisper-tiny-en+whisper-base"
    context: np.ndarray            # (C,) int frame offsets
    feature_mean: np.ndarray       # (F,) training mean of the raw features
    feature_std: np.ndarray        # (F,) training spread of the raw features
    input_mean: np.ndarray         # (C * F,) of the stacked, line-normalised inputs
    input_std: np.ndarray          # (C * F,)
    weights: np.ndarray            # (C * F, K_l)
    bias: np.ndarray               # (K_l,)
    output_scale: float            # typical motion spread of a training segment (whitened units)
    gain: float = 1.0
    closure_weights: np.ndarray | None = None   # (C * F,) the "lips together" map, if fitted
    closure_bias: float = 0.0
    closure_threshold: float = 0.2   # the score a peak must pass to mark a closure
    smoothing: float = 0.0           # weight of each neighbour frame in a 3-tap smoothing

    def read(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features (T, F) at 25 fps of `self.features` -> (lower (T, K_l) whitened lower-face
        coefficients of the motion space the head was fitted in, marks (T,) float32: 1 on one
        frame per predicted lip closure, a peak of the "lips together" score over
        closure_threshold, else 0; all 0 without a closure map). Both maps read the same
        stacked inputs, built once."""
        maps = (self.weights if self.closure_weights is None
                else np.concatenate([self.weights, self.closure_weights[:, None]], axis=1))
        raw = self._project(features, maps)                        # (T, K_l [+ 1])
        count = self.weights.shape[1]
        lower = ((raw[:, :count] * self.gain + self.bias) * self.output_scale).astype(np.float32)
        if self.smoothing and len(lower) > 1:     # the map's frame-to-frame jitter, not motion
            padded = np.concatenate([lower[:1], lower, lower[-1:]])
            lower = (self.smoothing * (padded[:-2] + padded[2:])
                     + (1 - 2 * self.smoothing) * lower).astype(np.float32)
        marks = np.zeros(len(lower), np.float32)
        if self.closure_weights is not None:
            score = raw[:, count] + self.closure_bias
            # Peaks: the highest score within CLOSURE_SPACING frames either side (ties to the
            # first), so a noisy run over the threshold still marks one closure.
            padded = np.pad(score, CLOSURE_SPACING, constant_values=-np.inf)
            windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * CLOSURE_SPACING + 1)
            marks[(np.argmax(windows, axis=1) == CLOSURE_SPACING)
                  & (score > self.closure_threshold)] = 1.0
        return lower, marks

    def predict(self, features: np.ndarray) -> np.ndarray:
        """features (T, F) -> (T, K_l) whitened lower-face coefficients (`read`'s first part)."""
        return self.read(features)[0]

    def closure_marks(self, features: np.ndarray) -> np.ndarray:
        """features (T, F) -> (T,) closure marks (`read`'s second part)."""
        return self.read(features)[1]

    def _project(self, features: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """(T, F) raw features -> (T, M) the stacked, standardised inputs times maps (C * F, M)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.feature_mean):
            raise ValueError(f"the lips head takes (T, {len(self.feature_mean)}) "
                             f"{self.features} features, got {features.shape}")
        normalised = normalise_line(features, self.feature_mean, self.feature_std)
        # (stack - input_mean) / input_std @ maps, without building the (T, C * F) stack:
        # the standardisation folds into the maps, and each context offset's share is the
        # line times its block of the maps, read shifted (edges held).
        scaled = (maps / self.input_std[:, None]).astype(np.float32)      # (C * F, M)
        out = np.broadcast_to(-(self.input_mean / self.input_std) @ maps,
                              (len(features), maps.shape[1])).astype(np.float32)
        rows = np.arange(len(features))
        width = normalised.shape[1]
        for k, offset in enumerate(self.context):
            share = normalised @ scaled[k * width:(k + 1) * width]        # (T, M)
            out += share[np.clip(rows + offset, 0, len(features) - 1)]
        return out

    def stacked(self, features: np.ndarray) -> np.ndarray:
        """(T, F) raw features -> (T, C * F) line-normalised features of the context frames."""
        normalised = normalise_line(features, self.feature_mean, self.feature_std)
        return _stack(normalised, self.context)

    # -- storage (tensors + one JSON field of the model file) ----------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        names = ("context", "feature_mean", "feature_std", "input_mean", "input_std", "weights",
                 "bias") + (() if self.closure_weights is None else ("closure_weights",))
        return {f"lips_head.{name}": np.ascontiguousarray(getattr(self, name)) for name in names}

    def header(self) -> dict:
        return {"features": self.features, "output_scale": self.output_scale, "gain": self.gain,
                "closure_bias": self.closure_bias, "closure_threshold": self.closure_threshold,
                "smoothing": self.smoothing}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], header: dict) -> "LipsHead":
        fields = {key.removeprefix("lips_head."): value for key, value in arrays.items()}
        optional = {name: float(header[name]) for name in OPTIONAL_HEADER if name in header}
        return cls(features=header["features"], output_scale=float(header["output_scale"]),
                   gain=float(header["gain"]), **optional, **fields)


def _stack(normalised: np.ndarray, context: np.ndarray) -> np.ndarray:
    """(T, F) -> (T, C * F): for each frame, the rows of its context frames (the line's edge
    frames held)."""
    rows = np.arange(len(normalised))
    index = np.clip(rows[:, None] + np.asarray(context)[None, :], 0, len(normalised) - 1)
    return normalised[index].reshape(len(rows), -1).astype(np.float32, copy=False)


def normalise_line(features: np.ndarray, mean: np.ndarray, std: np.ndarray,
                   shrink_frames: int = SHRINK_FRAMES) -> np.ndarray:
    """(T, F) -> (T, F) standardised by the line's own mean and spread, each pulled toward the
    training ones (mean, std) as if those were `shrink_frames` frames of the line: a 2 s line
    is mostly normalised like training, a minute of speech by itself."""
    frames = len(features)
    weight = frames / (frames + shrink_frames)
    line_mean = features.mean(axis=0) if frames else mean
    line_var = features.var(axis=0) if frames else std ** 2
    centre = weight * line_mean + (1 - weight) * mean
    spread = np.sqrt(weight * line_var + (1 - weight) * std ** 2) + 1e-3
    return ((features - centre) / spread).astype(np.float32)


def fit_lips_head(segments: list[tuple[np.ndarray, np.ndarray]], features: str,
                  ridge: float = 10.0, gain: float = 2.0,
                  context: tuple[int, ...] = DEFAULT_CONTEXT,
                  frame_weights: list[np.ndarray] | None = None,
                  closed: list[np.ndarray] | None = None,
                  closure_threshold: float = 0.2, smoothing: float = 0.0) -> LipsHead:
    """Ridge regression over training segments [(features (T, F), lower (T, K_l) whitened)].

    ridge is relative to the number of frames (lambda = ridge * frames on standardised inputs),
    so its meaning does not change with the amount of data. frame_weights: [(T,)] per segment,
    how much each frame counts in the fit (1 = as any other). closed: [(T,) bool] per segment,
    the frames with the lips together in speech; given, the head also gets its closure map."""
    if not segments:
        raise ValueError("no training segments to fit the lips head on")
    raw = np.concatenate([f for f, _ in segments]).astype(np.float64)
    head = LipsHead(features=features, context=np.asarray(context, np.int64),
                    feature_mean=raw.mean(axis=0).astype(np.float32),
                    feature_std=(raw.std(axis=0) + 1e-6).astype(np.float32),
                    input_mean=np.zeros(1, np.float32), input_std=np.ones(1, np.float32),
                    weights=np.zeros((1, 1), np.float32), bias=np.zeros(1, np.float32),
                    output_scale=1.0, gain=gain, smoothing=smoothing)
    spreads = [_spread(lower) for _, lower in segments]
    inputs = np.concatenate([head.stacked(f) for f, _ in segments]).astype(np.float64)
    targets = np.concatenate([lower / spread for (_, lower), spread in zip(segments, spreads)])
    if closed is not None:                      # one more column: the "lips together" map
        targets = np.concatenate([targets, np.concatenate(closed)[:, None]], axis=1)
    mean, std = inputs.mean(axis=0), inputs.std(axis=0) + 1e-6
    inputs = (inputs - mean) / std
    target_mean = targets.mean(axis=0)
    rows = np.ones(len(inputs)) if frame_weights is None else np.concatenate(frame_weights)
    rows = rows * len(rows) / rows.sum()                   # weights average 1: ridge keeps its scale
    gram = (inputs * rows[:, None]).T @ inputs + ridge * len(inputs) * np.eye(inputs.shape[1])
    weights = np.linalg.solve(gram, (inputs * rows[:, None]).T @ (targets - target_mean))
    head.input_mean, head.input_std = mean.astype(np.float32), std.astype(np.float32)
    if closed is not None:
        head.closure_weights = weights[:, -1].astype(np.float32)
        head.closure_bias = float(target_mean[-1])
        head.closure_threshold = closure_threshold
        weights, target_mean = weights[:, :-1], target_mean[:-1]
    head.weights, head.bias = weights.astype(np.float32), target_mean.astype(np.float32)
    head.output_scale = float(np.mean(spreads))
    return head


def _spread(lower: np.ndarray) -> float:
    """The size of a segment's lower-face motion: root of the summed per-coefficient variance."""
    return float(np.sqrt(lower.var(axis=0).sum())) + 1e-6
