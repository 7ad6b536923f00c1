"""The package layout, which pyproject.toml cannot compute: each folder of the repository
(backend/, retarget/, blender_addon/) installs as a subpackage of the `dimitra` namespace."""

from setuptools import find_namespace_packages, setup

FOLDERS = ("backend", "retarget", "blender_addon")
# Namespace discovery, so data folders (retarget/face/data, backend/model/weights) count too.
found = find_namespace_packages(include=[f"{folder}*" for folder in FOLDERS],
                                exclude=["*__pycache__*"])
setup(packages=[f"dimitra.{name}" for name in found],
      package_dir={f"dimitra.{folder}": folder for folder in FOLDERS})
