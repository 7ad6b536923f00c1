"""Write a file completely or not at all: a temp file in the same folder, renamed when done.

Readers never see a half-written file, and an error (or Ctrl-C) leaves the old file, if any,
untouched. The result gets the usual permissions (0666 less the umask), not mkstemp's 0600.
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path to write to; it becomes `path` when the block ends without error.

    `keep_suffix`: the temp name ends like `path` (.blend, .fbx, .glb), for writers that pick
    the format by it or append it when it is missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".partial" + (path.suffix if keep_suffix else "")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator:
    """Like open(path, mode) for writing, through `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
