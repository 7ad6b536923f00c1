"""Shared fixtures: paths to the shared data and a small talking clip made from the samples."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TALKING_FACES = SHARED / "data" / "talking-faces"


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data {relative} is not on this machine")
    return path


@pytest.fixture(scope="session")
def talking_clip(tmp_path_factory) -> tuple[Path, dict]:
    """A 3 s MP4 of the bundled reference photo speaking, with the motion that was put in."""
    from dimitra.backend.demo import synthesize_talking_clip

    path = tmp_path_factory.mktemp("clips") / "talking.mp4"
    truth = synthesize_talking_clip(path, seconds=3.0)
    return path, truth


@pytest.fixture(scope="session")
def real_dev_dataset(tmp_path_factory) -> Path:
    """Two short real dev clips (LRS2 and PC-AVS) prepared from the shared data."""
    import csv

    from dimitra.backend.dataset.prepare import run_prepare

    manifest = TALKING_FACES / "manifest.csv"
    if not manifest.is_file():
        pytest.skip("the shared talking-face clips are not on this machine")
    wanted = {"deep_avsr_00022", "pc-avs_731200067"}
    with manifest.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["clip_id"] in wanted]
    subset = tmp_path_factory.mktemp("manifest") / "manifest.csv"
    with subset.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:  # paths stay relative to the shared folder
            writer.writerow({**row, "video_path": str(TALKING_FACES / row["video_path"]),
                             "audio_path": str(TALKING_FACES / row["audio_path"])})
    dataset = tmp_path_factory.mktemp("real_dev")
    records = run_prepare([subset], dataset, jobs=2, features=(), progress=False)
    assert all(r.status == "ok" for r in records), [r.error for r in records]
    return dataset
