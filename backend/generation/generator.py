"""Speech features + a neutral face -> facial motion of any length, with the cMDT.

Long audio is generated in overlapping windows: every window after the first is given the
last `context` frames of the one before (the model was trained to continue them), so there
is no seam, and only one window is in memory at a time.

numpy throughout: the network runs on onnxruntime (the default on a CPU: no torch imported)
or on torch (`runtime="torch"`, and on a GPU), behind the same two calls.
"""

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from ...retarget.face import topology
from ..diffusion.sampler import ddim_sample
from ..diffusion.schedule import NoiseSchedule
from ..model.checkpoint import ModelBundle
from ..protocol.options import BILABIAL_SOURCES, OPTIONS  # noqa: F401 (re-exported)
from ..protocol.options import validate as validate_options
from .lip_contact import apply_lip_contact

log = logging.getLogger(__name__)


def _validate(self) -> None:
    """Raises ValueError, naming the option, for a value out of range (backend.protocol.options)."""
    validate_options(dataclasses.asdict(self))


def options_dataclass(table=OPTIONS) -> type:
    """The dataclass of the options in `table`: a field per row, with its type and default,
    and `validate()`, the shared check (backend.protocol.options.validate)."""
    cls = dataclasses.make_dataclass(
        "GenerationOptions", [(o.name, o.type, dataclasses.field(default=o.default))
                              for o in table],
        namespace={"validate": _validate,
                   "__doc__": "The options of one generation; their meaning, defaults and "
                              "ranges: backend.protocol.options.OPTIONS."})
    cls.__module__ = __name__
    return cls


# The fields, their types and defaults are the rows of backend.protocol.options.OPTIONS (each
# option's meaning is its help text there); the protocol and the command line derive theirs
# from the same table.
GenerationOptions = options_dataclass()


RUNTIMES = ("auto", "torch", "onnx")


def choose_runtime(runtime: str, device: str) -> str:
    """"auto" -> onnxruntime on a CPU (no torch import, and about twice torch's speed on a
    few cores), torch on a GPU. On many cores torch samples faster (16 cores: 0.33 against
    onnxruntime's 1.64 s for 60 s of audio; docs/BENCHMARKS.md): ask for it there."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        return "onnx" if device == "cpu" else "torch"
    return runtime


class MotionGenerator:
    """runtime "torch" runs the network as the torch module, "onnx" on onnxruntime (the same
    motion to float precision), "auto" as `choose_runtime` says, falling back to torch when
    onnxruntime cannot run the model. `self.runtime` says which one runs."""

    def __init__(self, bundle: ModelBundle, device: str = "cpu", runtime: str = "torch"):
        self.bundle = bundle
        self.space = bundle.motion_space
        self.config = bundle.config
        self.device = device
        self.schedule = NoiseSchedule()
        self.runtime, self.network = self._load_network(choose_runtime(runtime, device),
                                                        fallback=runtime == "auto")

    def _load_network(self, runtime: str, fallback: bool):
        if runtime == "onnx":
            from ..model.onnx_denoiser import OnnxNetwork

            try:
                return "onnx", OnnxNetwork(self.bundle, self.device)
            except (ImportError, OSError, RuntimeError) as error:
                if not fallback:
                    raise
                log.warning("onnxruntime cannot run the model (%s); sampling with torch", error)
        from ..model.torch_network import TorchNetwork

        return "torch", TorchNetwork(self.bundle.torch_network(self.device), self.device)

    def generate(self, features: np.ndarray, neutral: np.ndarray,
                 options: GenerationOptions | None = None, bilabials: np.ndarray | None = None,
                 silence: np.ndarray | None = None,
                 progress: Callable[[float], None] | None = None,
                 lip_features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """features (T, F) at 25 fps, neutral (478, 3) canonical -> canonical (T, 478, 3), pose (T, 6).

        pose is relative to frame 0 (radians, inter-ocular units). bilabials (T,) in [0, 1]
        marks frames where the lips must meet (backend.features.bilabials); silence (T,) bool
        marks frames without sound, where the face comes to rest. progress(fraction) is
        called after every window (the service reports it, and cancels jobs by raising there).
        lip_features (T, F_l): the features of the model's lips head (bundle.lips_head), which
        then makes options.lips_head of the lower face, the network's draw the rest, and closes
        the lips where its closure map says, as on the bilabial marks.
        """
        options = options or GenerationOptions()
        options.validate()
        frames = len(features)
        features = _delayed(features, options.audio_delay)
        head = self.bundle.lips_head if lip_features is not None and options.lips_head else None
        if head is not None and len(lip_features) != frames:
            raise ValueError(f"lip_features has {len(lip_features)} frames, the features {frames}")
        space, config = self.space, self.config
        window, context = config.window, config.context
        std = space.motion_std.astype(np.float32)
        pose_slice = space.region_slices()["pose"]
        identity = space.identity_code(neutral)[None].astype(np.float32)
        if head is not None:             # the head's own closures join the p, b, m marks
            head_lower, head_marks = head.read(_delayed(lip_features, options.audio_delay))
            bilabials = head_marks if bilabials is None else np.maximum(bilabials, head_marks)
        closure = self._closure_guide(neutral, bilabials, options.closure_guidance, frames)
        motion = np.zeros((frames, space.motion_dim), np.float32)   # raw (un-whitened) units
        start, index = 0, 0
        while start < frames:
            known = min(context, start)                          # frames carried over
            begin = start - known
            length = min(window, frames - begin)
            given = np.zeros((1, length, space.motion_dim), np.float32)
            mask = np.zeros((1, length), np.float32)
            offset = np.zeros(pose_slice.stop - pose_slice.start, np.float32)
            if known:
                tail = motion[begin:start].copy()
                offset = tail[0, pose_slice].copy()
                tail[:, pose_slice] -= offset                     # pose relative to window start
                given[0, :known] = tail / std
                mask[0, :known] = 1
            audio = np.asarray(features[begin:begin + length], dtype=np.float32)[None]
            guide = None if closure is None else closure[begin:begin + length]
            if guide is not None and not guide.weights.any():
                guide = None                                     # no bilabial in this window
            x0 = self._sample(audio, identity, given, mask, options, options.seed * 100_003 + index,
                              guide)
            x0 = x0[0] * std
            x0[:, pose_slice] += offset
            motion[start:begin + length] = x0[known:]
            start, index = begin + length, index + 1
            if progress is not None:
                progress(start / frames)
        raw = motion
        parts = space.region_slices()
        if head is not None:
            lower = np.zeros((frames, space.motion_dim), np.float32)
            lower[:, parts["lower"]] = head_lower
            if closure is not None:      # the lips still meet on p, b, m (a firmer
                lower = closure.apply(lower[None])[0]   # projection scored no better)
            share = options.lips_head
            raw[:, parts["lower"]] = (share * lower[:, parts["lower"]] * std[parts["lower"]]
                                      + (1 - share) * raw[:, parts["lower"]])
        if options.lip_sharpen > 0:
            lower = raw[:, parts["lower"]]
            gap = np.linalg.norm(neutral[topology.UPPER_INNER_LIP] - neutral[topology.LOWER_INNER_LIP]
                                 + lower @ space.lip_gap_basis(), axis=-1)       # (T,) IOD
            raw[:, parts["lower"]] = sharpen_in_time(lower, options.lip_sharpen * near_closure(gap))
        if silence is not None and silence.any():
            rest = rest_weights(silence[:frames])
            raw[:, parts["lower"]] *= (1 - rest)[:, None]
            raw[:, parts["pose"]] = damp_motion(raw[:, parts["pose"]], 1 - 0.8 * rest)
        raw[:, parts["pose"]] = steady_pose(raw[:, parts["pose"]])
        raw[:, parts["lower"]] *= options.lips
        raw[:, parts["upper"]] *= options.upper_face
        raw[:, parts["pose"]] *= options.head_motion
        if not options.blink:
            raw[:, parts["upper"]] = self._without_blinks(raw[:, parts["upper"]])
        canonical, pose = space.decode(raw / space.motion_std, neutral)
        return apply_lip_contact(canonical, options.lip_contact, in_place=True), pose

    def _sample(self, audio, identity, given, mask, options, seed, closure=None) -> np.ndarray:
        """One window: audio (1, L, F), identity (1, I), given (1, L, D), mask (1, L) ->
        x0 (1, L, D) whitened, float32."""
        length = audio.shape[1]
        guided = options.expressiveness != 1.0
        # The audio's encoding does not change between sampling steps: compute it once.
        drops = np.array([False, True]) if guided else np.array([False])
        both = len(drops)
        audio_h = self.network.encode_audio(np.repeat(audio, both, 0), drops)
        identity, given_both, mask_both = (np.repeat(v, both, 0) for v in (identity, given, mask))
        keep_identity = np.zeros(both, dtype=bool)

        def denoise(x_t, t):
            out = self.network.denoise(np.repeat(x_t, both, 0), np.repeat(t, both), identity,
                                       given_both, mask_both, keep_identity, audio_h)
            x0 = out if not guided else out[1:] + options.expressiveness * (out[:1] - out[1:])
            return x0 if closure is None else closure.apply(x0)

        x0 = ddim_sample(denoise, (1, length, self.space.motion_dim), self.schedule,
                         options.steps, seed)
        known = mask[..., None] > 0
        return np.where(known, given, x0)   # carried-over frames stay exactly as they were

    def _closure_guide(self, neutral, bilabials, strength, frames) -> "ClosureGuide | None":
        if bilabials is None or strength <= 0 or not np.any(bilabials):
            return None
        if len(bilabials) != frames:
            raise ValueError(f"bilabials has {len(bilabials)} frames, the features {frames}")
        return ClosureGuide(self.space, neutral, press_toward_release(bilabials) * min(strength, 1.0))

    def _without_blinks(self, upper_raw: np.ndarray) -> np.ndarray:
        """Remove any closing of the eyelids below the neutral opening (raw upper coefficients)."""
        space = self.space
        position = {p: i for i, p in enumerate(space.upper_points)}
        basis = space.upper_basis.reshape(len(space.upper_basis), -1, 3)
        out = upper_raw.copy()
        for upper_lid, lower_lid in (topology.RIGHT_LID_MIDDLE, topology.LEFT_LID_MIDDLE):
            # d(lid gap)/d(coefficient): the lids' vertical motion toward each other.
            direction = basis[:, position[upper_lid], 1] - basis[:, position[lower_lid], 1]
            closing = out @ direction                            # (T,) change of the gap
            shut = np.minimum(closing, 0.0)
            out -= np.outer(shut / (direction @ direction), direction)
        return out


def _delayed(features: np.ndarray, delay: int) -> np.ndarray:
    """(T, F) -> (T, F) with frame t holding the features of frame t - delay (edges held):
    motion at frame t is driven by the audio of frame t - delay."""
    frames = len(features)
    shift = min(abs(delay), frames)
    if shift == 0:
        return features
    if delay > 0:
        return np.concatenate([np.repeat(features[:1], shift, 0), features[:frames - shift]])
    return np.concatenate([features[shift:], np.repeat(features[-1:], shift, 0)])


def rest_weights(silence: np.ndarray, min_frames: int = 8, ramp: int = 4) -> np.ndarray:
    """(T,) bool silent frames -> (T,) in [0, 1]: 1 inside silences of at least `min_frames`
    (0.32 s: not the short stops inside words), ramping over `ramp` frames at their edges."""
    rest = np.zeros(len(silence))
    start = None
    for i, quiet in enumerate(np.append(silence, False)):
        if quiet and start is None:
            start = i
        elif not quiet and start is not None:
            if i - start >= min_frames:
                rest[start:i] = 1.0
            start = None
    kernel = np.ones(2 * ramp + 1) / (2 * ramp + 1)
    # Erode then blur, so the mouth is already resting when the silence is well under way
    # and starts to move again just before the sound comes back.
    eroded = 1 - np.convolve(1 - rest, np.ones(ramp), mode="same").clip(0, 1)
    return np.convolve(eroded, kernel, mode="same").clip(0, 1)


def sharpen_in_time(values: np.ndarray, amount: float | np.ndarray) -> np.ndarray:
    """(T, D) trajectory -> values + amount * (values - mean of the frames before and after);
    amount a number or (T,) per frame.

    Few-step sampling returns something near the average of the plausible mouths, and an
    average is blurred in time: a quick closure between two vowels comes out as a shallow
    dip, two closures close together as one. Lifting each frame away from its neighbours
    undoes some of that (a gain of 1 + 2 * amount at the highest frequency, none on slow
    motion). The generator applies it near closures only (`near_closure`), where quick
    closures are what the blur loses; it works on the quickest motion because boosting slower
    bands (4-12 frame dips) lost closures instead (docs/MODEL_CARD.md, "Sharpening near
    closures").
    """
    amount = np.asarray(amount, dtype=values.dtype)
    if len(values) < 3 or not np.any(amount > 0):
        return values
    padded = np.concatenate([values[:1], values, values[-1:]])
    lift = values - 0.5 * (padded[:-2] + padded[2:])
    return values + (amount[:, None] if amount.ndim else amount) * lift


def near_closure(gap: np.ndarray, closed: float = 0.05, parted: float = 0.1) -> np.ndarray:
    """(T,) inner-lip gap (IOD) -> (T,) weight: 1 under `closed`, 0 over `parted`, linear between.

    Sharpening only there keeps the lips' meeting and parting crisp without roughening the
    rest of the mouth's motion: sharpening everywhere roughens all of it for no more
    closures (docs/MODEL_CARD.md, "Sharpening near closures").
    """
    return np.clip((parted - gap) / (parted - closed), 0.0, 1.0)


def damp_motion(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(T, D) trajectory with its frame-to-frame steps scaled by keep (T,): continuous,
    but slower where keep is small."""
    steps = np.diff(values, axis=0, prepend=values[:1]) * keep[:, None]
    return values[0] + np.cumsum(steps, axis=0)


def steady_pose(pose: np.ndarray, seconds: float = 30.0, fps: float = 25.0) -> np.ndarray:
    """(T, 6) pose -> the same motion starting at the reference pose and without slow drift.

    Each window continues the pose of the one before, so small biases add up like a random
    walk; over an hour the head would wander off. Motion slower than `seconds` (a zero-phase
    moving average) is taken out, keeping the nods and turns of speech and frame 0 at zero.
    """
    pose = pose - pose[0]
    width = int(seconds * fps) | 1
    if len(pose) <= width // 2:
        return pose
    padded = np.pad(pose, ((width // 2, width // 2), (0, 0)), mode="reflect")
    kernel = np.ones(width) / width
    slow = np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in range(pose.shape[1])], 1)
    return pose - (slow - slow[0])


def press_toward_release(bilabials: np.ndarray) -> np.ndarray:
    """(T,) bilabial marks -> (T,) closure weights that rise from 0.5 to 1 across each run of
    marked frames: the lips meet early in a p, b or m and press hardest just before they part
    again. It matters for runs of several frames, such as PocketSphinx's phones (2-5 frames);
    the detector's runs are mostly 1-2 frames, where it changes little (measured against flat
    weights: docs/MODEL_CARD.md, "Results on the dev split")."""
    marks = np.clip(np.asarray(bilabials, np.float32), 0, 1)
    out = marks.copy()
    edges = np.diff(np.concatenate([[0], (marks > 0).astype(np.int8), [0]]))
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if end - start > 1:
            out[start:end] *= np.linspace(0.5, 1.0, end - start, dtype=np.float32)
    return out


class ClosureGuide:
    """Guidance at sampling: on bilabial frames, the x0 estimate is corrected so the inner
    lips (points 13, 14) meet, by the smallest change of the lower-face coefficients (in
    whitened units). The sampler then carries on from the corrected estimate, so jaw and
    cheeks settle around the closed lips instead of being pasted on afterwards."""

    def __init__(self, space, neutral: np.ndarray, weights: np.ndarray):
        lower = space.region_slices()["lower"]
        # Inner-lip gap as a function of whitened lower coefficients: gap = n + z @ G.
        gap_basis = space.lip_gap_basis() * space.motion_std[lower, None]
        self.lower = lower
        self.gap_basis = np.asarray(gap_basis, np.float32)                             # (K, 3)
        self.pinv = np.linalg.pinv(self.gap_basis)                                       # (3, K)
        self.neutral_gap = np.asarray(neutral[topology.UPPER_INNER_LIP]
                                      - neutral[topology.LOWER_INNER_LIP], np.float32)
        self.weights = np.asarray(weights, np.float32)                                   # (T,)

    def with_weights(self, weights: np.ndarray) -> "ClosureGuide":
        """The same guide with other (T,) closure weights."""
        guide = object.__new__(ClosureGuide)
        guide.__dict__.update(self.__dict__)
        guide.weights = np.asarray(weights, np.float32)
        return guide

    def __getitem__(self, frames: slice) -> "ClosureGuide":
        return self.with_weights(self.weights[frames])

    def apply(self, x0: np.ndarray) -> np.ndarray:
        """x0 (B, L, D) whitened -> the same with the lips closed where the weights say."""
        lower = x0[..., self.lower]
        gap = self.neutral_gap + lower @ self.gap_basis                                  # (B, L, 3)
        correction = -(self.weights[None, :, None] * gap) @ self.pinv                   # (B, L, K)
        out = x0.copy()
        out[..., self.lower] = lower + correction
        return out
