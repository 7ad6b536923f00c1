"""`dimitra`: the command line. Each subcommand parses its options and hands them to one
function of the package that does the work; nothing else happens here."""

import argparse
import json
import sys
from pathlib import Path


def _prepare(args) -> int:
    from backend.dataset.prepare import run_prepare, summary_table

    records = run_prepare(args.inputs, args.out, jobs=args.jobs, features=tuple(args.features),
                          split=args.split, progress=not args.quiet)
    print(summary_table(records))
    return 0 if all(r.status == "ok" for r in records) else 1


def _eval(args) -> int:
    from backend.evaluation.report import evaluate_files, evaluate_split, format_table, write_json

    if args.pred:
        if not args.truth:
            sys.exit("dimitra eval: --pred needs --truth (a prepared clip .npz)")
        result = evaluate_files(args.pred, args.truth)
        print(json.dumps(result, indent=1))
    else:
        if not args.dataset:
            sys.exit("dimitra eval: give a prepared DATASET folder, or --pred and --truth")
        result = evaluate_split(args.dataset, args.split, args.predictions)
        print(format_table(result))
    if args.json:
        result["provenance"] = {"command": " ".join(["dimitra", *sys.argv[1:]]),
                                "commit": _git_commit()}
        write_json(args.json, result)
    return 0


def _git_commit() -> str:
    """The checkout's commit, so a saved result says what produced it ('' outside git)."""
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False, cwd=Path(__file__).resolve().parent)
    return out.stdout.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dimitra", description=(
        "Speech audio in, an animated face rig out. Run `dimitra COMMAND -h` for details."))
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser(
        "prepare", help="turn talking-face videos into a training dataset",
        description="Track the face in each video (with its audio track or a same-stem audio "
                    "file), and write 25 fps landmark clips, head pose, blinks, audio and "
                    "speech features to DATASET. A manifest.csv (talking-faces layout) may "
                    "stand for its clips. Clips already prepared are skipped.")
    prepare.add_argument("inputs", nargs="+", help="video files, folders of videos, or manifest.csv")
    prepare.add_argument("--out", required=True, help="dataset folder (created or extended)")
    prepare.add_argument("--jobs", type=int, default=0, help="worker processes (default: cores)")
    prepare.add_argument("--features", nargs="+", default=["whisper-tiny-en"],
                         help="speech feature extractors to cache (default: whisper-tiny-en)")
    prepare.add_argument("--split", default="train",
                         help="split for inputs not from a manifest (default: train)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(run=_prepare)

    evaluate = commands.add_parser(
        "eval", help="lip-sync and motion metrics (docs/EVAL.md) with baselines",
        description="Over a prepared split: the static and amplitude baselines and, with "
                    "--predictions, a model's motion files, per clip and mean. Or one "
                    "prediction against one prepared clip with --pred/--truth.")
    evaluate.add_argument("dataset", nargs="?", help="prepared dataset folder")
    evaluate.add_argument("--split", default="dev")
    evaluate.add_argument("--predictions", help="folder of <segment_id>.npz motion files")
    evaluate.add_argument("--pred", help="one predicted motion file")
    evaluate.add_argument("--truth", help="the prepared clip it is compared with")
    evaluate.add_argument("--json", help="also write the results as JSON here")
    evaluate.set_defaults(run=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
