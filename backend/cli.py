"""`dimitra`: the command line. Each subcommand parses its options and hands them to one
function of the package that does the work; nothing else happens here.

Errors: `main` answers an error whose message is meant for the user (a bad input, no server)
with one line on stderr, `dimitra COMMAND: message`, and exit status 2; any other failure with
one line that calls it unexpected, and status 1. `--debug` (anywhere on the line) shows the
Python traceback instead."""

import argparse
import json
import os
import sys
from pathlib import Path

# The generation options' flags, defaults and help come from their one table (torch-free, so
# `dimitra client` does not load torch): backend.protocol.options.OPTIONS.
from .protocol.constants import DEFAULT_PROXY_BACKEND, DEFAULT_SERVER
from .protocol.options import ANIMATE, EVAL, cli_options

# The folders (installed as dimitra.backend, dimitra.retarget, dimitra.blender_addon) whose own
# exception classes (AudioError, ReferenceFaceError, BakeError, RigError, ServiceError, ...)
# carry a message for the user, and whose plain ValueError/RuntimeError do.
PROJECT_PACKAGES = ("backend", "retarget", "blender_addon")
PROJECT_ROOT = __package__.rpartition(".")[0]     # "dimitra"


class UsageError(ValueError):
    """Options that do not go together, or an input that is not there: `main` prints the
    message after `dimitra COMMAND:` and exits 2."""


def _check_dataset(dataset: str) -> None:
    """A folder `dimitra prepare` wrote, or a UsageError that says how to get one."""
    from .dataset.index import INDEX_NAME

    path = Path(dataset)
    if not path.is_dir():
        raise UsageError(f"{dataset}: no such folder; give a dataset folder written by "
                         f"`dimitra prepare VIDEOS --out {dataset}`")
    if not (path / INDEX_NAME).is_file():
        raise UsageError(f"{dataset}: not a prepared dataset (no {INDEX_NAME}); run "
                         f"`dimitra prepare VIDEOS --out {dataset}` first")


def _prepare(args) -> int:
    from .dataset.prepare import run_prepare, summary_table

    missing = [path for path in args.inputs if not Path(path).exists()]
    if missing:
        raise UsageError(f"{', '.join(missing)}: no such file or folder; give videos, folders "
                         "of videos, or a manifest.csv")
    records = run_prepare(args.inputs, args.out, jobs=args.jobs, features=tuple(args.features),
                          split=args.split, progress=not args.quiet, ray=args.ray)
    print(summary_table(records))
    return 0 if all(r.status == "ok" for r in records) else 1


def _eval(args) -> int:
    from .evaluation.report import evaluate_files, evaluate_split, format_table, write_json

    if args.pred:
        if not args.truth:
            raise UsageError("--pred needs --truth (a prepared clip .npz)")
        result = evaluate_files(args.pred, args.truth)
        print(json.dumps(result, indent=1))
    else:
        if not args.dataset:
            raise UsageError("give a prepared DATASET folder, or --pred and --truth")
        _check_dataset(args.dataset)
        if args.fold_models:
            from .evaluation.report import evaluate_folds, format_folds_table

            result = evaluate_folds(args.dataset, args.fold_models, _eval_options(args))
            print(format_folds_table(result))
        else:
            predictions = args.predictions
            if args.model:
                import tempfile

                from .generation.motion import predict_split

                predictions = predictions or tempfile.mkdtemp(prefix="dimitra-predictions-")
                predict_split(args.model, args.dataset, args.split, predictions,
                              _eval_options(args))
            result = evaluate_split(args.dataset, args.split, predictions)
            print(format_table(result))
    if args.json:
        result["provenance"] = {"command": " ".join(["dimitra", *sys.argv[1:]]),
                                "commit": _git_commit()}
        write_json(args.json, result)
    return 0


def _eval_options(args):
    from .generation.generator import GenerationOptions

    return GenerationOptions(**{o.name: getattr(args, o.name) for o in cli_options(EVAL)})


def _git_commit() -> str:
    """The checkout's commit, so a saved result says what produced it ('' outside git)."""
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False, cwd=Path(__file__).resolve().parent)
    return out.stdout.strip()


def _train(args) -> int:
    if args.command == "train-bilabials":
        from .training.bilabials import main as train_main
        from .training.bilabials import parse_args
    elif args.command == "fit-lips":
        from .training.fit_lips import main as train_main
        from .training.fit_lips import parse_args
    else:
        from .training.train import main as train_main
        from .training.train import parse_args
    _check_dataset(parse_args(args.train_args).dataset)  # -h and bad options exit here, as there
    return train_main(args.train_args) or 0


def _generation_options(args) -> dict:
    """The GenerationOptions fields that `animate`, `client animate` and `bake` take (a plain dict:
    `client` must not import torch)."""
    return {option.name: getattr(args, option.name) for option in cli_options(ANIMATE)}


def _animate(args) -> int:
    from .generation.animate import AnimateRequest, animate_to_file
    from .generation.generator import GenerationOptions
    from .model.checkpoint import DEFAULT_MODEL

    curves = _curve_set(args)
    options = GenerationOptions(**_generation_options(args))
    motion = animate_to_file(AnimateRequest(args.audio, args.ref, options, args.fps), args.out,
                             args.preview, args.model or DEFAULT_MODEL, args.device, args.runtime,
                             curves)
    timing = motion.meta.get("timing_s", {})
    print(f"{args.out}: {motion.frame_count} frames at {motion.fps:g} fps "
          + (f"of {curves} curves " if curves else "")
          + f"({motion.duration_s:.1f} s); features {timing.get('features', 0):.2f} s, "
          f"sampling {timing.get('sampling', 0):.2f} s"
          + (f"; preview {args.preview}" if args.preview else ""))
    if args.video:
        from .render.renderer import render_motion_file, summary_line

        print(summary_line(args.video, render_motion_file(args.out, args.ref, args.video,
                                                          args.audio)))
    return 0


def _render(args) -> int:
    from .render.renderer import render_motion_file, summary_line

    print(summary_line(args.out, render_motion_file(args.motion, args.ref, args.out, args.audio,
                                                    args.size, args.side_by_side,
                                                    args.warp_only)))
    return 0


def _curve_set(args) -> str | None:
    """--curves, or "arkit" for an --out that ends in .csv or .json; None for a motion file."""
    suffix = Path(args.out).suffix.lower()
    curves = args.curves or ("arkit" if suffix in (".csv", ".json") else None)
    if curves and suffix not in (".csv", ".json"):
        raise UsageError(f"--curves writes a .csv (Live Link Face) or .json file, not {args.out}; "
                         "give --out NAME.csv or NAME.json")
    if curves and args.video:
        raise UsageError("--video renders from a motion file: write --out NAME.npz (then "
                         "`dimitra render`), and the curves in a second run")
    return curves


def _serve(args) -> int:
    from .protocol.constants import PEER_SILENCE_S
    from .service.server import ServerConfig, WorkerSettings, serve

    model = args.model
    if not model:
        from .model.checkpoint import DEFAULT_MODEL
        model = DEFAULT_MODEL
    worker = WorkerSettings(str(model), args.device, args.runtime, args.torch_threads,
                            args.max_audio_seconds)
    client_timeout = args.client_timeout if args.client_timeout is not None else (
        0.0 if args.connect else PEER_SILENCE_S)  # behind a proxy, heartbeats reach a server by chance
    return serve(ServerConfig(args.bind, args.connect, args.workers, args.queue,
                              args.max_audio_seconds, args.max_message_mb, args.curve_dir,
                              client_timeout, args.drain_timeout, worker))


def _proxy(args) -> int:
    from .service.proxy import run_proxy

    return run_proxy(args.bind, args.backend)


def _client(args) -> int:
    from ..retarget.atomic_file import atomic_open
    from .protocol.remote import curve_keys, remote_animate, remote_info

    curve = curve_keys(args.server_key, args.client_key)
    if args.client_command == "info":  # a ServiceError is main's to word, like any other
        print(json.dumps(remote_info(args.server, curve, args.timeout), indent=1))
        return 0
    result = remote_animate(args.audio, args.ref, _generation_options(args), args.fps,
                            args.server, curve, args.timeout, not args.quiet)
    with atomic_open(args.out) as handle:
        handle.write(result.motion)
    summary = result.summary
    print(f"{args.out}: {summary['frames']} frames at {summary['fps']:g} fps "
          f"({summary['duration_s']:.1f} s) from {summary.get('server_id', args.server)} "
          f"in {result.latency_s:.2f} s")
    return 0


def _add_generation_options(parser: argparse.ArgumentParser, fps: bool = True) -> None:
    """The motion options `animate`, `client animate` and `bake` share (bake takes the rig's
    frame rate, so no --fps there)."""
    _add_option_flags(parser, ANIMATE)
    if fps:
        parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the output")


def _add_option_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of the generation options `command` takes (backend.protocol.options): --NAME
    with the option's type, default and choices; a bool that defaults to true is --no-NAME."""
    for option in cli_options(command):
        if option.type is bool:
            parser.add_argument(option.flag, dest=option.name, default=option.default,
                                action="store_false" if option.default else "store_true",
                                help=option.help)
        else:
            parser.add_argument(option.flag, type=option.type, default=option.default,
                                choices=option.choices, help=option.help)


def _bake(args) -> int:
    from ..blender_addon.bake_settings import BakeSettings
    from ..retarget.solve import SolveOptions

    strength = {region: value for region, value in (
        ("mouth", args.mouth), ("eyes", args.eyes), ("gaze", args.gaze), ("brows", args.brows),
        ("head", args.head)) if value is not None}
    settings = BakeSettings(
        meshes=args.mesh, armature=args.armature, start_frame=args.start_frame,
        correspondence=args.correspondence, motion=args.motion, model=args.model,
        solve=SolveOptions(strength=strength, smoothing=args.smoothing, keys=args.keys),
        generation=_generation_options(args))
    return _bake_lines(args, settings)  # main() words BakeError, RigError


def _bake_lines(args, settings) -> int:
    if (args.ray or args.workers or args.out_dir) and not args.manifest:
        raise UsageError("--ray, --workers and --out-dir go with --manifest lines.csv")
    if args.workers and not args.ray:
        raise UsageError("--workers goes with --ray (without it a manifest bakes in this "
                         "process)")
    # The backend -> blender_addon imports of bpy: a batch bake runs bpy as a module, here
    # (with --ray in the workers, not in this process).
    if args.manifest:
        if args.ray:
            reports = _bake_on_ray(args, settings)
        else:
            from ..blender_addon.bake import bake_manifest

            reports = bake_manifest(args.manifest, args.rig, settings, out_dir=args.out_dir)
        _print_line_reports(reports)
        return 0 if all(r["status"] != "failed" for r in reports) else 1
    if not (args.audio and args.out and args.rig):
        raise UsageError("give AUDIO, --rig and --out, or --manifest lines.csv")
    from ..blender_addon.bake import bake

    result = bake(args.audio, args.rig, args.out, settings)
    print(f"{result.out}: {result.frames} frames at {result.fps:g} fps, {result.shape_keys} "
          f"shape keys, {result.bones} bones, correspondence by {result.correspondence.method}, "
          f"{result.seconds:.1f} s")
    return 0


def _bake_on_ray(args, settings) -> list[dict]:
    from ..blender_addon.manifest import read_manifest
    from .scale.bake import bake_on_ray

    lines = read_manifest(args.manifest, args.rig, args.out_dir)
    run = bake_on_ray(lines, settings, args.ray, args.workers or 0)
    if run.workers:
        loads = sorted(w["load_seconds"] for w in run.workers)
        print(f"{len(run.workers)} Ray workers on {len({w['host'] for w in run.workers})} "
              f"node(s), each started (bpy, the model) in {loads[len(loads) // 2]:.1f} s "
              "(median)")
    return run.reports


def _print_line_reports(reports: list[dict]) -> None:
    """Each line as it went, then the failed ones again at the end with their errors."""
    for r in reports:
        if r["status"] == "ok":
            outcome = f" ({r['frames']} frames, {r['seconds']} s)"
        else:
            outcome = f": {r['error']}" if r["status"] == "failed" else " (exists: baked before)"
        print(f"line {r['line']}: {r['status']:7} {r['out']}{outcome}")
    counts = {status: sum(r["status"] == status for r in reports)
              for status in ("ok", "skipped", "failed")}
    print(f"{len(reports)} lines: {counts['ok']} baked, {counts['skipped']} already there, "
          f"{counts['failed']} failed")
    for r in reports:
        if r["status"] == "failed":
            print(f"  failed line {r['line']} ({r['audio']}): {r['error']}")


def _add_ray_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--ray", nargs="?", const="auto", metavar="auto|local|ADDRESS",
                        help=f"{what} on Ray (pip install 'dimitra-blender[scale]'): local = a "
                             "Ray instance for this run, ADDRESS = a running cluster's HOST:PORT "
                             "(`ray start --head` prints it), auto (also plain --ray) = this "
                             "machine's cluster if there is one, else local")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dimitra", description=(
        "Speech audio in, an animated face rig out. Run `dimitra COMMAND -h` for details."))
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback (may come anywhere on the "
                             "line)")
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
                         help="speech feature extractors to cache (default: whisper-tiny-en, the "
                              "shipped model's; F~VARIANT adds a voice variant for training)")
    prepare.add_argument("--split", default="train",
                         help="split for inputs not from a manifest (default: train)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_ray_flag(prepare, "clips as tasks")
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
    evaluate.add_argument("--model", help="generate the predictions with this model file first "
                                          "(kept in --predictions when given)")
    evaluate.add_argument("--fold-models", metavar="PATTERN",
                          help="leave-source-out folds: the model file of each fold, with {fold} "
                               "for its number (runs/x_f{fold}/last.safetensors, trained with "
                               "`dimitra train --holdout-fold K`); each is scored on the "
                               "sources it did not see, then the mean and worst fold")
    _add_option_flags(evaluate, EVAL)
    evaluate.set_defaults(run=_eval)

    animate = commands.add_parser(
        "animate", help="speech + a reference face -> a motion file (and a preview video)",
        description="Generate facial motion (lips, expression, blinks, head pose) for AUDIO "
                    "(any common format, any length) on the face in --ref (an image, or a "
                    "prepared .npz), written as a motion file (docs/FORMATS.md).")
    animate.add_argument("audio")
    animate.add_argument("--ref", required=True, help="reference image or prepared .npz")
    animate.add_argument("--out", required=True,
                         help="motion file to write (.npz), or curves (.csv, .json; never "
                              "overwritten)")
    animate.add_argument("--curves", choices=("arkit", "visemes"),
                         help="write the motion as curves for game engines instead: the 52 "
                              "ARKit weights or the 15 Oculus visemes of a built-in face, plus "
                              "head and eye rotations, as a Live Link Face .csv or a .json "
                              "(default for an --out ending in .csv or .json: arkit)")
    animate.add_argument("--preview", help="also render the mesh over the reference to this .mp4")
    animate.add_argument("--video", help="also render the photoreal video to this .mp4 (as "
                                         "`dimitra render`, 256 px)")
    _add_generation_options(animate)
    animate.add_argument("--model", help="model file (default: the shipped model)")
    animate.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                         help="where the model runs (auto: a CUDA GPU when there is one)")
    animate.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                         help="run the denoiser with torch or onnxruntime (the same motion; "
                              "auto: onnxruntime on the CPU, torch on a GPU)")
    animate.set_defaults(run=_animate)

    render = commands.add_parser(
        "render", help="a motion file + its reference picture -> a photoreal video with the speech",
        description="Animate the reference picture with the motion file's landmarks (the face "
                    "mesh warp, the inside of the mouth painted by a small network) in one "
                    "fixed square crop around the face, with the speech: --audio, else the "
                    "audio the motion was made from. The video lasts as long as the audio.")
    render.add_argument("motion", help="motion file (.npz) from `dimitra animate`")
    render.add_argument("--ref", required=True, help="the reference picture animate was given")
    render.add_argument("--out", required=True, help="video to write (.mp4)")
    render.add_argument("--audio", help="speech to mux in (default: the motion's own audio)")
    render.add_argument("--size", type=int, default=256, choices=(256, 512),
                        help="output side in pixels (default 256)")
    render.add_argument("--side-by-side", metavar="RIG_VIDEO.mp4",
                        help="put this video (the rig's take) on the left, the render on the right")
    render.add_argument("--warp-only", action="store_true",
                        help="the warp alone, without the mouth network (for comparison)")
    render.set_defaults(run=_render)

    serve = commands.add_parser(
        "serve", help="serve the model to the add-on and batch tools over ZeroMQ",
        description="Answer docs/PROTOCOL.md requests: --workers processes each load the model "
                    "once; jobs past the workers wait in a bounded queue, then `busy`. SIGTERM "
                    "finishes open jobs and exits.")
    serve.add_argument("--bind", default=DEFAULT_SERVER,
                       help=f"address to serve on (default: loopback only, {DEFAULT_SERVER})")
    serve.add_argument("--connect", help="serve behind `dimitra proxy`: connect to its back end "
                                         "(e.g. tcp://proxy-host:5556) instead of binding")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    serve.add_argument("--runtime", choices=["auto", "torch", "onnx"], default="auto",
                       help="denoiser runtime (auto: onnxruntime on the CPU, torch on a GPU)")
    serve.add_argument("--workers", type=int, default=1, help="jobs run in parallel (default 1)")
    serve.add_argument("--queue", type=int, default=8, help="jobs waiting for a worker before "
                                                            "`busy` (default 8)")
    serve.add_argument("--max-audio-seconds", type=float, default=600.0,
                       help="longer audio is refused (default 600)")
    serve.add_argument("--max-message-mb", type=float, default=64.0,
                       help="larger requests are refused (default 64)")
    serve.add_argument("--curve-dir", help="CurveZMQ: encrypt, and admit only the clients whose "
                                           "public keys are in DIR/clients (docs/PROTOCOL.md)")
    serve.add_argument("--client-timeout", type=float, default=None,
                       help="seconds without a heartbeat before a client's jobs are cancelled "
                            "(default 10; 0 = never, the default with --connect)")
    serve.add_argument("--drain-timeout", type=float, default=600.0,
                       help="seconds SIGTERM waits for open jobs (default 600)")
    serve.add_argument("--torch-threads", type=int, default=0,
                       help="torch threads per worker (default: torch's choice)")
    serve.add_argument("--model", help="model file (default: the shipped model)")
    serve.set_defaults(run=_serve)

    proxy = commands.add_parser(
        "proxy", help="one front address for several `serve --connect` servers (zmq.proxy)")
    proxy.add_argument("--bind", default=DEFAULT_SERVER,
                       help=f"address clients use (default {DEFAULT_SERVER})")
    proxy.add_argument("--backend", default=DEFAULT_PROXY_BACKEND,
                       help="address servers connect to with `dimitra serve --connect` "
                            f"(default {DEFAULT_PROXY_BACKEND})")
    proxy.set_defaults(run=_proxy)

    client = commands.add_parser("client", help="use a running `dimitra serve` from the shell")
    client_commands = client.add_subparsers(dest="client_command", required=True)
    client_info = client_commands.add_parser("info", help="the server's model, device, limits")
    client_animate = client_commands.add_parser(
        "animate", help="like `dimitra animate`, on the server",
        description="Send AUDIO and --ref to the server; write the motion file it returns to "
                    "--out (the same file `dimitra animate` writes).")
    client_animate.add_argument("audio")
    client_animate.add_argument("--ref", required=True, help="reference image or neutral .npz")
    client_animate.add_argument("--out", required=True, help="motion file to write (.npz)")
    client_animate.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_generation_options(client_animate)
    for sub in (client_info, client_animate):
        sub.add_argument("--server", default=DEFAULT_SERVER,
                         help=f"the server's address (default {DEFAULT_SERVER})")
        sub.add_argument("--timeout", type=float, default=3.0,
                         help="seconds to wait for a first answer (default 3)")
        sub.add_argument("--server-key", help="CurveZMQ: the server's public key (server.key)")
        sub.add_argument("--client-key", help="CurveZMQ: this client's key pair (.key_secret)")
    client.set_defaults(run=_client)
    bake = commands.add_parser(
        "bake", help="speech onto a face rig: keys into a new Action, exported",
        description="Open RIG (.blend, .fbx, .glb/.gltf), render its face, generate motion for "
                    "AUDIO, solve its shape keys and head/jaw/eye bones, key them into a new "
                    "Action (existing animation is kept on the NLA) with the sound in the "
                    "sequencer, and write OUT (.blend, .fbx or .glb; never overwritten).")
    bake.add_argument("audio", nargs="?", help="speech (any common format)")
    bake.add_argument("--rig", help="the character: .blend, .fbx, .glb or .gltf (with "
                                    "--manifest: for lines whose 'rig' column is empty)")
    bake.add_argument("--out", help="file to write: .blend, .fbx or .glb (must not exist)")
    bake.add_argument("--manifest", help="CSV with columns audio,out (and optionally rig): "
                                         "bake every line, the model loaded once")
    bake.add_argument("--out-dir", help="with --manifest: folder for relative 'out' paths "
                                        "(default: the manifest's folder)")
    _add_ray_flag(bake, "lines as tasks for worker processes that each load the model once, "
                        "skipping lines whose out exists,")
    bake.add_argument("--workers", type=int, help="with --ray: worker processes (default: "
                                                  "every CPU of the cluster)")
    bake.add_argument("--mesh", nargs="+", help="face mesh object(s) (default: found)")
    bake.add_argument("--armature", help="armature object (default: found)")
    bake.add_argument("--motion", help="bake this motion file instead of generating one")
    bake.add_argument("--correspondence", help="landmark correspondence file: reused if it "
                                               "exists, else written there for later takes")
    bake.add_argument("--start-frame", type=int, help="first frame (default: the scene's)")
    bake.add_argument("--smoothing", type=float, default=0.03,
                      help="temporal smoothing in seconds (default 0.03; 0 = none)")
    bake.add_argument("--keys", default="auto", choices=("auto", "arkit", "visemes", "all"),
                      help="which shape keys a rig with two sets uses (the other set stays at "
                           "0): auto (default) = ARKit when the rig has the 52 names, else "
                           "visemes, else all keys")
    for region in ("mouth", "eyes", "gaze", "brows", "head"):
        bake.add_argument(f"--{region}", type=float, help=f"strength of the {region} (default 1)")
    _add_generation_options(bake, fps=False)
    bake.add_argument("--model", help="model file (default: the shipped model)")
    bake.set_defaults(run=_bake)

    train = commands.add_parser("train", help="train the cMDT on a prepared dataset",
                                add_help=False)
    train.set_defaults(run=_train)
    train_bilabials = commands.add_parser(
        "train-bilabials", add_help=False,
        help="train the detector that finds p, b, m in the speech features")
    train_bilabials.set_defaults(run=_train)
    fit_lips = commands.add_parser(
        "fit-lips", add_help=False,
        help="fit the lips head (the lower face read from the speech features) into a model")
    fit_lips.set_defaults(run=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]  # after the command too
    args, rest = build_parser().parse_known_args(argv)
    if args.command in ("train", "train-bilabials", "fit-lips"):
        args.train_args = rest  # the training script owns its options (`dimitra train -h`)
    elif rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    if debug:
        return args.run(args)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"\ndimitra {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure gets one line; --debug re-raises
        status, message = _error_line(error)
        print(f"dimitra {args.command}: {message}", file=sys.stderr)
        return status


def _error_line(error: Exception) -> tuple[int, str]:
    """(exit status, message) for an error that reached `main`: 2 and the message itself when
    it was written for the user (the project's own error classes; a ValueError, RuntimeError or
    OSError the project raised; an OSError that names its file), 1 for anything else: a failure
    that says it is unexpected, and how to see more."""
    text = str(error).strip() or type(error).__name__
    own_class = (isinstance(error, UsageError)
                 or type(error).__module__.startswith(PROJECT_ROOT + "."))
    if own_class or (isinstance(error, (ValueError, RuntimeError, OSError))
                     and _raised_by_project(error)):
        return 2, text
    if isinstance(error, OSError) and error.filename is not None:
        return 2, f"{error.filename}: {error.strerror or text}"
    first = text.splitlines()[0]
    return 1, (f"unexpected error: {type(error).__name__}: {first} (run with --debug for the "
               "traceback, and please report it)")


def _raised_by_project(error: Exception) -> bool:
    """Whether a `raise` statement of the project's own code raised `error` (a sentence written
    for the user), not a library or a builtin (numpy's "need at least one array ...", which
    names no frame of its own when it is C)."""
    import linecache

    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    try:
        relative = Path(filename).resolve().relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        return False
    return (relative.parts[0] in PROJECT_PACKAGES
            and linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise "))


def run() -> None:
    """The `dimitra` command: `main`, then exit. After a command that imported bpy (bake), the
    process leaves with os._exit once its output is flushed: bpy 4.5 can deadlock for ever in
    its own static destructors at a normal exit (seen under gdb waiting on its
    delayed_close_thread), and there is nothing left to tear down by then."""
    status = int(main() or 0)
    if "bpy" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
