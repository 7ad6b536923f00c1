"""The built zip as an artist gets it: installed into bpy, enabled in a fresh process, Generate
against a real backend through the preferences, with only the vendored packages on hand."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)

INSTALL = """
import sys, bpy
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default",
                                         enable_on_install=True)
bpy.ops.wm.save_userpref()
"""

GENERATE = """
import json, sys, bpy
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
           "modules": sorted(m for m in sys.modules
                             if m.split(".")[0] in ("dimitra", "retarget", "backend", "torch", "blender_addon")
                             or m.startswith("bl_ext.user_default.dimitra.")),
           "zmq": __import__("zmq").__file__}, open(out, "w"))
addon_utils.disable("bl_ext.user_default.dimitra")
"""


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
    assert not [n for n in names if n.startswith(("backend/generation", "backend/model"))]
    assert sorted(n for n in names if n.endswith(".whl")) == [
        "wheels/pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
        "wheels/pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl"]
    assert 'platforms = ["linux-x64"]' in manifest and 'id = "dimitra"' in manifest
    # The repository's own file, unchanged: the same relative imports as in the pip install.
    assert bake == (REPO / "blender_addon" / "bake.py").read_text()


def test_installed_extension_generates(extension_zip, server, sample_blend, speech_file,
                                       tmp_path):
    home = tmp_path / "blender"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"BLENDER_USER_RESOURCES": str(home), "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_CACHE_HOME": str(home / "cache")})

    def run(script, *arguments):
        done = subprocess.run([sys.executable, "-c", script, *map(str, arguments)], check=False,
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=240)
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
