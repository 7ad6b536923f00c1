"""A `dimitra serve` started by the add-on on this machine, from a Python the artist configured.

The add-on never imports torch: the backend runs in its own process
(`PYTHON -m dimitra.backend.cli serve --bind tcp://127.0.0.1:PORT`), started on the first Generate
that needs it and stopped when the add-on is disabled or Blender quits. A server already
answering at that address is used as it is.
"""

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..backend.protocol.client import DimitraClient, ServiceError

START_TIMEOUT_S = 180.0     # loading the model on a slow CPU
_lock = threading.Lock()
_process: subprocess.Popen | None = None
_log_path: Path | None = None


class BackendStartError(RuntimeError):
    """The local backend could not be started; the message says why and what to do."""


def local_address(port: int) -> str:
    return f"tcp://127.0.0.1:{int(port)}"


def ensure_running(python: str, port: int, cancelled: Callable[[], bool] = lambda: False,
                   timeout: float = START_TIMEOUT_S) -> str:
    """The address of a local backend that answers `info`, started from `python` if needed.
    Safe from any thread; blocks until it answers (or raises BackendStartError)."""
    global _process, _log_path
    address = local_address(port)
    with _lock:
        if _answers(address, 1.0):
            return address
        if not python:
            raise BackendStartError(
                "no backend: set the Python that has Dimitra installed (Preferences > Add-ons "
                "> Dimitra > Local backend Python), or give a remote server's address")
        if not Path(python).is_file():
            raise BackendStartError(f"local backend Python {python}: no such file; set the "
                                    "path of the Python that has Dimitra installed")
        if _process is None or _process.poll() is not None:
            handle, name = tempfile.mkstemp(prefix="dimitra-backend-", suffix=".log")
            _log_path = Path(name)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with os.fdopen(handle, "w") as log:
                _process = subprocess.Popen(
                    [python, "-m", "dimitra.backend.cli", "serve", "--bind", address],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancelled():
                raise BackendStartError("cancelled while the local backend was starting")
            if _process.poll() is not None:
                raise BackendStartError(
                    f"the local backend ({python} -m dimitra.backend.cli serve) exited with code "
                    f"{_process.returncode}: {_log_tail()}; check that this Python has "
                    "Dimitra installed (`pip install dimitra-blender[backend]`)")
            if _answers(address, 1.0):
                return address
            time.sleep(0.5)
        stop()
        raise BackendStartError(f"the local backend did not answer at {address} within "
                                f"{timeout:.0f} s: {_log_tail()}")


def stop() -> None:
    """Stop the backend this add-on started (if any): SIGTERM, then kill after 10 s."""
    global _process
    process, _process = _process, None
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
