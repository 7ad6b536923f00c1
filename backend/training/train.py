"""`dimitra train DATASET --out RUN_DIR`: train the cMDT on a prepared dataset.

Straight-line, after DiT's train.py: parse, build, loop, save. The same script runs on the
CPU, on one GPU (bf16 autocast) or on several under `torchrun` (DDP, one process per GPU).
RUN_DIR gets `last.safetensors` (resumable, with `train_state.safetensors` and
`train_state.json`), `best.safetensors` (best dev score so far, EMA weights),
`snapshots/ema_<step>.safetensors` at every dev evaluation, `loss.csv`, `loss.png`, `dev.csv`.
"""

import argparse
import copy
import csv
import json
import math
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ...retarget.face.canonical import load_canonical_face
from ...retarget.motion_file import load_motion
from ..dataset.index import load_features
from ..diffusion.schedule import NoiseSchedule
from ..evaluation.metrics import evaluate
from ..features.speech_features import get_extractor
from ..generation.generator import GenerationOptions, MotionGenerator
from ..generation.motion import predict_prepared_clip
from ..model.checkpoint import ModelBundle, load_bundle, save_bundle
from ..model.cmdt import CMDT, CMDTConfig
from ..model.motion_space import MotionSpace, fit_motion_space
from .av_offsets import load_offsets
from .windows import WindowSettings, WindowStream, list_segments


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dimitra train", description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--out", required=True, help="run folder (resumed if it holds a run)")
    parser.add_argument("--features", default="whisper-tiny-en")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--closure-weight", type=float, default=1.0,
                        help="weight of the lip-closure term (0 disables it)")
    parser.add_argument("--velocity-weight", type=float, default=1.0)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--voice-variants", type=float, default=0.0,
                        help="share of training windows whose speech features come from a "
                             "changed copy of the audio (another voice, room or channel), "
                             "where the dataset holds them: `dimitra prepare --features "
                             "F F~voice-high F~voice-low F~room F~noisy F~phone`")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="dropout on each block's attention and MLP output (regularises a "
                             "model trained on minutes of video)")
    parser.add_argument("--dev-every", type=int, default=500,
                        help="steps between dev evaluations and checkpoints; 0: checkpoint every "
                             "500 steps without dev scores (dev evaluated elsewhere)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--av-offsets", metavar="JSON",
                        help="correct each training clip's audio-video offset, measured by fold "
                             "models that did not train on it: the JSON of `dimitra eval "
                             "--fold-models ... --json FILE` (backend.training.av_offsets)")
    parser.add_argument("--holdout-fold", type=int, default=0,
                        help="leave-source-out fold K: train without its sources and score on "
                             "them instead of dev (backend.dataset.folds); 0 = all of train")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: all)")
    parser.add_argument("--loader-workers", type=int, default=None,
                        help="processes preparing training windows (default: 0 on CPU, 6 on a "
                             "GPU, where one process cannot keep up: 0.17 s/step at batch 32 on "
                             "an H200, all of it window preparation)")
    return parser.parse_args(argv)


def training_splits(holdout_fold: int) -> tuple[str, str]:
    """(split trained on, split scored during training) for a leave-source-out fold (0: none)."""
    if holdout_fold:
        return f"train-minus-fold-{holdout_fold}", f"fold-{holdout_fold}"
    return "train", "dev"


def fit_space_from_dataset(dataset: Path, window: int, max_frames: int = 40_000,
                           seed: int = 0, split: str = "train") -> MotionSpace:
    """The motion space from the training split (a sample of frames when it is large)."""
    rng = np.random.default_rng(seed)
    canonical, neutrals, poses, clip_neutrals = [], [], [], {}
    segments = list_segments(dataset, split)
    per_segment = max(1, max_frames // max(1, len(segments)))
    for clip, segment in segments:
        motion = load_motion(dataset / segment.file)
        frames = motion.extras["canonical"]
        pick = rng.choice(len(frames), min(per_segment, len(frames)), replace=False)
        canonical.append(frames[pick])
        neutrals.append(np.repeat(motion.extras["neutral"][None], len(pick), 0))
        clip_neutrals.setdefault(clip.clip_id, motion.extras["neutral"])
        for start in rng.integers(0, max(1, len(frames) - window), 8):
            poses.append(motion.pose[start:start + window] - motion.pose[start])
    return fit_motion_space(np.concatenate(canonical), np.concatenate(neutrals),
                            np.concatenate(poses), np.stack(list(clip_neutrals.values())),
                            load_canonical_face())


def learning_rate(step: int, args) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def diffusion_loss(model, schedule: NoiseSchedule, batch: dict, space_tensors: dict, args,
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
    x0 = batch["motion"]
    size = x0.shape[0]
    device = x0.device
    t = torch.randint(0, schedule.steps, (size,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    x_t = schedule.add_noise(x0, t, noise)
    drop_audio = (torch.rand(size, generator=generator) < 0.1).to(device)
    drop_identity = (torch.rand(size, generator=generator) < 0.1).to(device)
    context_mask = batch["context_mask"]
    prediction = model(x_t, t, batch["features"], batch["identity"], x0, context_mask,
                       drop_audio, drop_identity, batch["valid"])
    # Loss on the frames the model has to make: valid ones that were not given as context.
    weight = (batch["valid"].float() * (1 - context_mask))[..., None]
    mse = ((prediction - x0) ** 2 * weight).sum() / (weight.sum() * x0.shape[-1])
    velocity_weight = weight[:, 1:] * weight[:, :-1]
    velocity = (((prediction[:, 1:] - prediction[:, :-1]) - (x0[:, 1:] - x0[:, :-1])) ** 2
                * velocity_weight).sum() / (velocity_weight.sum() * x0.shape[-1]).clamp(min=1)
    # Lip closure: where the real lips touch, the predicted inner-lip gap must be ~0.
    lower = prediction[..., space_tensors["lower_slice"]] * space_tensors["lower_std"]
    gap = batch["neutral_lip_gap"][:, None] + lower @ space_tensors["gap_basis"]   # (B, L, 3)
    closed = batch["closed"].float() * weight[..., 0]
    closure = (torch.relu(gap.norm(dim=-1) - 0.01) ** 2 * closed).sum() / closed.sum().clamp(min=1)
    total = mse + args.velocity_weight * velocity + args.closure_weight * closure
    return {"loss": total, "mse": mse, "velocity": velocity, "closure": closure}


def space_constants(space: MotionSpace, device) -> dict:
    """What the closure loss needs: the lower-face basis rows of inner-lip points 13 and 14."""
    gap_basis = space.lip_gap_basis()
    lower = space.region_slices()["lower"]
    return {"lower_slice": lower,
            "lower_std": torch.tensor(space.motion_std[lower], dtype=torch.float32, device=device),
            "gap_basis": torch.tensor(gap_basis, dtype=torch.float32, device=device)}


def dev_scores(bundle: ModelBundle, dataset: Path, extractor: str,
               split: str = "dev") -> dict[str, float]:
    """Mean EVAL.md metrics on a held-out split, generating as `animate` would (seed 0)."""
    generator = MotionGenerator(bundle)
    rows = []
    for _, segment in list_segments(dataset, split):
        clip = load_motion(dataset / segment.file)
        predicted = predict_prepared_clip(generator, clip, load_features(dataset, segment, extractor),
                                          GenerationOptions())
        rows.append(evaluate(predicted, clip))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric NaN on every clip stays NaN
        means = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    # One number to select checkpoints by; a metric that cannot be measured counts as 0.
    m = {k: float(np.nan_to_num(v)) for k, v in means.items()}
    means["score"] = (m["aperture_corr"] + 0.5 * m["closure_recall"]
                      - 0.5 * abs(m["motion_energy"] - 1) - 0.25 * abs(m["head_motion"] - 1))
    return means


def main(argv=None) -> None:
    args = parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    dataset, out = Path(args.dataset), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    extractor = get_extractor(args.features)
    settings = WindowSettings(augment=not args.no_augment, voice_variants=args.voice_variants)
    train_split, score_split = training_splits(args.holdout_fold)
    resume = (out / "last.safetensors").is_file()
    if resume:
        bundle = load_bundle(out / "last.safetensors")
        space, model = bundle.motion_space, bundle.model
        state = json.loads((out / "train_state.json").read_text())
    else:
        space = fit_space_from_dataset(dataset, settings.window, seed=args.seed, split=train_split)
        model = CMDT(CMDTConfig(region_dims=tuple(space.dims.values()), audio_dim=extractor.dim,
                                identity_dim=len(space.identity_std), width=args.width,
                                depth=args.depth, window=settings.window, context=settings.context,
                                dropout=args.dropout))
        state = {"step": 0, "best_score": -1e9, "seconds": 0.0}
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    if resume:
        saved = load_file(str(out / "train_state.safetensors"))
        ema.load_state_dict({k[4:]: v for k, v in saved.items() if k.startswith("ema.")})
        optimizer_state = json.loads((out / "optimizer.json").read_text())
        for group in optimizer_state["param_groups"]:
            group["params"] = [int(p) for p in group["params"]]
        optimizer_state["state"] = {
            int(index): {name: saved.get(f"opt.{index}.{name}", value) for name, value in entry.items()}
            for index, entry in optimizer_state["state"].items()}
        optimizer.load_state_dict(optimizer_state)
    trained = DistributedDataParallel(model) if distributed else model

    offsets = load_offsets(args.av_offsets) if args.av_offsets else {}
    stream = WindowStream(dataset, train_split, space, args.features, settings,
                          seed=args.seed * 1000 + state["step"] + rank, rank=rank, world=world,
                          offsets=offsets)
    workers = args.loader_workers if args.loader_workers is not None else (
        6 if device.startswith("cuda") else 0)
    loader = iter(DataLoader(stream, batch_size=args.batch, num_workers=workers,
                             persistent_workers=workers > 0, pin_memory=device.startswith("cuda")))
    schedule = NoiseSchedule()
    constants = space_constants(space, device)
    generator = torch.Generator().manual_seed(args.seed * 7919 + state["step"] + rank)
    meta = {"features": args.features, "args": vars(args), "dataset": str(dataset),
            "av_offsets": {k: v for k, v in offsets.items() if v}}
    loss_log = out / "loss.csv"
    if rank == 0 and not resume:
        loss_log.write_text("step,lr,loss,mse,velocity,closure,seconds\n")
        (out / "dev.csv").write_text("")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)

    started = time.perf_counter() - state["seconds"]
    for step in range(state["step"], args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        batch = {k: v.to(device) for k, v in next(loader).items()}
        with autocast:
            losses = diffusion_loss(trained, schedule, batch, constants, args, generator)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for ema_p, p in zip(ema.parameters(), model.parameters()):
                ema_p.lerp_(p, 1 - args.ema)
        done = step + 1
        if rank != 0:
            continue
        if done % min(25, args.dev_every or 25) == 0:
            with loss_log.open("a") as handle:
                handle.write(f"{done},{learning_rate(step, args):.6g}," + ",".join(
                    f"{losses[k].item():.6g}" for k in ("loss", "mse", "velocity", "closure"))
                    + f",{time.perf_counter() - started:.1f}\n")
        if done % (args.dev_every or 500) == 0 or done == args.steps:
            # Every evaluated EMA snapshot is kept (a few MB), so any step can be compared later.
            save_bundle(out / "snapshots" / f"ema_{done:06d}.safetensors", ema, space,
                        args.features, meta | {"step": done})
            scores = {"score": 0.0}
            if args.dev_every:
                # On a CPU copy: generation runs on the CPU, and the EMA must stay on the device.
                scores = dev_scores(ModelBundle(copy.deepcopy(ema).cpu(), space, args.features),
                                    dataset, args.features, score_split)
                _append_dev_row(out / "dev.csv", done, scores)
            print(f"step {done}: loss {losses['loss'].item():.4f} "
                  f"({time.perf_counter() - started:.0f} s) dev " + " ".join(
                      f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
            if scores["score"] > state["best_score"] or not (out / "best.safetensors").exists():
                state["best_score"] = scores["score"]
                save_bundle(out / "best.safetensors", ema, space, args.features,
                            meta | {"step": done, "dev": scores})
            state.update(step=done, seconds=time.perf_counter() - started)
            save_bundle(out / "last.safetensors", model, space, args.features, meta | {"step": done})
            _save_train_state(out, ema, optimizer, state)
    if rank == 0:
        plot_losses(out)
    if distributed:
        # Every rank waits for rank 0's last files: a rank that tears its gloo connections down
        # while rank 0 still writes (slow on a loaded machine) can abort the other.
        dist.barrier()
        dist.destroy_process_group()


def _save_train_state(out: Path, ema, optimizer, state: dict) -> None:
    """EMA weights and optimizer moments as safetensors, the rest as JSON: resumable, no pickle."""
    tensors = {f"ema.{k}": v.detach().float().cpu().contiguous() for k, v in ema.state_dict().items()}
    opt_state = optimizer.state_dict()
    light = {"param_groups": opt_state["param_groups"], "state": {}}
    for index, entry in opt_state["state"].items():
        light["state"][str(index)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"opt.{index}.{name}"] = value.detach().cpu().contiguous()
                light["state"][str(index)][name] = None
            else:
                light["state"][str(index)][name] = float(value)
    save_file(tensors, str(out / "train_state.safetensors"))
    (out / "optimizer.json").write_text(json.dumps(light))
    (out / "train_state.json").write_text(json.dumps(state))


def _append_dev_row(path: Path, step: int, scores: dict) -> None:
    new = path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", *scores])
        if new:
            writer.writeheader()
        writer.writerow({"step": step, **{k: f"{v:.4f}" for k, v in scores.items()}})


def plot_losses(out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader((out / "loss.csv").open()))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    figure, axis = plt.subplots(figsize=(7, 4))
    for key in ("loss", "mse", "velocity", "closure"):
        axis.plot(steps, [float(r[key]) for r in rows], label=key)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.legend()
    axis.set_title("cMDT training loss")
    figure.tight_layout()
    figure.savefig(out / "loss.png", dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
