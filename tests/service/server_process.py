"""A real `dimitra serve` in a subprocess on loopback, for the service tests and benchmark."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m dimitra.backend.cli serve ...` in a subprocess; `address` once it serves."""

    def __init__(self, *options: str, address: str | None = None, python: str = sys.executable,
                 stage_delay: float = 0):
        """python: the interpreter with the backend installed (the add-on tests may run
        under another venv's Python); stage_delay: the test-only hold of every job as its
        sampling starts (s; docs/PROTOCOL.md, Testing)."""
        from dimitra.backend.service.workers import TEST_STAGE_DELAY_ENV

        self.address = address or f"tcp://127.0.0.1:{free_port()}"
        where = [] if "--connect" in options else ["--bind", self.address]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop(TEST_STAGE_DELAY_ENV, None)
        if stage_delay:
            env[TEST_STAGE_DELAY_ENV] = str(stage_delay)
        self.process = subprocess.Popen(
            [python, "-m", "dimitra.backend.cli", "serve", *where, "--torch-threads", "1",
             *options], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.lines: list[str] = []
        self._serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(START_TIMEOUT_S):
            self.kill()
            raise RuntimeError("the server did not start:\n" + "".join(self.lines))
        if stage_delay and "test-only stage delay" not in self.output:
            self.kill()
            raise RuntimeError("the server did not take the stage delay:\n" + self.output)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if "serving" in line:
                self._serving.set()
        self._serving.set()  # exited: let the waiter see it

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def wait_until(condition, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
