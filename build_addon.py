"""`python build_addon.py`: the Blender extension zips, one per platform, validated.

    python build_addon.py                         # all four platforms into dist/
    python build_addon.py --platform linux-x64    # one (what the tests build)

Each zip is the extension `dimitra` (Blender 4.2 LTS -> 5.x) with
- the add-on's modules from `blender_addon/` (not `sample_rig.py`, a development tool);
- `retarget/` and `backend/protocol/` vendored as the subpackages `dimitra.retarget` and
  `dimitra.protocol`;
- the pyzmq wheels for the platform: cp311 (Blender 4.2-5.0, Python 3.11) and cp312-abi3
  (Blender 5.1+, Python 3.13), downloaded once with `pip download` into `build/wheels/`.

Vendoring. An extension must use relative imports (Blender installs it as
`bl_ext.<repository>.dimitra`), while the repository keeps absolute imports so batch tools
and tests import `retarget` and `backend.protocol` as top-level packages. The build copies
the files and rewrites every `from retarget...` / `from backend.protocol...` import in them
into the relative form for the file's depth in the zip (`from retarget.solve import solve`
in `bake.py` becomes `from .retarget.solve import solve`), as pip's `vendoring` tool does.
`import retarget.x` (not a `from` import) cannot be made relative and stops the build; a
module-level import of any other repository package (`backend`, which needs torch) stops it
too. Imports of `backend` inside functions are batch-only paths (`bake.bake`) and are left.

Validation: the manifest tool inside the bpy wheel (`bl_pkg/cli/blender_ext.py`, plain
Python) builds each zip and validates it.
"""

import argparse
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
# Repository package -> its subpackage in the zip.
VENDORED = {"retarget": "retarget", "backend.protocol": "protocol"}
PYZMQ = "27.3.0"
# Blender's Python versions: (pip --python-version, wheel python-abi tag).
PYTHON_TAGS = (("3.11", "cp311-cp311"), ("3.12", "cp312-abi3"))
# Platform -> (pip --platform tags to ask for, wheel-name test).
PLATFORMS = {
    "linux-x64": (("manylinux_2_28_x86_64", "manylinux2014_x86_64"),
                  lambda name: "manylinux" in name and name.endswith("x86_64.whl")),
    "windows-x64": (("win_amd64",), lambda name: name.endswith("win_amd64.whl")),
    "macos-arm64": (("macosx_11_0_arm64", "macosx_10_15_universal2"),
                    lambda name: "macosx" in name and name.endswith(("arm64.whl",
                                                                      "universal2.whl"))),
    "macos-x64": (("macosx_10_15_x86_64", "macosx_10_15_universal2"),
                  lambda name: "macosx" in name and name.endswith(("x86_64.whl",
                                                                    "universal2.whl"))),
}
_FROM_IMPORT = re.compile(r"^(?P<indent>\s*)from\s+(?P<module>[\w.]+)(?P<rest>\s+import\b.*)$")
_PLAIN_IMPORT = re.compile(r"^(?P<indent>\s*)import\s+(?P<module>[\w.]+)")
_REPO_PACKAGES = ("backend", "retarget", "blender_addon")


class BuildError(RuntimeError):
    """The extension cannot be built; the message says what to fix."""


# ---------------------------------------------------------------------------------------------
# Import rewriting
# ---------------------------------------------------------------------------------------------

def rewrite_imports(source: str, depth: int, filename: str = "<source>") -> str:
    """`source` of a file `depth` packages below the extension root, with the absolute imports
    of vendored packages made relative. Raises BuildError for imports that cannot work there."""
    lines = source.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        match = _FROM_IMPORT.match(line)
        if match:
            module = match["module"]
            target = _vendored_target(module)
            if target is not None:
                newline = "\n" if line.endswith("\n") else ""
                lines[number - 1] = (f"{match['indent']}from {'.' * (depth + 1)}{target}"
                                     f"{match['rest'].rstrip(chr(10))}{newline}")
                continue
        else:
            match = _PLAIN_IMPORT.match(line)
            if match and _vendored_target(match["module"]) is not None:
                raise BuildError(f"{filename}:{number}: `{line.strip()}` cannot be made "
                                 "relative inside the extension; write `from ... import ...`")
        if match and not match["indent"] and match["module"].split(".")[0] in _REPO_PACKAGES:
            raise BuildError(f"{filename}:{number}: `{line.strip()}` imports a repository "
                             "package the extension does not carry; import it inside the "
                             "function that needs it, or vendor it")
    return "".join(lines)


def _vendored_target(module: str) -> str | None:
    """'retarget.face.pose' -> 'retarget.face.pose'; 'backend.protocol.client' ->
    'protocol.client'; None for modules that are not vendored."""
    for package, target in VENDORED.items():
        if module == package or module.startswith(package + "."):
            return target + module[len(package):]
    return None


# ---------------------------------------------------------------------------------------------
# Staging
# ---------------------------------------------------------------------------------------------

def stage(platform: str, wheels: list[Path], stage_dir: Path) -> Path:
    """The extension's source tree for one platform in `stage_dir` (replaced)."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    for path in sorted(ADDON.glob("*.py")):
        if path.name not in ADDON_EXCLUDED:
            _copy_python(path, stage_dir / path.name, 0)
    for package, target in VENDORED.items():
        source = REPO / package.replace(".", "/")
        for path in sorted(source.rglob("*")):
            if "__pycache__" in path.parts or path.is_dir() or path.suffix == ".pyc":
                continue
            relative = path.relative_to(source)
            out = stage_dir / target / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".py":
                _copy_python(path, out, len(relative.parts))
            else:
                shutil.copy2(path, out)
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


def _copy_python(source: Path, out: Path, depth: int) -> None:
    out.write_text(rewrite_imports(source.read_text(), depth, str(source.relative_to(REPO))))


# ---------------------------------------------------------------------------------------------
# Wheels
# ---------------------------------------------------------------------------------------------

def platform_wheels(platform: str, cache: Path = WHEELS) -> list[Path]:
    """The pyzmq wheels for `platform`, one per Python tag, downloaded into `cache` once."""
    pip_platforms, fits = PLATFORMS[platform]
    cache.mkdir(parents=True, exist_ok=True)
    found = []
    for python_version, tag in PYTHON_TAGS:
        wheel = _cached_wheel(cache, tag, fits)
        if wheel is None:
            command = [sys.executable, "-m", "pip", "download", f"pyzmq=={PYZMQ}", "--no-deps",
                       "--only-binary=:all:", "--python-version", python_version,
                       "--implementation", "cp", "--abi", tag.split("-")[1], "--dest",
                       str(cache), "--quiet"]
            for name in pip_platforms:
                command += ["--platform", name]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            wheel = _cached_wheel(cache, tag, fits)
            if wheel is None:
                raise BuildError(f"pip could not download pyzmq {PYZMQ} ({tag}) for "
                                 f"{platform}: {result.stderr.strip()[-800:]}; check the "
                                 f"network, or put the wheel into {cache}")
        found.append(wheel)
    return found


def _cached_wheel(cache: Path, tag: str, fits) -> Path | None:
    matches = sorted(p for p in cache.glob(f"pyzmq-{PYZMQ}-{tag}-*.whl") if fits(p.name))
    return matches[0] if matches else None


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
