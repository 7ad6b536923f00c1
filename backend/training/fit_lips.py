"""`dimitra fit-lips DATASET --model IN --out OUT`: fit the lips head (backend.model.lips_head)
on a split of a prepared dataset, in the motion space of the model IN, and write IN with the
head as OUT. Seconds on a CPU: one ridge regression in closed form. The defaults are the
shipped head's recipe (docs/MODEL_CARD.md, "The lips head" and after):

    dimitra fit-lips data/dataset --model runs/x/snapshots/ema_003000.safetensors \\
        --av-offsets docs/model/av_offsets_base_folds.json --out runs/x/with_lips.safetensors

For leave-source-out scores, fit one head per fold model on `train-minus-fold-K` and give the
files to `dimitra eval --fold-models`.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from ...retarget.face.measures import inner_lip_gap
from ..dataset.folds import source_name
from ..dataset.index import load_features
from ..features.speech_activity import speech_frames
from ..model.checkpoint import load_bundle, save_with_lips_head
from ..model.lips_head import DEFAULT_CONTEXT, LipsHead, fit_lips_head
from .av_offsets import load_offsets, shift_features
from .windows import CLOSED_GAP, list_segments


def lips_training_segments(dataset: str | Path, split: str, space, features: str,
                           offsets: dict[str, int] | None = None, lead: int = 0,
                           variants: tuple[str, ...] = ()) -> list[tuple]:
    """[(features (T, F), whitened lower-face motion (T, K_l), lips closed in speech (T,) bool,
    source name)] for every segment of `split`;
    a segment's features are shifted by its audio-video offset (frames) when one is given,
    less `lead` for all: the head then moves the lips `lead` frames earlier. Each of
    `variants` (backend.features.voice_variants: "voice-high", "room", ...) adds the segment
    again with the features of that changed copy of its audio, the same motion."""
    from ...retarget.motion_file import load_motion

    lower = space.region_slices()["lower"]
    out = []
    for clip, segment in list_segments(dataset, split):
        motion = load_motion(Path(dataset) / segment.file)
        speech = [load_features(dataset, segment, features)] + [
            load_features(dataset, segment, "+".join(f"{part}~{variant}"
                                                     for part in features.split("+")))
            for variant in variants]
        frames = min(motion.frame_count, *(len(copy) for copy in speech))
        offset = (offsets or {}).get(segment.segment_id, 0) - lead   # earlier lips: earlier audio
        coefficients = space.encode(motion.extras["canonical"][:frames], motion.extras["neutral"],
                                    motion.pose[:frames])[:, lower]
        closed = ((inner_lip_gap(motion.extras["canonical"][:frames]) < CLOSED_GAP)
                  & speech_frames(motion.extras["audio"], frames, motion.fps))
        out += [(shift_features(copy[:frames], offset), coefficients, closed, source_name(clip))
                for copy in speech]
    return out


def fit_from_dataset(dataset: str | Path, model: str | Path, split: str, features: str,
                     offsets: dict[str, int] | None = None, ridge: float = 10.0,
                     gain: float = 2.0, lead: int = 0, closure_weight: float = 1.0,
                     closure_threshold: float | None = None,
                     variants: tuple[str, ...] = (), smoothing: float = 0.0,
                     context: tuple[int, ...] = DEFAULT_CONTEXT,
                     balance_sources: bool = False) -> LipsHead:
    """closure_threshold: fit the head's closure map too, marking closures above it.
    variants: voice variants of the audio to fit on as well (lips_training_segments).
    context: the frame offsets whose features feed each frame.
    balance_sources: each source's frames weigh the same in all, however much video it has."""
    space = load_bundle(model, network=False).motion_space
    segments = lips_training_segments(dataset, split, space, features, offsets, lead, variants)
    closed = None if closure_threshold is None else [closed for _, _, closed, _ in segments]
    frames = {}
    for _, lower, _, source in segments:
        frames[source] = frames.get(source, 0) + len(lower)
    source_weight = {source: (np.mean(list(frames.values())) / count if balance_sources else 1.0)
                     for source, count in frames.items()}
    return fit_lips_head([(f, lower) for f, lower, _, _ in segments], features, ridge=ridge,
                         gain=gain, frame_weights=[source_weight[source]
                                                   * np.where(closed, closure_weight, 1.0)
                                                   for _, _, closed, source in segments],
                         closed=closed, closure_threshold=closure_threshold or 0.0,
                         smoothing=smoothing, context=context)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dimitra fit-lips", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a prepared dataset (dimitra prepare)")
    parser.add_argument("--model", required=True, help="the model file whose motion space the "
                                                       "head predicts in")
    parser.add_argument("--out", required=True, help="the model file to write (IN + the head)")
    parser.add_argument("--split", default="train",
                        help="split or train-minus-fold-K to fit on (default train)")
    parser.add_argument("--features", default="whisper-tiny-en-l3",
                        help="feature extractor(s) the head reads, '+' joins several "
                             "(default whisper-tiny-en-l3)")
    parser.add_argument("--av-offsets", help="JSON of per-segment audio-video offsets "
                                             "(backend.training.av_offsets)")
    parser.add_argument("--ridge", type=float, default=10.0,
                        help="regularisation, per frame of standardised input (default 10)")
    parser.add_argument("--lead", type=int, default=2,
                        help="frames the lips move earlier than the offsets alone say: the "
                             "model's audio_delay option (default 1) delays them again "
                             "(default 2)")
    parser.add_argument("--closure-weight", type=float, default=1.0,
                        help="how much frames with the lips together in speech count in the "
                             "fit against the others (default 1)")
    parser.add_argument("--closures", type=float, default=0.2, metavar="THRESHOLD",
                        help="also fit the closure map (lips together, from the features) and "
                             "close the lips where its score passes THRESHOLD (default 0.2; "
                             "0: no map)")
    parser.add_argument("--variants", nargs="+", default=[], metavar="VARIANT",
                        help="also fit on these voice variants of each clip's audio (voice-high, "
                             "voice-low, room, noisy, phone: prepared with --features F~VARIANT)")
    parser.add_argument("--smoothing", type=float, default=0.25,
                        help="weight of each neighbour in a 3-frame smoothing of the head's "
                             "output (default 0.25; 0: none)")
    parser.add_argument("--context", type=_offsets, default=DEFAULT_CONTEXT,
                        help="frame offsets whose features feed each frame, comma-separated "
                             f"(default {','.join(map(str, DEFAULT_CONTEXT))})")
    parser.add_argument("--balance-sources", action="store_true",
                        help="each source's video weighs the same in the fit, not each frame")
    parser.add_argument("--gain", type=float, default=1.75,
                        help="amplitude restored after the fit's shrinkage (default 1.75)")
    return parser.parse_args(argv)


def _offsets(text: str) -> tuple[int, ...]:
    try:
        offsets = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--context takes comma-separated whole frames "
                                         f"such as -6,-2,0,2,6, not {text!r}") from None
    if 0 not in offsets:
        raise argparse.ArgumentTypeError(f"--context {text!r} must include 0 (the frame itself)")
    return offsets


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    offsets = load_offsets(args.av_offsets) if args.av_offsets else None
    head = fit_from_dataset(args.dataset, args.model, args.split, args.features, offsets,
                            args.ridge, args.gain, args.lead, args.closure_weight,
                            args.closures or None,
                            tuple(args.variants), args.smoothing, args.context,
                            args.balance_sources)
    meta = {"lips_head": {"split": args.split, "features": args.features, "ridge": args.ridge,
                          "gain": args.gain, "lead": args.lead,
                          "closure_weight": args.closure_weight, "closures": args.closures or None,
                          "variants": args.variants, "smoothing": args.smoothing,
                          "context": list(args.context),
                          "balance_sources": args.balance_sources,
                          "av_offsets": Path(args.av_offsets).name if args.av_offsets else None}}
    save_with_lips_head(args.model, head, args.out, meta)
    print(f"{args.out}: lips head on {args.split} ({args.features}) in "
          f"{time.perf_counter() - started:.1f} s")
    return 0
