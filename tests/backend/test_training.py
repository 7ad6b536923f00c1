"""`dimitra train`: runs, writes what it promises, resumes where it stopped, and learns."""

import csv
import json
import shutil

import numpy as np
import pytest

from dimitra.backend.dataset.prepare import run_prepare
from dimitra.backend.model.checkpoint import load_bundle
from dimitra.backend.training.train import main as train


@pytest.fixture(scope="module")
def tiny_dataset(talking_clip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_data")
    train_clip, dev_clip = folder / "speaker_a.mp4", folder / "speaker_b.mp4"
    shutil.copy(talking_clip[0], train_clip)
    shutil.copy(talking_clip[0], dev_clip)
    dataset = folder / "dataset"
    run_prepare([train_clip], dataset, jobs=1, split="train", progress=False)
    run_prepare([dev_clip], dataset, jobs=1, split="dev", progress=False)
    return dataset


def run(dataset, out, steps, extra=()):
    train([str(dataset), "--out", str(out), "--steps", str(steps), "--batch", "4",
           "--dev-every", "10", "--warmup", "5", "--width", "32", "--depth", "1", "--lr", "3e-3",
           *extra])


def test_training_writes_checkpoints_curves_and_resumes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    run(tiny_dataset, out, 10)
    for name in ("last.safetensors", "best.safetensors", "loss.csv", "dev.csv", "loss.png",
                 "train_state.safetensors", "train_state.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "train_state.json").read_text())["step"] == 10
    run(tiny_dataset, out, 20)  # resumes at step 10
    steps = [int(r["step"]) for r in csv.DictReader((out / "loss.csv").open())]
    assert steps == sorted(set(steps)) and steps[-1] == 20
    dev = list(csv.DictReader((out / "dev.csv").open()))
    assert [int(r["step"]) for r in dev] == [10, 20]
    bundle = load_bundle(out / "best.safetensors")
    assert bundle.feature_extractor == "whisper-tiny-en"


def test_training_is_reproducible_and_learns(tiny_dataset, tmp_path):
    run(tiny_dataset, tmp_path / "a", 40, ["--no-augment"])
    run(tiny_dataset, tmp_path / "b", 40, ["--no-augment"])
    a = list(csv.DictReader((tmp_path / "a" / "loss.csv").open()))
    b = list(csv.DictReader((tmp_path / "b" / "loss.csv").open()))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # fixed seeds, same numbers
    first, last = float(a[0]["mse"]), float(a[-1]["mse"])
    assert np.isfinite(last) and last < first


def test_train_bilabials_learns_from_phone_labels_beside_the_audio(tiny_dataset, tmp_path, capsys):
    from safetensors import safe_open

    from dimitra.backend.cli import main as dimitra
    from dimitra.backend.dataset.index import iter_segments, load_features
    from dimitra.backend.features.bilabials import load_detector_file

    folder = tiny_dataset.parent   # the clips' folder: StyleTalk-style labels, 30 per second
    (folder / "phindex.json").write_text(json.dumps({"B": 0, "AA": 1}))
    (folder / "speaker_a_seq.json").write_text(json.dumps(([0] * 5 + [1] * 10) * 6))
    out = tmp_path / "detector.safetensors"
    assert dimitra(["train-bilabials", str(tiny_dataset), "--out", str(out), "--steps", "30",
                    "--members", "2"]) == 0
    assert "1 train segments" in capsys.readouterr().out
    with safe_open(str(out), framework="pt") as handle:
        meta = json.loads(handle.metadata()["meta"])
    assert meta["label_frames"] == {"aligned": 75, "pocketsphinx": 0} and meta["members"] == 2
    _, segment, _ = next(iter_segments(tiny_dataset, "train"))
    detector = load_detector_file(out)
    assert len(detector.nets) == 2
    marks = detector(load_features(tiny_dataset, segment, "whisper-tiny-en"))
    assert marks.shape == (75,) and set(np.unique(marks)) <= {0.0, 1.0}


def test_training_runs_under_torchrun_with_two_processes(tiny_dataset, tmp_path):
    """The multi-GPU path (DDP) on the CPU with gloo: both ranks train in step, rank 0 writes."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dimitra.backend.cli", "train", str(tiny_dataset), "--out", str(out), "--steps", "25",
               "--batch", "2", "--dev-every", "0", "--warmup", "2", "--width", "32", "--depth", "1",
               "--threads", "1"]
    finished = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert json.loads((out / "train_state.json").read_text())["step"] == 25
    losses = [float(r["loss"]) for r in csv.DictReader((out / "loss.csv").open())]
    assert losses and all(np.isfinite(losses))
    assert load_bundle(out / "last.safetensors").model is not None


@pytest.fixture(scope="module")
def three_source_dataset(talking_clip, tmp_path_factory):
    """The same clip as train clips of three sources (file-name prefixes), and a dev clip,
    with voice-variant features for one extractor."""
    folder = tmp_path_factory.mktemp("source_data")
    for name in ("lab_a.mp4", "tv_a.mp4", "web_a.mp4"):
        shutil.copy(talking_clip[0], folder / name)
    shutil.copy(talking_clip[0], folder / "dev_a.mp4")
    dataset = folder / "dataset"
    features = ("whisper-tiny-en", "whisper-tiny-en~room", "whisper-tiny-en~voice-low")
    run_prepare([folder / n for n in ("lab_a.mp4", "tv_a.mp4", "web_a.mp4")], dataset, jobs=1,
                split="train", progress=False, features=features)
    run_prepare([folder / "dev_a.mp4"], dataset, jobs=1, split="dev", progress=False)
    return dataset


def test_leave_source_out_folds_train_without_and_score_on_the_held_out_source(
        three_source_dataset, tmp_path, capsys):
    from dimitra.backend.cli import main as dimitra
    from dimitra.backend.dataset.folds import source_folds
    from dimitra.backend.dataset.index import load_index
    from dimitra.backend.training.windows import list_segments

    folds = source_folds(load_index(three_source_dataset))
    assert sorted(map(tuple, folds)) == [("lab",), ("tv",), ("web",)]
    for number in (1, 2, 3):
        trained_on = {c.clip_id for c, _ in list_segments(three_source_dataset,
                                                          f"train-minus-fold-{number}")}
        assert trained_on == {"lab_a", "tv_a", "web_a"} - {f"{folds[number - 1][0]}_a"}
        offsets = tmp_path / "offsets.json"
        offsets.write_text(json.dumps({"lab_a": 2}))
        run(three_source_dataset, tmp_path / f"f{number}", 10,
            ["--holdout-fold", str(number), "--voice-variants", "0.5",
             "--av-offsets", str(offsets)])
        dev = list(csv.DictReader((tmp_path / f"f{number}" / "dev.csv").open()))
        assert dev and np.isfinite(float(dev[-1]["aperture_corr"]))
        assert json.loads((tmp_path / f"f{number}" / "train_state.json").read_text())["step"] == 10
    capsys.readouterr()
    assert dimitra(["eval", str(three_source_dataset), "--fold-models",
                    str(tmp_path / "f{fold}" / "last.safetensors"), "--steps", "1",
                    "--json", str(tmp_path / "folds.json")]) == 0
    table = capsys.readouterr().out
    assert "worst fold" in table and "fold 3: 1 segments of web" in table
    result = json.loads((tmp_path / "folds.json").read_text())
    corrs = [fold["mean"]["model"]["aperture_corr"] for fold in result["folds"]]
    assert result["worst"]["aperture_corr"] == min(corrs)
    assert result["mean"]["aperture_corr"] == pytest.approx(np.mean(corrs))


def test_voice_variant_windows_replace_the_features_only_when_asked(three_source_dataset):
    from dimitra.backend.training.train import fit_space_from_dataset
    from dimitra.backend.training.windows import (
        WindowSettings,
        list_segments,
        load_training_segment,
        sample_window,
    )

    space = fit_space_from_dataset(three_source_dataset, 100)
    _, segment = list_segments(three_source_dataset, "train")[0]
    loaded = load_training_segment(three_source_dataset, segment, space, "whisper-tiny-en",
                                   with_variants=True)
    assert len(loaded.variants) == 2
    assert all(v.shape == loaded.features.shape for v in loaded.variants)
    assert not np.allclose(loaded.variants[0], loaded.features)
    # An audio-video offset moves clean and variant features alike.
    late = load_training_segment(three_source_dataset, segment, space, "whisper-tiny-en",
                                 with_variants=True, offset=3)
    assert np.array_equal(late.features[:-3], loaded.features[3:])
    assert np.array_equal(late.variants[1][:-3], loaded.variants[1][3:])

    def features_of(share: float) -> list[np.ndarray]:
        settings = WindowSettings(tempo_range=0.0, feature_noise=0.0, voice_variants=share)
        rng = np.random.default_rng(0)
        return [sample_window(loaded, space, settings, rng)["features"].numpy()
                for _ in range(20)]

    clean = loaded.features
    def is_clean(window):
        return any(np.allclose(window[:len(clean) - s][:10], clean[s:s + 10], atol=1e-5)
                   for s in range(len(clean) - 10))
    assert all(is_clean(w) for w in features_of(0.0))
    assert sum(not is_clean(w) for w in features_of(1.0)) == 20
