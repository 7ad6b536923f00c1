"""Ray tests: real local Ray (2 CPUs), real bpy in each worker, the shipped model.

bpy is imported by the workers and by child processes only: bpy 4.5 can deadlock in its C++
exit handlers, and the Ray driver (this process, as `dimitra bake --ray`) never needs it.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="dimitra-scale-tests-"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(_HOME / "blender"))
os.environ.setdefault("XDG_CACHE_HOME", str(_HOME / "cache"))
if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy is not installed", allow_module_level=True)
pytest.importorskip("ray")

LINE_SECONDS = 1.2


@pytest.fixture(scope="session")
def sample_rig(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rigs") / "sample_face.blend"
    subprocess.run([sys.executable, "-c", "import os, sys; from dimitra.blender_addon.sample_rig "
                    "import save_sample_rig; save_sample_rig(sys.argv[1]); os._exit(0)",
                    str(path)], check=True, capture_output=True, timeout=300)
    return path


@pytest.fixture(scope="session")
def speech_lines(tmp_path_factory) -> list[Path]:
    """12 short lines cut from the bundled speech sample (WAV, 16 kHz)."""
    import soundfile

    from dimitra.backend.demo import SPEECH
    from dimitra.backend.media.audio import load_audio

    speech = load_audio(SPEECH)
    folder = tmp_path_factory.mktemp("lines")
    step = (len(speech) - int(LINE_SECONDS * 16_000)) // 12
    paths = []
    for index in range(12):
        path = folder / f"line{index:02d}.wav"
        start = index * step
        soundfile.write(path, speech[start:start + int(LINE_SECONDS * 16_000)], 16_000)
        paths.append(path)
    return paths

