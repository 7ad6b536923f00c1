"""Training the renderer's mouth network (backend/render/train.py, pairs.py): the options of
its second round (issue 15).

What a user of the training notices: `--augment strong` shows the network other colours,
sizes, sharpness and noise, and keeps each pair's pictures and lip masks in register; a higher
`--open-floor` puts more closed mouths among the pairs; a short run with
`--adversarial-weight` leaves weights the renderer loads, and its discriminator learns (and
none is built without it); `--mse-weight` enters the loss; a bad value gets one line.

The runs here are a few steps on three short real `train` clips prepared from the shared
data (skipped where it is missing); the augmentation tests need no data.
"""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dimitra.backend.render import train
from dimitra.backend.render.clip_frames import clip_frames, clip_video
from dimitra.backend.render.mouth_net import PATCH, MouthNet, MouthPatch, feather
from dimitra.backend.render.pairs import Pairs, build_pairs, driving_frame_odds, train_segments
from dimitra.backend.render.renderer import PhotorealRenderer
from dimitra.retarget.face import topology
from tests.conftest import TALKING_FACES

TRAIN_CLIPS = ("deep_avsr_00002", "deep_avsr_00006", "deep_avsr_00008")   # 35, 21, 74 frames
PAIRS_PER_CLIP = 6
# Every run: a few steps of two pairs, one clip held out (the budget is the steps, not time).
SHORT_RUN = ["--steps", "8", "--batch", "2", "--holdout", "1", "--minutes", "10",
             "--augment", "strong", "--seed", "0"]


# ---------------------------------------------------------------------------------------------
# Data and runs
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three short real `train` clips (LRS2) prepared from the shared data."""
    from dimitra.backend.dataset.prepare import run_prepare

    manifest = TALKING_FACES / "manifest.csv"
    if not manifest.is_file():
        pytest.skip("the shared talking-face clips are not on this machine")
    with manifest.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["clip_id"] in TRAIN_CLIPS]
    assert {row["split"] for row in rows} == {"train"}
    subset = tmp_path_factory.mktemp("manifest") / "manifest.csv"
    with subset.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "video_path": str(TALKING_FACES / row["video_path"]),
                             "audio_path": str(TALKING_FACES / row["audio_path"])})
    folder = tmp_path_factory.mktemp("render_train")
    records = run_prepare([subset], folder, jobs=1, features=(), progress=False)
    assert sorted(r.clip_id for r in records if r.status == "ok") == list(TRAIN_CLIPS)
    return folder


class RecordingDiscriminator(train.PatchDiscriminator):
    """The real discriminator, remembering each one built and its weights at birth."""

    built: list["RecordingDiscriminator"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.at_birth = {k: v.detach().clone() for k, v in self.state_dict().items()}
        RecordingDiscriminator.built.append(self)


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """Three short runs on the same pairs, in this process, each with the discriminators it
    built: `plain` (builds the pairs; --mse-weight 2; shorter than one evaluation; --install
    into a stand-in for the shipped weights), `adversarial` (the discriminator from half way)
    and `critic_never_joins` (the same, starting at the end)."""
    folder = tmp_path_factory.mktemp("runs")
    pairs_file = folder / "pairs.npz"
    installed = folder / "installed" / "mouth_net.onnx"
    argv = {
        "plain": ["--pairs-per-clip", str(PAIRS_PER_CLIP), "--open-floor", "1.0",
                  "--mse-weight", "2", "--steps", "6", "--eval-every", "100", "--install"],
        "adversarial": ["--adversarial-weight", "0.5", "--adversarial-start", "0.5",
                        "--eval-every", "8"],
        "critic_never_joins": ["--adversarial-weight", "0.5", "--adversarial-start", "1.0",
                               "--eval-every", "8"],
    }
    threads = torch.get_num_threads()
    results = {}
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(train, "PatchDiscriminator", RecordingDiscriminator)
            patch.setattr(train, "WEIGHTS", installed)
            for name, extra in argv.items():
                RecordingDiscriminator.built = []
                out = folder / name
                assert train.main([str(dataset), "--out", str(out), "--pairs", str(pairs_file)]
                                  + SHORT_RUN + extra) == 0
                results[name] = {"out": out, "critics": RecordingDiscriminator.built,
                                 "summary": json.loads((out / "summary.json").read_text())}
    finally:
        torch.set_num_threads(threads)   # main sets one thread for the whole process
    return {"runs": results, "pairs": pairs_file, "installed": installed}


# ---------------------------------------------------------------------------------------------
# --augment strong
# ---------------------------------------------------------------------------------------------

def pictures(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3, P, P): warped, reference and target of each pair."""
    return torch.stack([inputs[:, :3], inputs[:, 3:6], target], dim=1)


def same_in_all(picture: torch.Tensor, masks: torch.Tensor, count: int = 200):
    """`count` pairs whose three pictures are `picture` (3, P, P) and whose two lip masks are
    `masks` (2, P, P), as (inputs, target)."""
    inputs = torch.cat([picture, picture, masks])[None].repeat(count, 1, 1, 1)
    return inputs, picture[None].repeat(count, 1, 1, 1)


def test_strong_augmentation_casts_colour_alike_on_a_pairs_pictures_and_adds_noise_apart():
    """A grey picture stays flat under mirror, zoom and blur, so what changes is the colour
    (a per-channel gain and a gamma, the same for warped, reference and target) and, in about
    a third of the pairs, the noise (sigma up to 0.02, drawn apart for each picture)."""
    torch.manual_seed(0)
    grey = torch.full((3, PATCH, PATCH), 0.5)
    inputs, target = train.augment_strong(*same_in_all(grey, torch.zeros(2, PATCH, PATCH)))
    images = pictures(inputs, target)                                      # (N, 3, 3, P, P)
    colour = images.mean(dim=(-1, -2))                                     # (N, 3 pictures, 3)
    # gain 0.85-1.15 twice (brightness, cast) and gamma 0.8-1.25 on 0.5: 0.30-0.76
    assert colour.min() > 0.29 and colour.max() < 0.77
    assert colour.min() < 0.4 and colour.max() > 0.65                     # the range is used
    assert (colour - colour[:, :1]).abs().max() < 0.01                     # alike in a pair
    cast = colour[:, 0].amax(dim=1) - colour[:, 0].amin(dim=1)             # across R, G, B
    assert (cast > 0.02).float().mean() > 0.8                              # a cast, not grey

    spread = images.std(dim=(-1, -2)).amax(dim=2)                          # (N, 3 pictures)
    noisy = spread[:, 0] > 1e-3
    assert 0.2 < noisy.float().mean() < 0.47
    assert spread.max() < 0.021
    assert ((spread > 1e-3) == noisy[:, None]).all()   # all of a pair's pictures, or none
    warped_noise = (images[noisy, 0] - colour[noisy, 0, :, None, None]).flatten(1)
    target_noise = (images[noisy, 2] - colour[noisy, 2, :, None, None]).flatten(1)
    correlation = torch.nn.functional.cosine_similarity(warped_noise, target_noise, dim=1)
    assert correlation.abs().max() < 0.1                                   # drawn apart


def test_strong_augmentation_moves_pictures_and_lip_masks_together():
    """A disk left of the patch's centre, in every picture and both masks: mirrored in about
    half the pairs, zoomed 0.88-1.12 and shifted up to 4 px, and wherever it lands, the
    warped, reference and target pictures and the lip masks land on it together."""
    torch.manual_seed(1)
    y, x = torch.meshgrid(torch.arange(PATCH) + 0.5, torch.arange(PATCH) + 0.5, indexing="ij")
    disk = ((x - 30) ** 2 + (y - 50) ** 2 < 12 ** 2).float()
    inputs, target = train.augment_strong(*same_in_all(disk.expand(3, -1, -1),
                                                       disk.expand(2, -1, -1)))

    def centre(image: torch.Tensor) -> torch.Tensor:
        """(..., P, P) -> (..., 2) x, y of the bright part, px."""
        bright = (image > 0.35).float()
        area = bright.sum(dim=(-1, -2))
        return torch.stack([(bright * x).sum(dim=(-1, -2)) / area,
                            (bright * y).sum(dim=(-1, -2)) / area], dim=-1)

    images = pictures(inputs, target)[:, :, 1]                             # green, (N, 3, P, P)
    masks = inputs[:, 6:]                                                  # (N, 2, P, P)
    where = centre(torch.cat([images, masks], dim=1))                      # (N, 5, 2)
    assert (where - where[:, 4:]).abs().max() < 0.5                        # in register
    assert masks.min() >= 0 and masks.max() <= 1

    mirrored = where[:, 4, 0] > PATCH / 2
    assert 0.35 < mirrored.float().mean() < 0.65
    size = (masks[:, 1] > 0.5).float().sum(dim=(1, 2)) / (disk > 0.5).sum()
    assert size.min() > 0.88 ** 2 - 0.05 and size.max() < 1.12 ** 2 + 0.05
    assert size.min() < 0.85 and size.max() > 1.15                        # zoomed both ways
    unzoomed_x = torch.where(mirrored, PATCH - 30.0, 30.0)
    moved = torch.hypot(where[:, 4, 0] - unzoomed_x, where[:, 4, 1] - 50)
    assert (moved > 1).float().mean() > 0.7 and moved.max() < 4 * 1.5 + 18 * 0.12 + 1


def test_strong_augmentation_blurs_about_a_third_of_the_pairs_pictures_not_their_masks():
    """A random texture in pictures and masks: the pictures are colour-cast copies of the mask
    except in the blurred pairs, whose three pictures lose their fine detail alike."""
    torch.manual_seed(2)
    texture = (torch.rand(PATCH, PATCH, generator=torch.Generator().manual_seed(3)) < 0.5)
    texture = texture.float()
    inputs, target = train.augment_strong(*same_in_all(texture.expand(3, -1, -1),
                                                       texture.expand(2, -1, -1), 300))

    def detail(image: torch.Tensor) -> torch.Tensor:
        """(..., P, P) -> (...): mean absolute step between neighbours, per unit of level."""
        steps = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(-1, -2))
        return steps / image.mean(dim=(-1, -2))

    kept = detail(pictures(inputs, target)[:, :, 1]) / detail(inputs[:, 6:7])   # (N, 3)
    blurred = kept[:, 0] < 0.95     # sigma 0.4 px keeps about 0.8 of it, 1.4 px about 0.15
    assert 0.2 < blurred.float().mean() < 0.47
    assert (kept[~blurred] > 0.98).all()                       # sharp pairs: only noise added
    assert (kept[blurred] < 0.85).all() and kept[blurred].min() < 0.3
    assert ((kept < 0.95) == blurred[:, None]).all()           # the three pictures alike


def test_strong_augmentation_keeps_shapes_and_range_and_repeats_under_a_seed(runs):
    """On real pairs: the batch keeps its shapes and [0, 1], the caller's tensors are left as
    they were, the same torch seed gives the same batch (train.py seeds it with --seed) and
    another seed another one."""
    pairs = Pairs.load(runs["pairs"])
    inputs, target = train.to_inputs(pairs, np.arange(len(pairs.clip)))
    before = inputs.clone(), target.clone()
    torch.manual_seed(7)
    first = train.augment_strong(inputs, target)
    torch.manual_seed(7)
    again = train.augment_strong(inputs, target)
    torch.manual_seed(8)
    other = train.augment_strong(inputs, target)
    assert first[0].shape == inputs.shape and first[1].shape == target.shape
    assert first[0].dtype == first[1].dtype == torch.float32
    assert all(0 <= part.min() and part.max() <= 1 for part in first)
    assert torch.equal(inputs, before[0]) and torch.equal(target, before[1])
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert (first[1] - other[1]).abs().mean() > 0.01
    assert (first[1] - target).abs().mean() > 0.01                         # it did change


# ---------------------------------------------------------------------------------------------
# open_floor and --pairs-per-clip
# ---------------------------------------------------------------------------------------------

def test_open_floor_sets_how_much_likelier_the_widest_opening_is_than_a_closed_mouth():
    opening = np.array([0.0, 0.0, 0.3, 1.0, 2.0])                           # px; 2 is the widest
    for floor, ratio in ((0.2, 6.0), (0.5, 3.0), (1.0, 2.0)):
        odds = driving_frame_odds(opening, floor)
        assert odds.sum() == pytest.approx(1.0)
        assert odds[4] / odds[0] == pytest.approx(ratio)
        assert np.all(np.diff(odds[1:]) > 0)                               # wider: likelier
    assert driving_frame_odds(opening, 0.0)[:2].tolist() == [0.0, 0.0]


def closed_share(masks: np.ndarray) -> float:
    """The share of pairs, by their lip masks (N, 2, P, P), whose driving inner-lip outline
    covers under 1 % of the patch: the lips (nearly) together."""
    return float((masks[:, 0].astype(np.float32).mean(axis=(1, 2)) < 0.01).mean())


def test_a_higher_open_floor_puts_more_closed_mouths_among_the_pairs(dataset):
    """Real clips, 12 pairs a clip drawn with four seeds: about 12 % closed mouths by the
    opening alone, about 27 % at an open_floor of 1.0."""
    def masks(floor: float) -> np.ndarray:
        return np.concatenate([build_pairs(dataset, 12, seed, floor, log=lambda line: None).masks
                               for seed in range(4)])
    assert closed_share(masks(1.0)) > closed_share(masks(0.0)) + 0.08


def test_the_odds_on_real_openings_and_pairs_per_clip(dataset, runs):
    """On the real clips, the chance of drawing a closed frame (under a fifth of the clip's
    widest opening) grows with open_floor; and the pairs file the `plain` run built holds
    --pairs-per-clip pairs of each clip."""
    for _, segment in train_segments(dataset):
        with np.load(dataset / segment["file"]) as data:
            landmarks = data["landmarks"]                                   # (T, 478, 3) px
        opening = np.linalg.norm(landmarks[:, topology.UPPER_INNER_LIP, :2]
                                 - landmarks[:, topology.LOWER_INNER_LIP, :2], axis=1)
        closed = opening < 0.2 * opening.max()
        chance = [driving_frame_odds(opening, floor)[closed].sum() for floor in (0.0, 0.2, 1.0)]
        assert chance[0] < chance[1] < chance[2] < closed.mean()
    pairs = Pairs.load(runs["pairs"])
    assert sorted(pairs.clip_ids) == sorted(TRAIN_CLIPS)
    assert np.bincount(pairs.clip).tolist() == [PAIRS_PER_CLIP] * len(TRAIN_CLIPS)
    plain = runs["runs"]["plain"]["summary"]
    assert plain["training_pairs"] == PAIRS_PER_CLIP * (len(TRAIN_CLIPS) - 1)


# ---------------------------------------------------------------------------------------------
# Short real runs: the discriminator, the weights, --mse-weight
# ---------------------------------------------------------------------------------------------

def test_with_an_adversarial_weight_the_discriminator_is_built_and_learns(runs):
    run = runs["runs"]["adversarial"]
    (critic,) = run["critics"]
    assert run["summary"]["critic_steps"] == 4                  # from half of the 8 steps
    assert "critic" in run["summary"]["log"][-1]
    changed = [not torch.equal(value, critic.at_birth[name])
               for name, value in critic.state_dict().items()]
    assert all(changed)


def test_the_discriminator_waits_for_adversarial_start_and_its_term_reaches_the_network(runs):
    """Started at the end, the discriminator is built but never trained; the two runs are
    alike but for its term, so the network's weights differ only through it."""
    waiting = runs["runs"]["critic_never_joins"]
    (critic,) = waiting["critics"]
    assert waiting["summary"]["critic_steps"] == 0
    assert all(torch.equal(value, critic.at_birth[name])
               for name, value in critic.state_dict().items())
    joined = load_file(runs["runs"]["adversarial"]["out"] / "best.safetensors")
    alone = load_file(waiting["out"] / "best.safetensors")
    assert joined.keys() == alone.keys()
    assert any(not torch.equal(joined[name], alone[name]) for name in joined)


def test_without_an_adversarial_weight_no_discriminator_is_built(runs):
    plain = runs["runs"]["plain"]
    assert plain["critics"] == []
    assert plain["summary"]["critic_steps"] == 0
    assert all("critic" not in entry for entry in plain["summary"]["log"])


def test_an_adversarial_runs_weights_load_into_the_renderer(runs, dataset):
    """The ONNX file the run wrote is the network of its safetensors (the discriminator is not
    in them), and the renderer paints a real clip's frame with it: the warp outside the mouth
    patch, the network's change inside."""
    out = runs["runs"]["adversarial"]["out"]
    network = train.MouthUNet()
    network.load_state_dict(load_file(out / "best.safetensors"))          # strict: nothing else
    network.eval()
    onnx = MouthNet(out / "mouth_net.onnx", threads=1)

    clip, segment = train_segments(dataset)[0]
    with np.load(dataset / segment["file"]) as data:
        landmarks = data["landmarks"].astype(np.float64)                    # (T, 478, 3) px
    (first_frame,) = clip_frames(clip_video(dataset, clip["video"]), segment["start_s"], 25.0, 1)
    renderer = PhotorealRenderer(first_frame, landmarks[0], 256, onnx)
    opening = np.linalg.norm(landmarks[:, topology.UPPER_INNER_LIP]
                             - landmarks[:, topology.LOWER_INNER_LIP], axis=1)
    driving = landmarks[int(np.argmax(opening))]
    painted = renderer.render(driving)
    renderer.mouth_net = None
    warped = renderer.render(driving)
    assert painted.shape == warped.shape == (256, 256, 3) and painted.dtype == np.uint8

    patch = MouthPatch(renderer.crop.to_crop(landmarks[0]))
    to_patch = patch.to_patch(renderer.crop.to_crop(driving))
    inside = np.zeros((256, 256), bool)
    corner = (np.array([[0, 0], [PATCH, PATCH]]) - to_patch[:, 2]) / to_patch[0, 0]   # crop px
    (x0, y0), (x1, y1) = np.floor(corner[0]).astype(int) - 1, np.ceil(corner[1]).astype(int) + 1
    inside[max(y0, 0):y1, max(x0, 0):x1] = True
    assert np.array_equal(painted[~inside], warped[~inside])
    assert np.abs(painted[inside].astype(int) - warped[inside]).max() >= 1

    pairs = Pairs.load(runs["pairs"])
    inputs, _ = train.to_inputs(pairs, np.arange(4))
    with torch.no_grad():
        by_torch = network(inputs).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    by_onnx = np.stack([onnx(example) for example in inputs.numpy()])
    assert np.abs(by_onnx - by_torch).max() < 1e-4
    assert np.abs(by_torch - inputs[:, :3].permute(0, 2, 3, 1).numpy()).max() > 1e-3  # trained


def test_a_run_shorter_than_one_evaluation_still_leaves_weights_and_installs_them(runs):
    plain = runs["runs"]["plain"]
    assert plain["summary"]["steps"] == 6
    assert [entry["step"] for entry in plain["summary"]["log"]] == [6]
    assert np.isfinite(plain["summary"]["best_held_out"])
    assert runs["installed"].read_bytes() == (plain["out"] / "mouth_net.onnx").read_bytes()


def test_the_mse_weight_enters_the_loss(runs):
    """The warp alone's held-out loss is the same pairs scored twice: with --mse-weight 2 it is
    the loss without it plus twice the feather-weighted squared error."""
    with_mse = runs["runs"]["plain"]["summary"]
    without = runs["runs"]["adversarial"]["summary"]
    assert with_mse["held_out_clips"] == without["held_out_clips"]
    pairs = Pairs.load(runs["pairs"])
    held = np.flatnonzero(np.isin(pairs.clip, [pairs.clip_ids.index(c)
                                               for c in with_mse["held_out_clips"]]))
    inputs, target = train.to_inputs(pairs, held)
    weight = torch.from_numpy(feather())[None, None]
    squared = float(((inputs[:, :3] - target) ** 2 * weight).sum() / (weight.sum() * 3 * len(held)))
    assert squared > 1e-4
    assert with_mse["log"][-1]["warp_alone"] == pytest.approx(
        without["log"][-1]["warp_alone"] + 2 * squared, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Bad values
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value"), [
    ("--adversarial-weight", "-0.5"), ("--mse-weight", "-1"), ("--mse-weight", "nan"),
    ("--open-floor", "1.5"), ("--open-floor", "-0.1"), ("--open-floor", "lots"),
    ("--adversarial-start", "2"), ("--pairs-per-clip", "0")])
def test_a_bad_value_gets_one_line_naming_it_and_nothing_is_written(option, value, tmp_path,
                                                                    capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train.main([str(tmp_path / "dataset"), "--out", str(out), option, value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert option in err and value in err
    assert not out.exists()


def test_holding_out_every_clip_gets_one_line_from_the_command(runs, tmp_path):
    """As a user runs it: one line on stderr, a failed status, no weights."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "dimitra.backend.render.train", str(tmp_path / "unused"),
         "--out", str(out), "--pairs", str(runs["pairs"]), "--holdout", "3"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "--holdout 3" in err and "3 train clips" in err
    assert not (out / "mouth_net.onnx").exists()


def test_build_pairs_refuses_an_open_floor_outside_zero_to_one(tmp_path):
    with pytest.raises(ValueError, match="open_floor 1.5"):
        build_pairs(tmp_path, open_floor=1.5)
