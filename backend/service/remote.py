"""`dimitra client info|animate --server ADDRESS`: the shell's way to a remote backend.

Scripts and smoke tests use it like `dimitra animate`: same options, same motion file. No
torch here: a machine without the model can drive a server that has one.
"""

import sys
from pathlib import Path

from backend.protocol.client import AnimateResult, CurveKeys, DimitraClient
from retarget.atomic_file import atomic_open


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


def remote_animate(audio: str | Path, reference: str | Path, out: str | Path, options: dict,
                   fps: float, address: str, curve: CurveKeys | None = None,
                   timeout: float = 3.0, show_progress: bool = True) -> AnimateResult:
    """Send the job, report progress on stderr, write the motion file atomically to `out`."""
    def progress(stage: str, fraction: float) -> None:
        if show_progress:
            print(f"\r{stage:<10} {fraction:6.1%}", end="", file=sys.stderr, flush=True)

    with DimitraClient(address, timeout=timeout, curve=curve) as client:
        try:
            result = client.animate(audio, reference, options, fps, progress=progress)
        finally:
            if show_progress:
                print(file=sys.stderr)
    with atomic_open(out) as handle:
        handle.write(result.motion)
    return result
