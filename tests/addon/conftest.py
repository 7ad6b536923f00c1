"""Fixtures for the add-on tests: bpy as a module (4.5.15 in .venv, 5.0.1 in .venv-bpy5), a
real `dimitra serve` started by the add-on's own local-backend code, the sample rig, and a
short speech file (3 s of the bundled sample, then 1 s of silence).

The server always runs under the main .venv's Python (it needs torch); the tests themselves
import no torch, so they also run in the bpy 5.0.1 venv. bpy is imported inside fixtures:
the whole suite shares one process with the torch tests.
"""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER_PYTHON = os.environ.get("DIMITRA_SERVER_PYTHON", str(REPO / ".venv" / "bin" / "python"))
SPEECH_SECONDS, SILENCE_SECONDS = 3.0, 1.0

# Blender keeps its user files here, not in $HOME (set before bpy is first imported).
_BLENDER_HOME = Path(tempfile.mkdtemp(prefix="dimitra-addon-tests-"))
for _name in ("BLENDER_USER_RESOURCES", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
    os.environ.setdefault(_name, str(_BLENDER_HOME / _name.lower()))


def make_speech(out: Path, speech_s: float, silence_s: float) -> Path:
    """The bundled speech cut to speech_s (repeated when longer), then silence, as a WAV.
    Decoded by the backend's own loader in the server's Python (this venv may lack it)."""
    script = ("import sys, numpy as np, soundfile\n"
              "from dimitra.backend.media.audio import load_audio\n"
              "speech = load_audio('samples/speech_en.flac')\n"
              "n, gap = int(float(sys.argv[2]) * 16000), int(float(sys.argv[3]) * 16000)\n"
              "audio = np.concatenate([np.resize(speech, n), np.zeros(gap, np.float32)])\n"
              "soundfile.write(sys.argv[1], audio, 16000, subtype='PCM_16')\n")
    subprocess.run([SERVER_PYTHON, "-c", script, str(out), str(speech_s), str(silence_s)],
                   cwd=REPO, check=True)
    return out


@pytest.fixture(scope="session")
def speech_file(tmp_path_factory) -> Path:
    return make_speech(tmp_path_factory.mktemp("audio") / "line_one.wav", SPEECH_SECONDS,
                       SILENCE_SECONDS)


@pytest.fixture(scope="session")
def addon():
    """The repository's add-on package, registered; every timer gone at the end."""
    import bpy

    from dimitra import blender_addon
    from dimitra.blender_addon import generate_job, operators, saved_takes

    blender_addon.register()
    yield blender_addon
    generate_job.stop_all()
    blender_addon.unregister()
    assert generate_job.active_job() is None
    assert not hasattr(bpy.types.Scene, "dimitra")
    assert operators.export_menu_entry not in \
        bpy.types.TOPBAR_MT_file_export._dyn_ui_initialize()      # File > Export cleaned up
    assert saved_takes.store_before_saving not in bpy.app.handlers.save_pre


@pytest.fixture(scope="session")
def server(addon) -> str:
    """A real backend, started the way the add-on starts a local one; its address."""
    from dimitra.blender_addon import local_backend
    from tests.service.server_process import free_port

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    address = local_backend.ensure_running(SERVER_PYTHON, free_port())
    yield address
    local_backend.stop()


@pytest.fixture(scope="session")
def sample_blend(tmp_path_factory, addon) -> Path:
    from dimitra.blender_addon.sample_rig import save_sample_rig

    return save_sample_rig(tmp_path_factory.mktemp("rig") / "sample_face.blend")


@pytest.fixture
def rig(sample_blend, addon):
    """The sample rig opened afresh, the face active; objects by role."""
    import bpy

    from dimitra.blender_addon import generate_job

    generate_job.stop_all()
    generate_job.RESULTS.clear()
    bpy.ops.wm.open_mainfile(filepath=str(sample_blend), load_ui=False)
    face = bpy.data.objects["sample_face"]
    bpy.context.view_layer.objects.active = face
    yield {"face": face, "armature": bpy.data.objects["sample_face_rig"]}
    generate_job.stop_all()


def scene_state() -> dict:
    """What an artist would see change: datablocks, what each plays, NLA, strips, range."""
    import bpy

    from dimitra.blender_addon import blender_api

    def playing(id_data):
        anim = id_data.animation_data
        if anim is None:
            return None
        return (anim.action.name if anim.action else None,
                [(t.name, [s.name for s in t.strips]) for t in anim.nla_tracks])

    scene = bpy.context.scene
    owners = [*bpy.data.objects, *bpy.data.shape_keys]
    return {
        "actions": sorted(a.name for a in bpy.data.actions),
        "objects": sorted(o.name for o in bpy.data.objects),
        "meshes": sorted(m.name for m in bpy.data.meshes),
        "playing": {o.name: playing(o) for o in owners},
        "strips": sorted((s.name, s.frame_start) for s in blender_api.sequences(scene))
        if scene.sequence_editor else [],
        "range": (scene.frame_start, scene.frame_end),
        "keys": {a.name: [tuple(k.co) for c in blender_api.action_fcurves(a)
                          for k in c.keyframe_points] for a in bpy.data.actions},
    }


def curve_values(action, data_path: str, index: int = 0):
    """(frames (N,), values (N,)) of one F-curve of `action`."""
    import numpy as np

    from dimitra.blender_addon import blender_api

    for fcurve in blender_api.action_fcurves(action):
        if fcurve.data_path == data_path and fcurve.array_index == index:
            co = np.empty(2 * len(fcurve.keyframe_points))
            fcurve.keyframe_points.foreach_get("co", co)
            return co[0::2], co[1::2]
    raise AssertionError(f"{action.name} has no curve {data_path}[{index}]")
