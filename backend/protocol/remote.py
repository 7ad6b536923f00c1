"""`dimitra client info|animate --server ADDRESS`: the shell's way to a remote backend.

Scripts and smoke tests use it like `dimitra animate`: same options, same motion file. Beside
the client it drives, and like it standard library, numpy and pyzmq only: a machine without
the model (no torch) can drive a server that has one. Writing the motion file is the CLI's
(backend/cli.py, atomically, as every motion file is written).
"""

import sys
from pathlib import Path

from .client import AnimateResult, CurveKeys, DimitraClient


def curve_keys(server_key: str | None, client_key: str | None) -> CurveKeys | None:
    if not server_key and not client_key:
        return None
    if not (server_key and client_key):
        raise SystemExit("dimitra client: CurveZMQ needs both --server-key (the server's .key) "
                         "and --client-key (this client's .key_secret)")
    return CurveKeys(server_key, client_key)


def remote_info(address: str, curve: CurveKeys | None = None, timeout: float = 3.0) -> dict:
    with DimitraClient(address, timeout=timeout, curve=curve) as client:
        return client.info()


def remote_animate(audio: str | Path, reference: str | Path, options: dict, fps: float,
                   address: str, curve: CurveKeys | None = None, timeout: float = 3.0,
                   show_progress: bool = True) -> AnimateResult:
    """Send the job and report its progress on stderr; the result's `motion` is the motion
    file's bytes."""
    def progress(stage: str, fraction: float) -> None:
        if show_progress:
            print(f"\r{stage:<10} {fraction:6.1%}", end="", file=sys.stderr, flush=True)

    with DimitraClient(address, timeout=timeout, curve=curve) as client:
        try:
            return client.animate(audio, reference, options, fps, progress=progress)
        finally:
            if show_progress:
                print(file=sys.stderr)
