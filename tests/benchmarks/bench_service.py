"""The service under load on loopback: 16 concurrent clients, each sending requests one after
another; latency from sending a request to its final reply, p50 and p95 (issue 4).

`info` requests measure the front (answered without a worker); `animate` requests of a short
line measure real jobs through --workers processes and the queue.
"""

import io
import json
import statistics
import sys
import threading
import time

import numpy as np
import soundfile


def _load(address: str, clients: int, requests: int, call) -> dict:
    """Run `call(client)` `requests` times in each of `clients` threads; latency figures."""
    from dimitra.backend.protocol.client import DimitraClient

    latencies, failures = [], []

    def one_client() -> None:
        with DimitraClient(address, timeout=30) as client:
            for _ in range(requests):
                started = time.perf_counter()
                try:
                    call(client)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    failures.append(repr(error))
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "requests_each": requests, "replies": len(latencies),
            "failures": len(failures), "first_failures": failures[:3],
            "p50_ms": round(quantiles[49] * 1000, 1), "p95_ms": round(quantiles[94] * 1000, 1),
            "throughput_per_s": round(len(latencies) / wall, 2), "wall_s": round(wall, 1)}


def main(clients: int = 16, info_requests: int = 20, animate_requests: int = 5,
         workers: int = 2, audio_seconds: float = 2.0) -> dict:
    from dimitra.backend.demo import SPEECH
    from dimitra.backend.media.audio import load_audio
    from tests.service.server_process import REPO, ServerProcess

    buffer = io.BytesIO()
    speech = load_audio(SPEECH)[:int(audio_seconds * 16_000)]
    soundfile.write(buffer, np.asarray(speech), 16_000, format="WAV")
    audio, image = buffer.getvalue(), (REPO / "samples" / "reference_face.jpg").read_bytes()
    server = ServerProcess("--workers", str(workers), "--queue", str(clients))
    try:
        results = {"workers": workers, "torch_threads_per_worker": 1,
                   "info": _load(server.address, clients, info_requests, lambda c: c.info()),
                   "animate": _load(server.address, clients, animate_requests,
                                    lambda c: c.animate(audio, image)),
                   "animate_audio_s": audio_seconds}
    finally:
        server.terminate()
    for kind in ("info", "animate"):
        r = results[kind]
        print(f"{kind}: {r['clients']} clients x {r['requests_each']}: {r['replies']} replies, "
              f"{r['failures']} failures, p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
              f"{r['throughput_per_s']}/s", file=sys.stderr)
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
