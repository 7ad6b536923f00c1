"""Blender tests: bpy as a module, kept out of $HOME; one generated motion for the session."""

import os
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="dimitra-blender-tests-"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(_HOME / "blender"))
os.environ.setdefault("XDG_CACHE_HOME", str(_HOME / "cache"))
bpy = pytest.importorskip("bpy")

SPEECH_SECONDS = 3.5


@pytest.fixture(scope="session")
def sample_rig(tmp_path_factory) -> Path:
    from dimitra.blender_addon.sample_rig import save_sample_rig

    return save_sample_rig(tmp_path_factory.mktemp("rigs") / "sample_face.blend")


@pytest.fixture(scope="session")
def speech_clip(tmp_path_factory) -> Path:
    """The first seconds of the bundled speech sample, as a WAV file."""
    import soundfile

    from dimitra.backend.demo import SPEECH
    from dimitra.backend.media.audio import load_audio

    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    soundfile.write(path, load_audio(SPEECH)[: int(SPEECH_SECONDS * 16_000)], 16_000)
    return path


@pytest.fixture(scope="session")
def generated_motion(tmp_path_factory, speech_clip) -> Path:
    """A motion file generated once with the shipped model (reference: the bundled photo)."""
    import torch

    from dimitra.backend.demo import REFERENCE_IMAGE
    from dimitra.backend.generation.animate import AnimateRequest, animate_to_file

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("motion") / "speech.npz"
    animate_to_file(AnimateRequest(speech_clip, REFERENCE_IMAGE), path)
    return path


def mouth_opening(motion_path: Path, fps: float):
    """(T,) the generated inner-lip gap resampled to `fps`, what a mouth channel must follow."""
    from dimitra.retarget.face.measures import inner_lip_gap
    from dimitra.retarget.motion_file import load_motion, resample_motion

    motion = resample_motion(load_motion(motion_path), fps)
    return inner_lip_gap(motion.extras["canonical"].astype(float))


_EXIT_STATUS = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


def pytest_unconfigure(config):
    """bpy 4.5 can hang in its exit handlers after a Workbench render (its GPU worker threads
    wait forever): leave right after pytest has reported everything."""
    import sys

    if "code" in _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["code"])
