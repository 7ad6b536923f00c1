"""Landmark motion -> rig channels: shape-key weights and head, neck, jaw and eye bone rotations.

The generated motion (canonical landmarks, head pose removed) is turned into displacements from
the speaker's neutral face and carried into the rig's scene space by the similarity that lays
the neutral face onto the landmarks' points on the rig (so rig units and axes never matter).
Then, vectorised over all frames:
- a jaw bone follows the chin and lower-lip points (rotation about the face's left-right axis
  through the bone's head); if it also deforms the face, its share of the motion is removed
  before the keys are solved;
- shape-key weights: bounded least squares of every key's measured effect at the landmarks'
  points against the displacements, weighted by region (lips first); an L1 term (a short
  ADMM run) picks the keys each frame uses, so keys that do not help stay at zero, and the
  chosen keys are then solved exactly within their slider ranges (a batched active-set step)
  that also fits the inner lips' opening itself (the upper-minus-lower offset of facing lip
  points, weighted heavily: where a rig's keys cannot follow every point, a fit of positions
  alone split the error between the lips and the mouth opened half as wide; the opening is
  what a viewer sees); `keys` keeps one key set on rigs that carry two (ARKit and visemes);
- head pose drives the neck and head bones (split between them); iris points drive the eyes.
Motion is smoothed in time (a Gaussian of `smoothing` seconds) before it is solved.
"""

from dataclasses import dataclass, field

import numpy as np

from .correspond import Correspondence
from .face import topology
from .face.canonical import load_canonical_face
from .face.measures import neutral_shape
from .face.pose import (
    Similarity,
    euler_xyz_to_rotation,
    fit_head_pose,
    fit_similarity,
    head_rotation,
    to_canonical,
)
from .key_names import ARKIT_52, canonical_name, region_of
from .motion_file import Motion, MotionFileError, resample_motion
from .rig import Bone, RigDescription, RigError
from .rotations import axis_angle_to_matrix, rotation_fraction

# How much each landmark's fit counts: the lips first (the inner contour, which shows the
# mouth opening and closing, most), then lids, jaw and brows.
POINT_WEIGHTS = (("lips_outer", 4.0), ("lips_inner", 8.0), ("right_upper_lid", 3.0),
                 ("right_lower_lid", 3.0), ("left_upper_lid", 3.0), ("left_lower_lid", 3.0),
                 ("right_iris", 3.0), ("left_iris", 3.0), ("jaw_line", 1.5),
                 ("right_brow", 1.5), ("left_brow", 1.5), ("nose", 0.5))
# Landmarks whose motion the jaw follows: chin, the lower lip and the skin between.
JAW_POINTS = (152, 175, 199, 200, 18, 17, 16, 15, 14, 148, 377, 176, 400)
# Landmark regions a key's measured effect is attributed to, when its name is unknown.
EFFECT_REGIONS = {
    "mouth": ("lips_outer", "lips_inner", "jaw_line"),
    "eyes": ("right_upper_lid", "right_lower_lid", "left_upper_lid", "left_lower_lid"),
    "gaze": ("right_iris", "left_iris"),
    "brows": ("right_brow", "left_brow"),
}
# Facing inner-lip points (upper, lower), corner to corner: their gap is the mouth opening.
LIP_PAIRS = tuple((topology.LIPS_INNER[19 - i], topology.LIPS_INNER[1 + i]) for i in range(9))
# How much each pair's opening counts against the points' positions (lips_inner: 8 each).
# Chosen on the sample rig and a two-set rig with generated and tracked (train/dev) speech:
# 300 keeps 0.81-0.91 of the opening's amplitude (0.44-0.51 without); the lips' absolute
# positions fit about 2x worse (mean 0.015-0.04 of the eye-corner distance), 1000 gains little.
OPENING_WEIGHT = 300.0
KEY_SETS = ("auto", "arkit", "visemes", "all")
EYEBALL_RADIUS = 0.4   # of the eye's corner-to-corner width (about 12 of 30 mm)
JAW_RANGE = (-0.05, 0.6)   # radians of opening the jaw bone may take
MOVES_NOTHING = 1e-5   # a key moving the landmarks' points less than this (of the face size)


@dataclass
class SolveOptions:
    strength: dict[str, float] = field(default_factory=dict)  # region or "head" -> scale (1)
    smoothing: float = 0.03        # seconds (Gaussian sigma); 0 = none
    sparsity: float = 0.01         # L1 weight: how much a lone key's weight shrinks
    neck_share: float = 0.35       # of the head rotation given to the neck bone
    max_iterations: int = 50       # ADMM, only to pick each frame's keys; then exact
    tolerance: float = 2e-4        # ADMM stop: weight change and constraint gap
    keys: str = "auto"             # KEY_SETS: which shape keys a rig with two sets uses

    def strength_of(self, region: str) -> float:
        return float(self.strength.get(region, 1.0))


@dataclass
class RigAnimation:
    """Per-channel curves at the rig's frame rate; frame 0 is the motion's first frame."""

    fps: float
    shape_keys: dict[str, np.ndarray]       # key name -> (T,) weight
    bone_rotations: dict[str, np.ndarray]   # bone name -> (T, 3, 3) pose rotation (bone local)
    report: dict = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        for values in (*self.shape_keys.values(), *self.bone_rotations.values()):
            return len(values)
        return 0


def face_motion(motion: Motion) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 3) canonical landmarks and (478, 3) neutral shape of a motion file.

    Uses the `canonical` and `neutral` extras that `animate` writes; fits them from the pixel
    landmarks when a file lacks them.
    """
    if "canonical" in motion.extras:
        canonical = np.asarray(motion.extras["canonical"], dtype=np.float64)
    else:
        pose = fit_head_pose(motion.landmarks.astype(np.float64), load_canonical_face())
        canonical = to_canonical(motion.landmarks.astype(np.float64), pose)
    if "neutral" in motion.extras:
        neutral = np.asarray(motion.extras["neutral"], dtype=np.float64)
    else:
        neutral = neutral_shape(canonical).astype(np.float64)
    return canonical, neutral


def solve(rig: RigDescription, correspondence: Correspondence, motion: Motion,
          options: SolveOptions | None = None) -> RigAnimation:
    """All channels of the rig for `motion`, resampled to `rig.fps`."""
    options = options or SolveOptions()
    correspondence.check(rig)
    if not rig.shape_keys and not rig.bones:
        raise RigError("the rig has neither shape keys nor head/jaw/eye bones to animate")
    motion, held = hold_broken_frames(resample_motion(motion, rig.fps))
    canonical, neutral = face_motion(motion)
    valid = correspondence.valid
    rest = correspondence.points(rig)                                       # (478, 3) scene
    to_scene = canonical_to_scene(neutral, rest, valid)
    sigma = options.smoothing * rig.fps
    displacement = smooth_in_time(canonical - neutral, sigma)              # (T, 478, 3) IOD
    targets = to_scene.scale * displacement @ to_scene.rotation.T          # (T, 478, 3) scene
    lateral, up = to_scene.rotation[:, 0], to_scene.rotation[:, 1]
    bones: dict[str, np.ndarray] = {}
    report: dict = {"frames": len(targets), "fps": rig.fps, "method": correspondence.method,
                    "landmarks_on_rig": int(valid.sum()), "frames_held": held}

    if "jaw" in rig.bones:
        jaw = rig.bones["jaw"]
        angle = jaw_angle(rest, targets, jaw.head, lateral, up, valid)      # (T,) radians
        if jaw.face_weights is not None:   # the bone moves the face: the keys solve the rest
            weights = correspondence.scalar(rig, jaw.face_weights)
            arm = rest - jaw.head
            moved = np.einsum("tij,nj->tni", axis_angle_to_matrix(lateral, angle), arm) - arm
            targets = targets - weights[None, :, None] * moved
        opening = axis_angle_to_matrix(lateral, angle * options.strength_of("mouth"))
        bones[jaw.name] = bone_local(jaw, opening)
        report["jaw_angle_max_deg"] = float(np.degrees(np.abs(angle).max()))

    shape_keys = {}
    if rig.shape_keys:
        basis = correspondence.points(rig, rig.key_deltas())               # (K, 478, 3)
        lower = np.array([k.slider_min for k in rig.shape_keys])
        upper = np.array([k.slider_max for k in rig.shape_keys])
        point_weights = landmark_weights() * valid
        face_size = np.linalg.norm(np.ptp(rest[valid], axis=0)) if valid.any() else 1.0
        key_set, in_set = choose_keys([k.name for k in rig.shape_keys], options.keys)
        moves = (np.abs(basis).max(axis=(1, 2)) > MOVES_NOTHING * face_size) & in_set
        opening_basis, opening_targets, opening_weights = lip_openings(basis, targets, valid)
        weights = solve_weights(basis[moves], targets, point_weights, lower[moves],
                                upper[moves], options,
                                (opening_basis[moves], opening_targets, opening_weights))
        regions = [key_region(k.name, b) for k, b in zip(rig.shape_keys, basis)]
        index = np.flatnonzero(moves)
        for k, key in enumerate(rig.shape_keys):
            if not moves[k]:
                shape_keys[key.name] = np.zeros(len(targets))
                continue
            column = weights[:, np.searchsorted(index, k)]
            scaled = column * options.strength_of(regions[k]) if regions[k] else column
            shape_keys[key.name] = np.clip(scaled, key.slider_min, key.slider_max)
        report["key_set"] = key_set
        report["keys_solved"] = [k.name for k, m in zip(rig.shape_keys, moves) if m]
        report["keys_moving_nothing"] = [k.name for k, m, s in zip(rig.shape_keys, moves, in_set)
                                         if s and not m]
        report["keys_of_the_other_set"] = [k.name for k, s in zip(rig.shape_keys, in_set)
                                           if not s]
        lips = list(topology.LIPS)
        fitted = (weights @ basis[moves][:, lips].reshape(moves.sum(), -1)).reshape(-1, len(lips), 3)
        error = np.linalg.norm(fitted - targets[:, lips], axis=-1)
        report["lip_residual"] = float(error.mean() / max(to_scene.scale, 1e-12))  # IOD units

    head_motion = rotation_fraction(
        head_rotation_in_scene(motion, to_scene, sigma), options.strength_of("head"))
    bones.update(head_and_neck(rig, head_motion, options.neck_share))
    gaze = rotation_fraction(gaze_rotation(neutral + displacement, neutral, to_scene),
                             options.strength_of("gaze"))
    for role in ("eye_left", "eye_right"):
        if role in rig.bones:
            bones[rig.bones[role].name] = bone_local(rig.bones[role], gaze)
    return RigAnimation(rig.fps, shape_keys, bones, report)


def hold_broken_frames(motion: Motion) -> tuple[Motion, int]:
    """The motion with every frame holding a NaN or inf replaced by the last good frame (the
    first good one for leading frames), and how many were replaced; keys stay finite."""
    per_frame = [motion.landmarks, motion.pose] + [
        v for v in motion.extras.values() if v.ndim and len(v) == motion.frame_count]
    good = np.ones(motion.frame_count, bool)
    for values in per_frame:
        good &= np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if good.all():
        return motion, 0
    if not good.any():
        raise MotionFileError("every frame of the motion holds NaN or infinite values; "
                              "generate it again")
    source = np.maximum.accumulate(np.where(good, np.arange(len(good)), 0))
    source[:np.argmax(good)] = np.argmax(good)
    extras = {k: v[source] if v.ndim and len(v) == motion.frame_count else v
              for k, v in motion.extras.items()}
    fixed = Motion(motion.landmarks[source], motion.pose[source], motion.fps, motion.meta, extras)
    return fixed, int((~good).sum())


def canonical_to_scene(neutral: np.ndarray, rest: np.ndarray, valid: np.ndarray) -> Similarity:
    """Similarity laying the neutral face (canonical frame) onto the landmarks' rig points."""
    stable = [i for i in topology.STABLE_POINTS if valid[i]]
    if len(stable) >= 8:
        weights = np.array([w for i, w in zip(topology.STABLE_POINTS, topology.STABLE_WEIGHTS)
                            if valid[i]])
        return fit_similarity(neutral[stable], rest[stable], weights)
    points = np.flatnonzero(valid[:topology.NUM_MESH_LANDMARKS])
    if len(points) < 20:
        raise RigError(f"only {len(points)} face landmarks have a point on the rig; the face "
                       "was not found on the mesh: make the correspondence again")
    return fit_similarity(neutral[points], rest[points])


def choose_keys(names: list[str], keys: str) -> tuple[str, np.ndarray]:
    """The key set a solve uses and (K,) whether each key is in it.

    Two sets that shape the mouth fight when solved together (the opening goes to
    mouthLowerDown and viseme_aa while jawOpen stays at 0), so one of them stays at 0:
    arkit: the viseme keys; visemes: the ARKit mouth keys (blinks, gaze and brows still
    move); all: none. auto: arkit when the rig has all 52 ARKit names, else visemes when it
    has visemes, else all. Keys of no known name are solved in every set. Raises RigError when
    an explicit set is not on the rig.
    """
    if keys not in KEY_SETS:
        raise ValueError(f"keys must be one of {', '.join(KEY_SETS)}, got {keys!r}")
    canonical = [canonical_name(name) or "" for name in names]
    arkit = np.array([c in ARKIT_52 for c in canonical], dtype=bool)
    visemes = np.array([c.startswith("viseme_") for c in canonical], dtype=bool)
    if keys == "auto":
        keys = "arkit" if set(ARKIT_52) <= set(canonical) else (
            "visemes" if visemes.any() else "all")
    if keys == "all":
        return keys, np.ones(len(names), dtype=bool)
    if keys == "arkit":
        if not arkit.any():
            raise RigError("--keys arkit: the rig has no ARKit-named shape keys (jawOpen, "
                           "eyeBlinkLeft, ...); use --keys auto, visemes or all")
        return keys, ~visemes
    if not visemes.any():
        raise RigError("--keys visemes: the rig has no viseme shape keys (viseme_aa, ...); "
                       "use --keys auto, arkit or all")
    arkit_mouth = np.array([c in ARKIT_52 and region_of(c) == "mouth" for c in canonical],
                           dtype=bool)
    return keys, ~arkit_mouth


def lip_openings(basis: np.ndarray, targets: np.ndarray, valid: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mouth opening as extra points for the fit: (K, P, 3) each key's change of the
    upper-minus-lower offset of the P facing inner-lip pairs, (T, P, 3) the motion's, (P,)
    their weights (0 where a lip point is not on the rig)."""
    upper, lower = (list(side) for side in zip(*LIP_PAIRS))
    weights = OPENING_WEIGHT * (valid[upper] & valid[lower])
    return (basis[:, upper] - basis[:, lower], targets[:, upper] - targets[:, lower],
            weights.astype(np.float64))


def landmark_weights() -> np.ndarray:
    """(478,) how much each landmark's fit counts."""
    weights = np.ones(topology.NUM_LANDMARKS)
    for region, weight in POINT_WEIGHTS:
        weights[list(topology.REGIONS[region])] = np.maximum(
            weights[list(topology.REGIONS[region])], weight)
    return weights


def key_region(name: str, effect: np.ndarray) -> str | None:
    """The region a key's strength comes from: by name, else where its effect (478, 3) is."""
    region = region_of(name)
    if region:
        return region
    energy = (effect ** 2).sum(-1)
    totals = {r: energy[list(set().union(*(topology.REGIONS[n] for n in names)))].sum()
              for r, names in EFFECT_REGIONS.items()}
    best = max(totals, key=totals.get)
    return best if totals[best] > 0 else None


def solve_weights(basis: np.ndarray, targets: np.ndarray, point_weights: np.ndarray,
                  lower: np.ndarray, upper: np.ndarray, options: SolveOptions,
                  exact_only: tuple | None = None) -> np.ndarray:
    """Bounded, sparse least squares for every frame at once.

    basis (K, N, 3) each key's displacement of the N points, targets (T, N, 3), point_weights
    (N,), bounds (K,) -> (T, K) weights minimising
    sum_n w_n |sum_k x_k basis_kn - target_n|^2 / 2, lower <= x <= upper, on the keys an L1
    term (sparsity * sum_k G_kk |x_k|) picks per frame. Unit-scaled variables (G_kk = 1).
    exact_only: (basis (K, P, 3), targets (T, P, 3), weights (P,)) of further points that the
    final exact solve fits too but the L1 pass that picks the keys does not (the lips'
    opening: weighted heavily, it would let the L1 pass pick mixtures near closed lips).
    """
    count = len(basis)
    if count == 0:
        return np.zeros((len(targets), 0))
    gram, linear = _normal_equations(basis, targets, point_weights)
    scale = np.sqrt(np.maximum(np.diag(gram), 1e-300))
    gram_unit = gram / np.outer(scale, scale)
    linear_unit = linear / scale
    threshold = options.sparsity * scale                                   # on unit variables
    low, high = lower * scale, upper * scale
    start = np.clip(linear_unit @ np.linalg.pinv(gram_unit, rcond=1e-6), low, high)
    chosen = _admm(gram_unit, linear_unit, start, low, high, threshold, scale, options)
    if exact_only is not None:
        extra_gram, extra_linear = _normal_equations(*exact_only)
        gram, linear = gram + extra_gram, linear + extra_linear
        chosen = chosen / scale
        scale = np.sqrt(np.maximum(np.diag(gram), 1e-300))
        gram_unit, linear_unit = gram / np.outer(scale, scale), linear / scale
        chosen, threshold = chosen * scale, options.sparsity * scale
        low, high = lower * scale, upper * scale
    # The L1 term picked which keys each frame uses; solve those exactly, without its
    # shrinkage, so the chosen keys reach their full weight (correlated ones would stay short).
    final = _exact_on_support(gram_unit, linear_unit, chosen, low, high, chosen != 0, threshold)
    return final / scale


def _normal_equations(basis: np.ndarray, targets: np.ndarray, point_weights: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) Gram matrix and (T, K) right-hand sides of the weighted fit."""
    root = np.sqrt(np.repeat(point_weights, 3))
    design = basis.reshape(len(basis), -1) * root                          # (K, 3N)
    return design @ design.T, (targets.reshape(len(targets), -1) * root) @ design.T


def _exact_on_support(gram, linear, z, low, high, support, threshold,
                      rounds: int = 12) -> np.ndarray:
    """Box-constrained least squares per frame on the keys each frame uses (`support` (T, K)).

    A primal active-set method, all frames at once: from the feasible near solution z (T, K),
    keys at a bound stay there unless the gradient pulls them in; a key outside the support
    joins when the gradient pulling it from zero beats the L1 threshold (the L1 pass stops
    early); the free keys' exact solution is one batch of (K, K) systems, and each frame steps
    toward it only as far as its bounds allow (so the fit never gets worse, even for keys that
    are mixtures of one another, as viseme sets often are).
    """
    count = len(gram)
    support = support.copy()
    z = np.clip(z.astype(np.float64), low, high) * support
    diagonal = np.arange(count)
    rows = np.arange(len(z))
    for _ in range(rounds):
        zr, c = z[rows], linear[rows]
        gradient = zr @ gram - c
        joins = ~support[rows] & (((-gradient > threshold) & (high > 0))
                                  | ((gradient > threshold) & (low < 0)))
        support[rows] |= joins
        on = support[rows]
        lo, hi = np.where(on, low, 0.0), np.where(on, high, 0.0)
        at_low = (zr <= lo + 1e-9) & ((gradient >= 0) | ~on)
        at_high = (zr >= hi - 1e-9) & ((gradient <= 0) | ~on)
        free = ~(at_low | at_high)
        # Free keys: their rows of G; fixed keys: identity rows holding them where they are.
        # A tiny ridge keeps mixtures and exact opposites (mouthLeft/mouthRight) solvable.
        mask = free.astype(np.float64)
        matrix = np.multiply(gram, mask[:, :, None])          # in place: (rows, K, K) is big
        matrix *= mask[:, None, :]
        matrix[:, diagonal, diagonal] += 1 - mask + 1e-6 * mask
        rhs = np.where(free, c - np.where(free, 0.0, zr) @ gram, zr)
        target = np.linalg.solve(matrix, rhs[..., None])[..., 0]
        step = target - zr
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(step > 1e-12, (hi - zr) / step,
                            np.where(step < -1e-12, (lo - zr) / step, np.inf))
        fraction = np.clip(room.min(1), 0.0, 1.0)                          # (rows,)
        stepped = np.clip(zr + fraction[:, None] * step, lo, hi)
        # Clipping the target is usually the faster way to the answer; take it where it fits
        # better than the safe step.
        clipped = np.clip(target, lo, hi)
        before, fit_clipped = _objective(gram, c, zr), _objective(gram, c, clipped)
        fit_stepped = _objective(gram, c, stepped)
        better = fit_clipped < fit_stepped
        z[rows] = np.where(better[:, None], clipped, stepped)
        gain = before - np.minimum(fit_clipped, fit_stepped)
        done = (fraction >= 1.0) & ~better | better & (np.abs(clipped - target).max(1) <= 1e-9)
        rows = rows[~done & (gain > 1e-9 * (np.abs(before) + 1e-12)) | joins.any(1)]
        if not len(rows):
            break
    return z


def _objective(gram, linear, z) -> np.ndarray:
    """(T,) z'Gz/2 - linear.z per row."""
    return ((0.5 * (z @ gram) - linear) * z).sum(1)


def _admm(gram, linear, z, low, high, threshold, scale, options) -> np.ndarray:
    """min x'Gx/2 - linear.x + threshold.|x| with low <= x <= high, per row of linear (T, K).

    float32 (weights need 1e-4, not 1e-12); rho is rebalanced every few iterations so the
    constraint gap and the step shrink together (residual balancing).
    """
    f32 = np.float32
    linear, z = linear.astype(f32), z.astype(f32)
    low, high = np.broadcast_to(low, z.shape).astype(f32), np.broadcast_to(high, z.shape).astype(f32)
    threshold = threshold.astype(f32)
    tolerance = (options.tolerance * scale).astype(f32)   # in unit variables, per key
    relax, rho, u = f32(1.6), 1.0, np.zeros_like(z)
    inverse = np.linalg.inv(gram + rho * np.eye(len(gram))).astype(f32)
    for iteration in range(1, options.max_iterations + 1):
        x = (linear + f32(rho) * (z - u)) @ inverse
        x_relaxed = relax * x + (1 - relax) * z
        z_previous = z
        shifted = x_relaxed + u
        shrink = threshold / f32(rho)
        # Soft threshold, then the bounds (minimum/maximum: np.clip is slower on small arrays).
        z = np.minimum(np.maximum(shifted - np.minimum(np.maximum(shifted, -shrink), shrink),
                                  low), high)
        u += x_relaxed - z
        if iteration % 10:
            continue
        primal = (np.abs(x - z) / tolerance).max()
        dual = (rho * np.abs(z - z_previous) / tolerance).max()
        if primal < 1 and dual / rho < 1:
            break
        if primal > 10 * dual or dual > 10 * primal:
            factor = 2.0 if primal > dual else 0.5
            rho *= factor
            u /= f32(factor)
            inverse = np.linalg.inv(gram + rho * np.eye(len(gram))).astype(f32)
    return z


def jaw_angle(rest: np.ndarray, targets: np.ndarray, pivot: np.ndarray, lateral: np.ndarray,
              up: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) jaw rotation about `lateral` through `pivot` that carries the chin points along.

    rest (478, 3) and targets (T, 478, 3) in scene space; the sign is the rotation's about
    `lateral` (right-hand rule), whatever the bone's own axes are.
    """
    points = [i for i in JAW_POINTS if valid[i]]
    if not points:
        return np.zeros(len(targets))
    arm = rest[points] - pivot                                             # (P, 3)
    arm = arm - np.outer(arm @ lateral, lateral)
    moved = arm + targets[:, points]
    moved = moved - (moved @ lateral)[..., None] * lateral
    sine = np.einsum("d,tpd->tp", lateral, np.cross(arm, moved))
    cosine = np.einsum("pd,tpd->tp", arm, moved)
    reach = np.linalg.norm(arm, axis=1)
    angle = (np.arctan2(sine, cosine) * reach).sum(1) / max(reach.sum(), 1e-12)
    # Opening moves the chin down: that fixes which sign of the rotation opens.
    chin = arm[np.argmax(reach)]
    opens = 1.0 if np.cross(lateral, chin) @ -up > 0 else -1.0
    return opens * np.clip(opens * angle, *JAW_RANGE)


def head_rotation_in_scene(motion: Motion, to_scene: Similarity, sigma: float) -> np.ndarray:
    """(T, 3, 3) head rotation relative to rest, in scene axes (rotation about the bones' heads).

    The motion's pose is in the camera's upright axes; the reference's own rotation in that
    frame (near identity for a frontal render) carries it into the head's axes.
    """
    angles = smooth_in_time(np.asarray(motion.pose[:, :3], dtype=np.float64), sigma)
    relative = euler_xyz_to_rotation(angles)                               # (T, 3, 3) upright
    sample = slice(0, min(len(relative), 50))
    landmarks = np.asarray(motion.landmarks[sample], dtype=np.float64)
    absolute = head_rotation(fit_head_pose(landmarks, load_canonical_face()))
    reference = _mean_rotation(np.swapaxes(relative[sample], 1, 2) @ absolute)
    in_head = reference.T @ relative @ reference
    return to_scene.rotation @ in_head @ to_scene.rotation.T


def head_and_neck(rig: RigDescription, head_motion: np.ndarray,
                  neck_share: float) -> dict[str, np.ndarray]:
    """Pose rotations of the neck and head bones so that the head turns by `head_motion`."""
    head, neck = rig.bones.get("head"), rig.bones.get("neck")
    out = {}
    if neck is None or head is None:
        bone = head or neck
        if bone is not None:
            out[bone.name] = bone_local(bone, head_motion)
        return out
    neck_motion = rotation_fraction(head_motion, neck_share)
    out[neck.name] = bone_local(neck, neck_motion)
    # A head under the neck already turns with it; it adds the rest.
    remaining = np.swapaxes(neck_motion, 1, 2) @ head_motion if head.parent == neck.name \
        else head_motion
    out[head.name] = bone_local(head, remaining)
    return out


def gaze_rotation(canonical: np.ndarray, neutral: np.ndarray, to_scene: Similarity) -> np.ndarray:
    """(T, 3, 3) eye rotation in scene axes from the irises' shift within the eyes (both eyes)."""
    shifts, widths = [], []
    for iris, (outer, inner) in ((topology.RIGHT_IRIS[0], topology.RIGHT_EYE_CORNERS),
                                 (topology.LEFT_IRIS[0], topology.LEFT_EYE_CORNERS)):
        shifts.append(_iris_offset(canonical, iris, outer, inner)
                      - _iris_offset(neutral, iris, outer, inner))
        widths.append(np.linalg.norm(neutral[outer] - neutral[inner]))
    radius = EYEBALL_RADIUS * np.mean(widths)
    shift = np.mean(shifts, axis=0)                                        # (T, 3) canonical
    yaw = np.arcsin(np.clip(shift[:, 0] / radius, -1, 1))      # toward the subject's left: +y
    pitch = np.arcsin(np.clip(shift[:, 1] / radius, -1, 1))    # looking up: -x
    in_head = axis_angle_to_matrix(np.array([0.0, 1, 0]), yaw) @ \
        axis_angle_to_matrix(np.array([1.0, 0, 0]), -pitch)
    return to_scene.rotation @ in_head @ to_scene.rotation.T


def _iris_offset(face: np.ndarray, iris: int, outer: int, inner: int) -> np.ndarray:
    """(..., 3) iris centre relative to the middle of the eye's corners."""
    return face[..., iris, :] - (face[..., outer, :] + face[..., inner, :]) / 2


def bone_local(bone: Bone, rotation: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotation about the bone's head in scene axes -> the bone's pose rotation."""
    axes = bone.rest_rotation
    return axes.T @ rotation @ axes


def smooth_in_time(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter of (T, ...) along T, sigma in frames; edges reflect."""
    values = np.asarray(values, dtype=np.float64)
    if sigma <= 0.25 or len(values) < 2:
        return values
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([values[radius:0:-1], values, values[-2:-radius - 2:-1]]) \
        if len(values) > radius + 1 else np.pad(values, [(radius, radius)] + [(0, 0)] *
                                                 (values.ndim - 1), mode="edge")
    out = np.zeros_like(values)
    for offset, weight in enumerate(kernel):
        out += weight * padded[offset:offset + len(values)]
    return out


def _mean_rotation(rotations: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(rotations.mean(0))
    return u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt

