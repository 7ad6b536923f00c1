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
    from backend.demo import synthesize_talking_clip

    path = tmp_path_factory.mktemp("clips") / "talking.mp4"
    truth = synthesize_talking_clip(path, seconds=3.0)
    return path, truth
