"""Real `dimitra serve` processes on loopback, with the shipped model, for the service tests.

Servers run one worker with one torch thread (the test machine has two cores); sample audio
is cut short so a job takes about a second. Tests that need a job to stay open (to cancel it,
drop its client, fill the queue) use `held_server`, whose jobs wait at the start of sampling
until cancelled: they never bet on how long real work takes on this machine.
"""

import io
import subprocess

import numpy as np
import pytest
import soundfile

from tests.service.server_process import REPO, ServerProcess, wait_until

SAMPLES = REPO / "samples"
# The test-only stage delay of held_server: far past any test's timeout, so a job there ends
# only when it is cancelled, however fast or slow the machine.
HOLD_S = 3600


def wav_bytes(samples: np.ndarray, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    from dimitra.backend.media.audio import load_audio

    return load_audio(SAMPLES / "speech_en.flac")       # (N,) 16 kHz


@pytest.fixture(scope="session")
def short_audio(speech) -> bytes:
    """Two seconds of the sample speech as WAV bytes."""
    return wav_bytes(speech[:32_000])


@pytest.fixture(scope="session")
def reference_image() -> bytes:
    return (SAMPLES / "reference_face.jpg").read_bytes()


@pytest.fixture(scope="session")
def shared_server():
    """One worker, a queue of one, 8 MB messages, 2 s client timeout, 300 s of audio."""
    running = ServerProcess("--workers", "1", "--queue", "1", "--max-message-mb", "8",
                            "--client-timeout", "2", "--max-audio-seconds", "300")
    yield running
    running.terminate()


@pytest.fixture
def server(shared_server):
    """The shared server, idle before and after the test (no job left running or queued)."""
    yield from _idle_around(shared_server)


@pytest.fixture(scope="session")
def shared_held_server():
    """One worker, a queue of one; every job is held for HOLD_S as its sampling starts. Silent
    clients never time out here, so a dropped client's job is freed by the disconnect alone."""
    running = ServerProcess("--workers", "1", "--queue", "1", "--client-timeout", "0",
                            stage_delay=HOLD_S)
    yield running
    try:
        running.terminate(30)
    except subprocess.TimeoutExpired:     # a held job left behind would hold the drain
        running.kill()


@pytest.fixture
def held_server(shared_held_server):
    """The held server, idle before and after the test."""
    yield from _idle_around(shared_held_server)


def _idle_around(running: ServerProcess):
    assert wait_until(lambda: is_idle(running.address), 30), "the server is still busy"
    yield running
    assert running.process.poll() is None, "the server died:\n" + running.output
    assert wait_until(lambda: is_idle(running.address), 30), "a job was left behind"


def is_idle(address: str) -> bool:
    from dimitra.backend.protocol.client import DimitraClient

    with DimitraClient(address) as client:
        load = client.info()["load"]
    return load["running"] == 0 and load["queued"] == 0


class RawPeer:
    """A bare DEALER socket, for sending what a well-behaved client never would."""

    def __init__(self, address: str):
        import zmq

        self.zmq = zmq
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(address)

    def send(self, frames: list[bytes], delimiter: bool = True) -> None:
        self.socket.send_multipart(([b""] if delimiter else []) + list(frames))

    def replies(self, timeout: float):
        """Decoded replies as they come, until `timeout` s pass without one."""
        from dimitra.backend.protocol import messages as m

        while self.socket.poll(int(timeout * 1000)):
            _, body = m.split_envelope(self.socket.recv_multipart())
            yield m.decode_reply(body)

    def final_reply(self, timeout: float = 30.0):
        """The first reply that ends a request (not accepted, progress or heartbeat)."""
        from dimitra.backend.protocol import messages as m

        for reply in self.replies(timeout):
            if not isinstance(reply, (m.Accepted, m.Progress, m.Heartbeat)):
                return reply
        return None

    def close(self) -> None:
        self.socket.close(linger=0)
