"""A `dimitra serve` started by the add-on on this machine, in its own process, so Blender's UI
stays free while the model runs:

- built in (the default): from the extension's own files, with Blender's own Python
  (`sys.executable`; the bpy module's Python when bpy runs as a module). The extension is laid
  out as the `dimitra` package and carries the inference code, the exported model and the
  wheels it needs (build_addon.py), so nothing else has to be installed. The worker imports
  only from the extension and Blender's own site-packages: `-S` keeps any other site-packages
  of that Python (and packages installed there, a `dimitra` or torch) out of it.
- local: `PYTHON -m dimitra.backend.cli serve` from a Python the artist configured (a GPU's
  torch, a development checkout).

Either is started on the first Generate that needs it, at tcp://127.0.0.1:PORT, and stopped
when the add-on is disabled or Blender quits. A server already answering at that address is
used as it is. The add-on itself never imports torch.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..backend.protocol.client import DimitraClient, ServiceError

START_TIMEOUT_S = 180.0     # loading the model on a slow CPU
BUILTIN_PORT = 5598         # the built-in backend's (the local one's default is 5599)
# The extension's folder, which is the `dimitra` package for the built-in worker.
EXTENSION_ROOT = Path(__file__).resolve().parents[1]
_lock = threading.Lock()
_process: subprocess.Popen | None = None
_command: list[str] | None = None
_log_path: Path | None = None


class BackendStartError(RuntimeError):
    """The local backend could not be started; the message says why and what to do."""


def local_address(port: int) -> str:
    return f"tcp://127.0.0.1:{int(port)}"


def ensure_running(python: str, port: int, cancelled: Callable[[], bool] = lambda: False,
                   timeout: float = START_TIMEOUT_S) -> str:
    """The address of a local backend that answers `info`, started from `python` if needed.
    Safe from any thread; blocks until it answers (or raises BackendStartError)."""
    if not python:
        raise BackendStartError(
            "no backend: set the Python that has Dimitra installed (Preferences > Add-ons "
            "> Dimitra > Local backend Python), choose the Built-in backend, or give a remote "
            "server's address")
    if not Path(python).is_file():
        raise BackendStartError(f"local backend Python {python}: no such file; set the "
                                "path of the Python that has Dimitra installed")
    address = local_address(port)
    command = [python, "-m", "dimitra.backend.cli", "serve", "--bind", address]
    hint = "check that this Python has Dimitra installed (`pip install dimitra-blender[backend]`)"
    return _ensure(command, {}, address, hint, cancelled, timeout)


def ensure_builtin_running(port: int = BUILTIN_PORT, cancelled: Callable[[], bool] = lambda: False,
                           timeout: float = START_TIMEOUT_S) -> str:
    """The address of the built-in backend: `dimitra serve` from the extension's files in a
    worker process of Blender's Python, started if needed."""
    if EXTENSION_ROOT.name != "dimitra" or not (EXTENSION_ROOT / "backend" / "cli.py").is_file():
        raise BackendStartError(f"this copy of the add-on ({EXTENSION_ROOT}) has no built-in "
                                "backend; install the extension zip, or choose Local or Remote "
                                "in Preferences > Add-ons > Dimitra")
    address = local_address(port)
    command, env = builtin_command(address)
    hint = (f"the built-in backend needs the Python {_BUILT_FOR} of Blender 4.2-5.0 and the "
            "extension zip for this platform; otherwise choose Local or Remote in Preferences "
            "> Add-ons > Dimitra")
    return _ensure(command, env, address, hint, cancelled, timeout)


_BUILT_FOR = "3.11"   # the wheels' Python (build_addon.RUNTIME_PYTHON)


def builtin_command(address: str) -> tuple[list[str], dict[str, str]]:
    """The built-in worker's command line and environment. Its imports come from the
    extension's folder (as the `dimitra` package), then the wheels Blender installed for
    extensions, then the rest of Blender's own sys.path (its numpy); `-S` leaves out any other
    site-packages of that Python."""
    wheels = [p for p in sys.path if p and "extensions" in Path(p).parts and "site-packages" in p]
    rest = [p for p in sys.path if p and p not in wheels]
    paths = [str(EXTENSION_ROOT.parent), *wheels, *rest]
    launcher = ("import os, sys; sys.path[:0] = sys.argv[1].split(os.pathsep); "
                "from dimitra.backend.cli import main; main(sys.argv[2:])")
    command = [sys.executable, "-S", "-c", launcher, os.pathsep.join(paths),
               "serve", "--bind", address, "--workers", "1"]
    return command, {}


def _ensure(command: list[str], env: dict[str, str], address: str, hint: str,
            cancelled: Callable[[], bool], timeout: float) -> str:
    global _process, _command, _log_path
    with _lock:
        if _process is not None and _command != command:
            stop()   # the other backend (the preferences changed): this one replaces it
        if _answers(address, 1.0):
            return address
        if _process is None or _process.poll() is not None:
            handle, name = tempfile.mkstemp(prefix="dimitra-backend-", suffix=".log")
            _log_path = Path(name)
            full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
            with os.fdopen(handle, "w") as log:
                _process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=full_env)
            _command = command
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancelled():
                raise BackendStartError("cancelled while the local backend was starting")
            if _process.poll() is not None:
                raise BackendStartError(
                    f"the local backend ({' '.join(command[:3])} ...) exited with code "
                    f"{_process.returncode}: {_log_tail()}; {hint}")
            if _answers(address, 1.0):
                return address
            time.sleep(0.2)
        stop()
        raise BackendStartError(f"the local backend did not answer at {address} within "
                                f"{timeout:.0f} s: {_log_tail()}")


def stop() -> None:
    """Stop the backend this add-on started (if any): SIGTERM, then kill after 10 s."""
    global _process, _command
    process, _process, _command = _process, None, None
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def started_process() -> subprocess.Popen | None:
    return _process


def _answers(address: str, timeout: float) -> bool:
    try:
        with DimitraClient(address, timeout=timeout, retries=1) as client:
            client.info()
        return True
    except ServiceError:
        return False


def _log_tail(lines: int = 6) -> str:
    if _log_path is None or not _log_path.is_file():
        return "no output"
    text = _log_path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "no output"
