"""Train the renderer's mouth network: `python -m dimitra.backend.render.train DATASET --out RUN`.

Straight-line: build (or load) the self-reenactment pairs of the `train` split (pairs.py),
hold out whole train clips for choosing the checkpoint (never `dev` or `unseen`), train with
L1 + SSIM on the feathered patch the renderer lays back (`--augment strong` adds colour,
scale, blur and noise; `--adversarial-weight` a patch discriminator trained from scratch),
keep the best held-out weights (held-out loss: the training loss without the discriminator's
term), and write them as safetensors and as the ONNX file the renderer runs (`--install`
copies it to backend/render/weights/). One torch thread by default: the machine is shared.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ...retarget.atomic_file import atomic_path
from .mouth_net import INPUT_CHANNELS, PATCH, WEIGHTS, feather
from .pairs import Pairs, build_pairs

CHANNELS = (16, 32, 64, 128, 256)   # per level; the patch is halved four times (96 -> 6)
PROG = "python -m dimitra.backend.render.train"


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------

def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.GroupNorm(4, outputs),
                         nn.SiLU(), nn.Conv2d(outputs, outputs, 3, padding=1), nn.SiLU())


class MouthUNet(nn.Module):
    """A small U-Net: (N, 8, 96, 96) inputs in [0, 1] -> (N, 3, 96, 96) the repainted patch.

    It predicts a change to the warped patch (input channels 0-2); the last convolution starts
    at zero, so before training the output is the warp alone.
    """

    def __init__(self, channels: tuple[int, ...] = CHANNELS):
        super().__init__()
        self.down = nn.ModuleList()
        previous = INPUT_CHANNELS
        for width in channels:
            self.down.append(_block(previous, width))
            previous = width
        self.up = nn.ModuleList()
        for width, skip in zip(reversed(channels[:-1]), reversed(channels[:-1]), strict=True):
            self.up.append(_block(previous + skip, width))
            previous = width
        self.out = nn.Conv2d(previous, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        skips = []
        x = inputs
        for level, block in enumerate(self.down):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skips.pop()], dim=1))
        return inputs[:, :3] + self.out(x)                                  # (N, 3, 96, 96)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of (N, 3, H, W) images in [0, 1] (7x7 box windows), (N, 3, H, W)."""
    mean = nn.AvgPool2d(7, 1, 3, count_include_pad=False)
    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a ** 2
    var_b = mean(b * b) - mu_b ** 2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1)
                                                       * (var_a + var_b + c2))


def patch_loss(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
               mse_weight: float = 0.0) -> torch.Tensor:
    """L1 + 0.5 (1 - SSIM) (+ mse_weight MSE), each weighted by `weight` (1, 1, P, P)."""
    total = weight.sum() * 3 * len(output)
    l1 = ((output - target).abs() * weight).sum() / total
    ssim = ((1 - ssim_map(output, target)) * weight).sum() / total
    mse = ((output - target) ** 2 * weight).sum() / total
    return l1 + 0.5 * ssim + mse_weight * mse


def as_deployed(output: torch.Tensor, warped: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The patch as the renderer shows it: the network's change to the warp, feathered."""
    return warped + weight * (output - warped)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def to_inputs(pairs: Pairs, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 8, P, P) inputs and (N, 3, P, P) targets, float32 in [0, 1], the order of
    mouth_net.network_inputs."""
    def rgb(array):
        return torch.from_numpy(array[rows]).permute(0, 3, 1, 2).float() / 255.0
    inputs = torch.cat([rgb(pairs.warped), rgb(pairs.reference),
                        torch.from_numpy(pairs.masks[rows].astype(np.float32))], dim=1)
    return inputs, rgb(pairs.target)


def augment(inputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror half the batch (a face's mirror is a face) and jitter brightness alike."""
    flip = torch.rand(len(inputs)) < 0.5
    inputs, target = inputs.clone(), target.clone()
    inputs[flip] = inputs[flip].flip(-1)
    target[flip] = target[flip].flip(-1)
    gain = 0.85 + 0.3 * torch.rand(len(inputs), 1, 1, 1)
    inputs[:, :6] = (inputs[:, :6] * gain).clamp(0, 1)
    return inputs, (target * gain).clamp(0, 1)


def augment_strong(inputs: torch.Tensor, target: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Other cameras and faces than train's: on top of `augment`, per pair and alike for all
    its pictures (warped, reference, target; the lip masks move with them) a colour cast
    (per-channel gain 0.85-1.15, gamma 0.8-1.25), a zoom of 0.88-1.12 with a shift of up to
    4 px, a blur (a third of the pairs, sigma 0.4-1.4 px: soft sources) and sensor noise (a
    third, sigma up to 0.02, drawn apart for each picture)."""
    inputs, target = augment(inputs, target)
    count = len(inputs)
    images = torch.cat([inputs[:, :6], target], dim=1).reshape(count, 3, 3, PATCH, PATCH)
    cast = 0.85 + 0.3 * torch.rand(count, 1, 3, 1, 1)
    gamma = torch.exp((torch.rand(count, 1, 1, 1, 1) - 0.5) * 2 * math.log(1.25))
    images = (images.clamp(1e-4, 1) ** gamma * cast).clamp(0, 1).reshape(count, 9, PATCH, PATCH)
    everything = torch.cat([images, inputs[:, 6:]], dim=1)                  # (N, 11, P, P)
    zoom = 0.88 + 0.24 * torch.rand(count)
    shift = (torch.rand(count, 2) - 0.5) * 2 * (4 / (PATCH / 2))
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(everything.shape), align_corners=False)
    everything = F.grid_sample(everything, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
    blurred = torch.rand(count) < 1 / 3
    if blurred.any():
        sigma = 0.4 + torch.rand(int(blurred.sum())) * 1.0
        offsets = torch.arange(-3, 4, dtype=torch.float32)
        kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)                 # (B, 7)
        part = everything[blurred, :9]
        batch = len(part)
        flat = part.reshape(1, batch * 9, PATCH, PATCH)
        weights = kernel.repeat_interleave(9, dim=0)                        # (B*9, 7)
        flat = F.conv2d(F.pad(flat, (3, 3, 0, 0), mode="replicate"),
                        weights[:, None, None, :], groups=batch * 9)
        flat = F.conv2d(F.pad(flat, (0, 0, 3, 3), mode="replicate"),
                        weights[:, None, :, None], groups=batch * 9)
        everything[blurred, :9] = flat.reshape(batch, 9, PATCH, PATCH)
    noisy = (torch.rand(count) < 1 / 3).float()[:, None, None, None]
    noise = torch.randn(count, 9, PATCH, PATCH) * 0.02 * torch.rand(count, 1, 1, 1) * noisy
    everything[:, :9] = (everything[:, :9] + noise).clamp(0, 1)
    return (torch.cat([everything[:, :6], everything[:, 9:]], dim=1), everything[:, 6:9])


class PatchDiscriminator(nn.Module):
    """Real or made, per 38 px window of the mouth: (N, 5, 96, 96) a patch and its driving lip
    masks -> (N, 1, 10, 10) scores. Trained from scratch with the network (no
    pretrained network is downloadable here); used only in training, never exported."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(5, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(4, 2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.GroupNorm(4, 4 * width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 3, 1, 0))

    def forward(self, patch: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([patch, masks], dim=1))


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def export_onnx(model: MouthUNet, path: str | Path) -> Path:
    model.eval()
    example = torch.zeros(1, INPUT_CHANNELS, PATCH, PATCH)
    with atomic_path(path) as tmp:
        torch.onnx.export(model, example, str(tmp), dynamo=False, input_names=["inputs"],
                          output_names=["patch"], opset_version=17)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

class _OneLineParser(argparse.ArgumentParser):
    """Bad options get one line naming the option and the value, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _number(kind: type, low: float, high: float = math.inf, what: str = ""):
    """An argparse type: a finite `kind` in [low, high]; `what` says the range in words."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text}: give {what}")
        return value
    return parse


POSITIVE_INT = _number(int, 1, what="a whole number of at least 1")
NON_NEGATIVE = _number(float, 0.0, what="a number of at least 0 (0: off)")
POSITIVE = _number(float, 1e-12, what="a number above 0")
SHARE = _number(float, 0.0, 1.0, what="a share between 0 and 1")


def parse_args(argv=None) -> argparse.Namespace:
    parser = _OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="prepared dataset (only its train split is read)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--pairs", help="pairs file: read if it exists, else built and written")
    parser.add_argument("--pairs-per-clip", type=POSITIVE_INT, default=160,
                        help="pairs drawn from each train clip (when the pairs are built)")
    parser.add_argument("--open-floor", type=SHARE, default=0.2,
                        help="frame weight floor, as a share of the clip's widest opening, when "
                             "the pairs are built: higher draws closed mouths more often")
    parser.add_argument("--minutes", type=POSITIVE, default=25.0, help="training time budget")
    parser.add_argument("--steps", type=POSITIVE_INT,
                        help="stop after this many steps if the time budget lasts that long "
                             "(the schedule then runs over whichever ends first)")
    parser.add_argument("--eval-every", type=POSITIVE_INT, default=100,
                        help="steps between held-out evaluations (the checkpoint is chosen "
                             "among them)")
    parser.add_argument("--batch", type=POSITIVE_INT, default=16)
    parser.add_argument("--lr", type=POSITIVE, default=2e-3)
    parser.add_argument("--holdout", type=POSITIVE_INT, default=3,
                        help="train clips held out to choose the checkpoint")
    parser.add_argument("--threads", type=POSITIVE_INT, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mse-weight", type=NON_NEGATIVE, default=0.0,
                        help="weight of an MSE term beside L1 and SSIM")
    parser.add_argument("--deployed-blend", action="store_true",
                        help="score the patch as the renderer lays it (the change feathered, "
                             "every pixel counted) instead of the raw patch weighted by the "
                             "feather")
    parser.add_argument("--augment", choices=("light", "strong"), default="light",
                        help="light: mirror and brightness; strong: also colour cast, zoom, "
                             "blur and noise")
    parser.add_argument("--adversarial-weight", type=NON_NEGATIVE, default=0.0,
                        help="weight of a patch discriminator's hinge loss (0: none)")
    parser.add_argument("--adversarial-start", type=SHARE, default=0.2,
                        help="share of the time budget (or of --steps) before the "
                             "discriminator joins")
    parser.add_argument("--install", action="store_true",
                        help=f"copy the best ONNX file to {WEIGHTS}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.pairs and Path(args.pairs).is_file():
        pairs = Pairs.load(args.pairs)
    else:
        pairs = build_pairs(args.dataset, args.pairs_per_clip, args.seed, args.open_floor)
        if args.pairs:
            pairs.save(args.pairs)
    if args.holdout >= len(pairs.clip_ids):
        raise SystemExit(f"{PROG}: --holdout {args.holdout}: the pairs come from "
                         f"{len(pairs.clip_ids)} train clips; hold out fewer, so that some are "
                         "left to train on")
    rng = np.random.default_rng(args.seed)
    held_clips = rng.choice(len(pairs.clip_ids), args.holdout, replace=False)
    held = np.isin(pairs.clip, held_clips)
    train_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
    print(f"{len(train_rows)} training pairs, {len(held_rows)} held out from "
          f"{[pairs.clip_ids[i] for i in held_clips]}")

    model = MouthUNet()
    parameters = sum(p.numel() for p in model.parameters())
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    weight = torch.from_numpy(feather())[None, None]
    held_inputs, held_target = to_inputs(pairs, held_rows)

    augmenter = augment_strong if args.augment == "strong" else augment
    critic = PatchDiscriminator() if args.adversarial_weight > 0 else None
    critic_optimiser = (torch.optim.Adam(critic.parameters(), lr=args.lr / 4, betas=(0.5, 0.99))
                        if critic is not None else None)

    def loss_of(output: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if args.deployed_blend:
            return patch_loss(as_deployed(output, inputs[:, :3], weight), target,
                              torch.ones_like(weight), args.mse_weight)
        return patch_loss(output, target, weight, args.mse_weight)

    def held_out_loss() -> tuple[float, float]:
        """(the network's, the warp alone's) loss on the held-out clips."""
        model.eval()
        with torch.no_grad():
            losses = [(loss_of(model(held_inputs[i:i + 64]), held_inputs[i:i + 64],
                               held_target[i:i + 64]),
                       loss_of(held_inputs[i:i + 64, :3], held_inputs[i:i + 64],
                               held_target[i:i + 64]))
                      for i in range(0, len(held_rows), 64)]
        model.train()
        return tuple(float(np.mean([pair[k] for pair in losses])) for k in (0, 1))

    def evaluate_and_keep() -> None:
        """Log the held-out loss; keep the weights (safetensors and ONNX) when it is the best."""
        nonlocal best
        held_loss, warp_loss = held_out_loss()
        elapsed = time.perf_counter() - started
        log.append({"step": step, "seconds": round(elapsed), "train": loss.item(),
                    "held_out": held_loss, "warp_alone": warp_loss})
        if critic_steps:
            log[-1]["critic"] = critic_loss.item()
        print(json.dumps(log[-1]), flush=True)
        if held_loss < best:
            best = held_loss
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      str(out / "best.safetensors"), metadata={"step": str(step)})
            export_onnx(model, out / "mouth_net.onnx")
            model.train()

    budget_s = args.minutes * 60
    started = time.perf_counter()
    step, best, log, critic_steps = 0, math.inf, [], 0
    while time.perf_counter() - started < budget_s and step < (args.steps or math.inf):
        progress = (time.perf_counter() - started) / budget_s
        if args.steps:
            progress = max(progress, step / args.steps)
        for group in optimiser.param_groups:   # cosine decay over the budget
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        inputs, target = augmenter(*to_inputs(pairs, rng.choice(train_rows, args.batch)))
        output = model(inputs)
        loss = loss_of(output, inputs, target)
        adversarial = critic is not None and progress >= args.adversarial_start
        if adversarial:   # hinge loss; the generator is scored on the feathered patch
            shown = as_deployed(output, inputs[:, :3], weight)
            loss = loss - args.adversarial_weight * critic(shown, inputs[:, 6:]).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if adversarial:
            # The real patch laid over the warp the same way: outside the feather both are the
            # warp, so the critic can only judge what the network paints.
            real = as_deployed(target, inputs[:, :3], weight)
            critic_loss = (F.relu(1 - critic(real, inputs[:, 6:])).mean()
                           + F.relu(1 + critic(shown.detach(), inputs[:, 6:])).mean())
            critic_optimiser.zero_grad()
            critic_loss.backward()
            critic_optimiser.step()
            critic_steps += 1
        step += 1
        if step % args.eval_every == 0:
            evaluate_and_keep()
    if step and best == math.inf:   # a run shorter than one evaluation leaves weights too
        evaluate_and_keep()
    summary = {"steps": step, "parameters": parameters, "best_held_out": best,
               "critic_steps": critic_steps,
               "minutes": round((time.perf_counter() - started) / 60, 1),
               "held_out_clips": [pairs.clip_ids[i] for i in held_clips],
               "training_pairs": int(len(train_rows)), "args": vars(args), "log": log}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.install:
        WEIGHTS.parent.mkdir(exist_ok=True)
        WEIGHTS.write_bytes((out / "mouth_net.onnx").read_bytes())
    print(f"{step} steps, {parameters} parameters, best held-out loss {best:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
