"""The built zip as an artist gets it: installed into bpy, enabled in a fresh process, Generate
with the default preferences (the built-in backend, from the zip's own files and wheels) and
against a remote server, with only the vendored packages on hand; and a zip for another
platform refused with nothing installed."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)

# This test Python has the repository's `dimitra` (an editable install) and torch; an artist's
# Blender has neither. The Blender process hides both before anything else, so only the
# extension's own files can run (and any import of torch fails).
ISOLATE = """
import importlib.util, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in type(f).__module__]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
sys.modules["torch"] = None
assert importlib.util.find_spec("dimitra") is None, "the repository's dimitra is importable"
"""

INSTALL = ISOLATE + """
import bpy
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default",
                                         enable_on_install=True)
bpy.ops.wm.save_userpref()
"""

GENERATE = ISOLATE + """
import json, bpy
import addon_utils
blend, audio, server, out = sys.argv[1:5]
module = addon_utils.enable("bl_ext.user_default.dimitra", default_set=True)
assert module is not None, "the extension did not enable"
bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False)
bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
prefs = bpy.context.preferences.addons["bl_ext.user_default.dimitra"].preferences
prefs.backend, prefs.address = "REMOTE", server
result = bpy.ops.dimitra.generate(audio_file=audio, start_frame=5)
keys = bpy.data.objects["sample_face"].data.shape_keys
action = keys.animation_data.action
from bl_ext.user_default.dimitra.blender_addon import blender_api
curves = {c.data_path: [k.co[1] for k in c.keyframe_points]
          for c in blender_api.action_fcurves(action)}
json.dump({"result": sorted(result), "action": action.name,
           "jaw": curves['key_blocks["jawOpen"].value'],
           "first_frame": blender_api.action_fcurves(action)[0].keyframe_points[0].co[0],
           "modules": sorted(m for m, loaded in sys.modules.items() if loaded is not None and (
                             m.split(".")[0] in ("dimitra", "retarget", "backend", "torch", "blender_addon")
                             or m.startswith("bl_ext.user_default.dimitra."))),
           "zmq": __import__("zmq").__file__}, open(out, "w"))
addon_utils.disable("bl_ext.user_default.dimitra")
"""


GENERATE_BUILTIN = ISOLATE + """
import json, os, time, bpy
import addon_utils
blend, audio, out = sys.argv[1:4]
assert addon_utils.enable("bl_ext.user_default.dimitra", default_set=True) is not None
bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False)
bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
prefs = bpy.context.preferences.addons["bl_ext.user_default.dimitra"].preferences
result = bpy.ops.dimitra.generate(audio_file=audio, start_frame=5)   # default preferences
from bl_ext.user_default.dimitra.blender_addon import blender_api, local_backend
# What the worker processes (the server and its model worker) loaded, from their memory maps.
server = local_backend.started_process().pid
pids = [server] + [int(child) for task in os.listdir(f"/proc/{server}/task")
                   for child in open(f"/proc/{server}/task/{task}/children").read().split()]
libraries = sorted({line.split()[-1] for pid in pids for line in open(f"/proc/{pid}/maps")
                    if ".so" in line and "/" in line})
action = bpy.data.objects["sample_face"].data.shape_keys.animation_data.action
curves = {c.data_path: [k.co[1] for k in c.keyframe_points]
          for c in blender_api.action_fcurves(action)}
json.dump({"result": sorted(result), "backend": prefs.backend, "action": action.name,
           "jaw": curves['key_blocks["jawOpen"].value'], "workers": len(pids),
           "libraries": libraries,
           "modules": sorted(m for m in sys.modules
                             if m.split(".")[0] in ("dimitra", "retarget", "backend", "blender_addon")
                             or m.startswith("bl_ext.user_default.dimitra."))}, open(out, "w"))
addon_utils.disable("bl_ext.user_default.dimitra")
assert local_backend.started_process() is None   # disabling stops the worker
"""


def blender_env(home: Path) -> dict:
    """A fresh Blender user folder; no PYTHONPATH (the repository is not on it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"BLENDER_USER_RESOURCES": str(home), "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_CACHE_HOME": str(home / "cache")})
    return env


def run_blender(script: str, *arguments, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, arguments)], check=False,
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=540)


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory):
    import build_addon

    (path,) = build_addon.build(["linux-x64"], tmp_path_factory.mktemp("dist"))
    return path


def test_zip_carries_the_vendored_packages_and_the_wheels(extension_zip):
    with zipfile.ZipFile(extension_zip) as archive:
        names = set(archive.namelist())
        manifest = archive.read("blender_manifest.toml").decode()
        bake = archive.read("blender_addon/bake.py").decode()
    assert {"__init__.py", "blender_manifest.toml", "blender_addon/generate_job.py",
            "backend/__init__.py", "backend/protocol/client.py", "retarget/solve.py",
            "retarget/face/data/canonical_face.npy"} <= names
    assert "blender_addon/sample_rig.py" not in names
    # The built-in backend: the CPU inference path, the model and its ONNX export, Whisper as
    # its int8 copy; nothing of training, data preparation or evaluation.
    assert {"backend/cli.py", "backend/service/server.py", "backend/generation/animate.py",
            "backend/model/weights/cmdt_default.safetensors",
            "backend/model/weights/cmdt_default-onnx/denoiser.onnx",
            "backend/model/weights/bilabials_whisper-tiny-en.onnx",
            "backend/model/weights/whisper-tiny-en-int8/model.bin"} <= names
    assert not [n for n in names if n.startswith(("backend/training", "backend/dataset",
                                                  "backend/evaluation"))]
    wheels = sorted(n for n in names if n.endswith(".whl"))
    assert {"wheels/pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
            "wheels/pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl"
            } <= set(wheels)
    for package in ("onnxruntime-1.32.0-cp311", "ctranslate2-4.8.5-cp311", "av-18.1.0",
                    "mediapipe-0.10.21-cp311"):
        assert [w for w in wheels if w.startswith("wheels/" + package)], package
    assert not [w for w in wheels if "win_amd64" in w or "macosx" in w or "torch" in w]
    assert 'platforms = ["linux-x64"]' in manifest and 'id = "dimitra"' in manifest
    # The repository's own file, unchanged: the same relative imports as in the pip install.
    assert bake == (REPO / "blender_addon" / "bake.py").read_text()


def test_installed_extension_generates(extension_zip, server, sample_blend, speech_file,
                                       tmp_path):
    home = tmp_path / "blender"
    env = blender_env(home)

    def run(script, *arguments):
        done = run_blender(script, *arguments, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run(INSTALL, extension_zip)
    assert (home / "extensions" / "user_default" / "dimitra" / "retarget" / "solve.py").is_file()
    out = tmp_path / "result.json"
    run(GENERATE, sample_blend, speech_file, server, out)
    result = json.loads(out.read_text())
    assert result["result"] == ["FINISHED"]
    assert result["action"] == "Dimitra line_one" and result["first_frame"] == 5
    assert max(result["jaw"]) > 0.15
    # Only the vendored copies ran: no repository package, and never torch.
    assert not [m for m in result["modules"] if not m.startswith("bl_ext.")]
    assert "bl_ext.user_default.dimitra.retarget.solve" in result["modules"]
    assert "bl_ext.user_default.dimitra.backend.protocol.client" in result["modules"]


def test_generate_with_the_default_preferences_runs_the_built_in_backend(
        extension_zip, sample_blend, speech_file, tmp_path):
    """Install from Disk, then Generate: no Python, server or setting to give. The backend is
    the zip's own, in a worker of Blender's Python: its model libraries come from the wheels
    Blender installed for the extension, and torch is never loaded."""
    home = tmp_path / "blender"
    env = blender_env(home)
    done = run_blender(INSTALL, extension_zip, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "result.json"
    done = run_blender(GENERATE_BUILTIN, sample_blend, speech_file, out, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backend"] == "BUILTIN" and result["result"] == ["FINISHED"]
    assert result["action"] == "Dimitra line_one" and max(result["jaw"]) > 0.15
    assert result["workers"] >= 2                       # the server and its model worker
    wheels_dir = str(home / "extensions" / ".local")
    model_libraries = [path for path in result["libraries"]
                       if "onnxruntime_pybind11" in path or "ctranslate2" in path]
    assert model_libraries and all(path.startswith(wheels_dir) for path in model_libraries)
    assert not [path for path in result["libraries"] if "torch" in path]
    assert not [m for m in result["modules"] if not m.startswith("bl_ext.")]


def test_a_zip_for_another_platform_is_refused_and_nothing_is_installed(tmp_path):
    """What an artist sees who picks the Windows zip on Linux: Blender's own refusal, naming
    the platforms, and no extension installed."""
    import build_addon

    source = build_addon.stage("windows-x64", [], tmp_path / "stage")
    foreign = tmp_path / "dimitra-0.1.0-windows_x64.zip"
    build_addon.run_tool("build", "--source-dir", str(source), "--output-filepath", str(foreign))
    home = tmp_path / "blender"
    script = ISOLATE + """
import bpy
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default",
                                         enable_on_install=True)
"""
    done = run_blender(script, foreign, env=blender_env(home), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Blender 4.5 and 5.0 report it as the operator's error (in the UI: the status bar).
    assert "This platform (linux-x64) isn't one of (windows-x64)" in done.stdout + done.stderr
    assert not (home / "extensions" / "user_default" / "dimitra").exists()


def test_build_refuses_a_module_level_import_the_extension_lacks(tmp_path):
    from build_addon import BuildError, check_imports

    (tmp_path / "blender_addon").mkdir()
    (tmp_path / "retarget").mkdir()
    (tmp_path / "retarget" / "__init__.py").write_text("")
    (tmp_path / "retarget" / "solve.py").write_text("")
    module = tmp_path / "blender_addon" / "bake.py"
    module.write_text("from ..retarget.solve import solve\n"
                      "from . import bake\n"
                      "def batch():\n"
                      "    from ..backend.generation.animate import Animator\n")
    check_imports(tmp_path)        # the batch-only import inside a function is left alone
    module.write_text("from ..backend.generation import animate\n")
    with pytest.raises(BuildError, match="bake.py:1: .*backend.generation.* not in the extension"):
        check_imports(tmp_path)
    module.write_text("from dimitra.retarget import solve\n")
    with pytest.raises(BuildError, match="absolute import of dimitra.retarget"):
        check_imports(tmp_path)
