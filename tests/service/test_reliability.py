"""Malformed messages, load, SIGTERM, CurveZMQ and a zmq.proxy front, against real servers."""

import itertools
import json
import random
import threading
import time

import pytest

from dimitra.backend.protocol import messages as m
from dimitra.backend.protocol.client import CurveKeys, DimitraClient, ServiceError
from tests.service.conftest import RawPeer
from tests.service.server_process import ServerProcess, free_port

pytestmark = pytest.mark.timeout(300)


def _malformed_messages(rng: random.Random, audio: bytes, image: bytes, max_bytes: int):
    """(frames, expected error code or None) pairs, 9 kinds in turn; None: any code."""
    def header(**fields) -> bytes:
        base = {"protocol": 1, "type": "animate", "request_id": f"f{rng.randrange(10**9)}"}
        return json.dumps({**base, **fields}).encode()

    def noise(low: int = 0, high: int = 300) -> bytes:
        return rng.randbytes(rng.randint(low, high))

    kinds = [
        lambda: ([noise(1) for _ in range(rng.randint(1, 5))], m.BAD_REQUEST),
        lambda: ([header(protocol=rng.choice([0, 2, "1", None, 1.5]))], m.UNSUPPORTED_VERSION),
        lambda: ([header(type="info")[:rng.randint(1, 40)]], m.BAD_REQUEST),
        lambda: ([json.dumps(rng.choice([[], "info", 7, None])).encode()], m.BAD_REQUEST),
        lambda: ([header(type=rng.choice(["paint", "", 3, None, "result"]))], m.BAD_REQUEST),
        lambda: ([header(options={rng.choice(["sed", "steps", "blink"]): "x"}), audio, image],
                 m.BAD_REQUEST),
        # Reach a worker: audio cut inside its header, garbage or truncated pictures.
        lambda: ([header(), audio[:rng.randint(1, 44)], image], m.BAD_AUDIO),
        lambda: ([header(), audio, rng.choice([noise(1), image[:rng.randint(1, 2000)]])],
                 m.BAD_REFERENCE),
        lambda: ([header(), b"\0" * (max_bytes + 1), image], m.TOO_LARGE),
    ]
    while True:
        for kind in kinds:
            yield kind()


@pytest.mark.timeout(400)
def test_a_thousand_malformed_messages_each_get_an_error_and_the_server_lives(
        server, short_audio, reference_image):
    rng = random.Random(7)
    peer = RawPeer(server.address)
    max_bytes = 8 * 2**20
    messages = _malformed_messages(rng, short_audio, reference_image, max_bytes)
    counts: dict[str, int] = {}
    try:
        for number in range(1080):
            frames, expected = next(messages)
            peer.send(frames)
            reply = peer.final_reply(30)
            assert isinstance(reply, m.Error), f"message {number}: {frames[:1]!r} got {reply}"
            if expected is not None:
                assert reply.code == expected, f"message {number}: {reply}"
            if reply.request_id is not None:
                assert reply.request_id == json.loads(frames[0])["request_id"]
            counts[reply.code] = counts.get(reply.code, 0) + 1
        # Missing delimiter: still answered, to the identity it came from.
        peer.send([b"\x01\x02garbage"], delimiter=False)
        assert peer.final_reply(10).code == m.BAD_REQUEST
        # A frame over the hard cap: ZeroMQ drops the connection, no answer is possible;
        # the DEALER reconnects by itself and the server goes on.
        peer.send([b"\0" * (2 * max_bytes + 2**20)])
        assert peer.final_reply(3) is None
    finally:
        peer.close()
    assert sum(counts.values()) == 1080 and len(counts) == 5, counts
    assert server.process.poll() is None
    with DimitraClient(server.address) as client:
        result = client.animate(short_audio, reference_image)
    assert result.summary["frames"] == 50


def test_sixteen_clients_twenty_requests_each_nothing_lost(server):
    latencies: list[float] = []
    failures: list[BaseException] = []

    def one_client() -> None:
        try:
            with DimitraClient(server.address, timeout=10, retries=1) as client:
                for _ in range(20):
                    started = time.perf_counter()
                    info = client.info()           # a reply to another request is dropped
                    latencies.append(time.perf_counter() - started)
                    assert info["server_id"]
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=one_client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    assert len(latencies) == 16 * 20


@pytest.mark.timeout(200)
def test_sigterm_finishes_the_open_job_then_exits_cleanly(short_audio, reference_image):
    # Each job is held 10 s as its sampling starts: the refused request below, sent at once,
    # is far inside that, so it meets a draining server whatever the machine's speed.
    own = ServerProcess("--workers", "1", stage_delay=10)
    outcome = {}
    sampling = threading.Event()

    def run_job() -> None:
        with DimitraClient(own.address) as client:
            try:
                outcome["result"] = client.animate(
                    short_audio, reference_image,
                    progress=lambda stage, fraction: stage == "sampling" and sampling.set())
            except ServiceError as error:
                outcome["error"] = error

    job = threading.Thread(target=run_job)
    job.start()
    try:
        assert sampling.wait(60)
        own.process.send_signal(15)
        # While draining, new jobs are refused with a reason.
        with DimitraClient(own.address) as client, pytest.raises(ServiceError) as refused:
            client.animate(short_audio, reference_image)
        assert refused.value.code == m.SHUTTING_DOWN
        job.join(120)
        assert "result" in outcome, outcome
        assert own.process.wait(30) == 0
        assert "stopped" in own.output
    finally:
        own.kill()
    worker_pid = outcome["result"].summary["worker_pid"]
    assert not _process_exists(worker_pid)


def _process_exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(200)
def test_curve_admits_known_clients_and_refuses_strangers(tmp_path):
    import zmq.auth

    keys = tmp_path / "keys"
    (keys / "clients").mkdir(parents=True)
    zmq.auth.create_certificates(keys, "server")
    zmq.auth.create_certificates(tmp_path, "artist")
    zmq.auth.create_certificates(tmp_path, "stranger")
    (keys / "clients" / "artist.key").write_bytes((tmp_path / "artist.key").read_bytes())
    secure = ServerProcess("--curve-dir", str(keys))
    try:
        artist = CurveKeys(keys / "server.key", tmp_path / "artist.key_secret")
        with DimitraClient(secure.address, curve=artist) as client:
            assert client.info()["model"] == "cmdt_default.safetensors"
        stranger = CurveKeys(keys / "server.key", tmp_path / "stranger.key_secret")
        for curve, handshake_first in itertools.product((stranger, None), (False, True)):
            started = time.monotonic()
            with DimitraClient(secure.address, timeout=1.0, curve=curve) as client, \
                    pytest.raises(ServiceError) as refused:
                if handshake_first:
                    # A busy machine: the handshake is refused before the request is queued,
                    # which once left the send waiting forever for a connection.
                    client._open()
                    time.sleep(0.5)
                client.info()
            assert refused.value.code == "unreachable"
            assert time.monotonic() - started < 30, "a refused client must not hang"
            assert "clients" in str(refused.value) and "dimitra serve" in str(refused.value)
    finally:
        secure.terminate()


@pytest.mark.timeout(300)
def test_two_servers_behind_one_zmq_proxy_share_the_work(short_audio, reference_image):
    from dimitra.backend.service.proxy import Proxy

    front, back = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    proxy = Proxy(front, back).start()
    servers = [ServerProcess("--connect", back, "--workers", "1", address=front)
               for _ in range(2)]
    try:
        with DimitraClient(front) as client:
            seen = {client.info()["server_id"] for _ in range(6)}
        assert len(seen) == 2
        results = []

        def animate() -> None:
            with DimitraClient(front) as client:
                results.append(client.animate(short_audio, reference_image))

        threads = [threading.Thread(target=animate) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(results) == 4 and all(r.summary["frames"] == 50 for r in results)
        assert {r.summary["server_id"] for r in results} <= seen
    finally:
        for running in servers:
            assert running.terminate() == 0
        proxy.stop()
