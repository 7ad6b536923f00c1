"""`dimitra serve`: the Dimitra service (docs/PROTOCOL.md) in front of a pool of workers.

One thread owns a ROUTER socket facing clients (bound, or connected to a zmq.proxy's back
end) and a ROUTER socket facing the worker processes, and polls both: it validates every
request before a worker sees it, answers `info` itself, queues `animate` and `detect` jobs
(bounded: past the queue a `busy` error), hands them to idle workers, relays progress and
results, and sends heartbeats to clients with open jobs. A job whose client went away (ZeroMQ says the peer is
unreachable, or no word from it for `client_timeout` s) is cancelled, freeing its worker.
SIGTERM drains: no new jobs, open ones finish, then the workers stop and the server exits 0.
"""

import json
import os
import shutil
import signal
import socket as socket_module
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from ..protocol import messages as m
from ..protocol.constants import (
    DEFAULT_SERVER,
    HEARTBEAT_S,
    PEER_SILENCE_S,
    WORKER_DETECTED,
    WORKER_FAILED,
    WORKER_JOB,
    WORKER_PROGRESS,
    WORKER_READY,
    WORKER_RESULT,
    WORKER_STOP,
    worker_identity,
)
from .workers import WorkerSettings, start_worker

POLL_MS = 100
READY_TIMEOUT_S = 300.0     # loading the model on a cold machine


@dataclass
class ServerConfig:
    bind: str = DEFAULT_SERVER
    connect: str | None = None       # a zmq.proxy's back end to serve behind, instead of bind
    workers: int = 1
    queue: int = 8                   # jobs waiting for a worker; past this, `busy`
    max_audio_seconds: float = 600.0
    max_message_mb: float = 64.0
    curve_dir: str | None = None
    client_timeout: float = PEER_SILENCE_S   # s without a word from a client before its jobs stop; 0 = never
    drain_timeout: float = 600.0     # s SIGTERM waits for open jobs
    worker: WorkerSettings = field(default_factory=lambda: WorkerSettings(model_path=""))


@dataclass
class Job:
    seq: int
    job_id: str
    envelope: list[bytes]            # routes replies back to the client (through any proxies)
    request: m.AnimateRequest | m.DetectRequest
    worker: bytes | None = None
    cancelled: bool = False


@dataclass
class Worker:
    index: int
    process: object
    cancel_seq: object               # multiprocessing.Value('q'): seq of the job to stop
    ready: bool = False
    job: Job | None = None
    info: dict = field(default_factory=dict)

    @property
    def identity(self) -> bytes:
        return worker_identity(self.index)


class Server:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.context = zmq.Context()
        self.max_bytes = int(config.max_message_mb * 2**20)
        self.server_id = f"{socket_module.gethostname()}:{os.getpid()}"
        self.jobs: dict[str, Job] = {}
        self.queue: deque[Job] = deque()
        self.workers: dict[bytes, Worker] = {}
        self.last_seen: dict[tuple, float] = {}
        self.draining = False
        self.drain_started = 0.0
        self.next_seq = 1
        self.authenticator = None
        self._folder = tempfile.mkdtemp(prefix="dimitra-serve-")   # 0700: ipc endpoints
        self.backend = self.context.socket(zmq.ROUTER)
        self.backend.linger = 0
        if zmq.has("ipc"):
            self.backend_address = f"ipc://{self._folder}/workers"
            self.backend.bind(self.backend_address)
        else:
            port = self.backend.bind_to_random_port("tcp://127.0.0.1")
            self.backend_address = f"tcp://127.0.0.1:{port}"
        self.front = None

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> str:
        """Start the workers, wait until each has loaded the model, then open the front socket.
        Returns the address served. Raises RuntimeError when a worker cannot load the model."""
        import multiprocessing

        for index in range(self.config.workers):
            cancel_seq = multiprocessing.get_context("spawn").Value("q", 0)
            worker = Worker(index, None, cancel_seq)
            worker.process = start_worker(index, self.backend_address, self.config.worker,
                                          cancel_seq)
            self.workers[worker.identity] = worker
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(w.ready for w in self.workers.values()):
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the workers did not load the model within {READY_TIMEOUT_S:.0f} s")
            if self.backend.poll(POLL_MS):
                self._from_worker(self.backend.recv_multipart())
            for worker in self.workers.values():
                if not worker.process.is_alive() and not worker.ready:
                    self.close()
                    raise RuntimeError(f"worker {worker.index} exited (code "
                                       f"{worker.process.exitcode}) while loading the model; "
                                       "its error is above")
        self.front = self._front_socket()
        return self.config.connect or self.config.bind

    def _front_socket(self) -> zmq.Socket:
        front = self.context.socket(zmq.ROUTER)
        front.linger = 0
        front.router_mandatory = True              # a vanished client raises, not vanishes
        # libzmq drops the connection of a peer sending a frame over this; the server itself
        # answers `too_large` for messages between the limit and this hard cap.
        front.maxmsgsize = 2 * self.max_bytes + m.MAX_HEADER_BYTES
        if self.config.curve_dir:
            self._secure(front, Path(self.config.curve_dir))
        if self.config.connect:
            front.connect(self.config.connect)
        else:
            front.bind(self.config.bind)
        return front

    def _secure(self, front: zmq.Socket, folder: Path) -> None:
        """CurveZMQ: encryption, and only clients whose public key is in folder/clients."""
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        secret_file, clients = folder / "server.key_secret", folder / "clients"
        if not secret_file.is_file() or not clients.is_dir():
            raise RuntimeError(f"--curve-dir {folder} must hold server.key_secret and a clients/ "
                               "folder of allowed client public keys (*.key); make them with "
                               "zmq.auth.create_certificates (docs/PROTOCOL.md, Security)")
        public, secret = zmq.auth.load_certificate(secret_file)
        self.authenticator = ThreadAuthenticator(self.context)
        self.authenticator.start()
        self.authenticator.configure_curve(domain="*", location=str(clients))
        front.curve_secretkey, front.curve_publickey, front.curve_server = secret, public, True

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.process is not None and worker.process.is_alive():
                try:
                    self.backend.send_multipart([worker.identity, WORKER_STOP], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        for worker in self.workers.values():
            if worker.process is not None:
                worker.process.join(timeout=5)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join(timeout=5)
        if self.authenticator is not None:
            self.authenticator.stop()
        for sock in (self.front, self.backend):
            if sock is not None:
                sock.close(linger=0)
        self.context.term()
        shutil.rmtree(self._folder, ignore_errors=True)

    def request_drain(self, *_) -> None:
        """SIGTERM: finish open jobs, refuse new ones, then stop."""
        if not self.draining:
            self.draining, self.drain_started = True, time.monotonic()

    # -- the loop ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        last_beat = time.monotonic()
        while not (self.draining and not self.jobs):
            for sock, _ in poller.poll(POLL_MS):
                # Drain what is waiting without blocking, so one busy side cannot starve the other.
                for _ in range(100):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    if sock is self.front:
                        self._from_client(frames)
                    else:
                        self._from_worker([bytes(f.buffer) for f in frames])
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_S:
                last_beat = now
                self._heartbeats()
                self._expire_silent_clients(now)
                self._replace_dead_workers()
            if self.draining and now - self.drain_started > self.config.drain_timeout:
                for job in list(self.jobs.values()):
                    self._finish(job, m.Error(job.request.request_id, m.SHUTTING_DOWN,
                                              "the server is shutting down and could not finish "
                                              "this job in time; send it again",
                                              job.job_id))
            self._dispatch()

    # -- clients -----------------------------------------------------------------------------

    def _from_client(self, frames: list) -> None:
        size = sum(len(f) for f in frames)
        frames = [bytes(f.buffer) for f in frames]
        envelope, body = m.split_envelope(frames)
        if not envelope:
            return                                 # cannot happen on a ROUTER; nobody to answer
        self.last_seen[tuple(envelope)] = time.monotonic()
        if size > self.max_bytes:
            self._send(envelope, m.Error(None, m.TOO_LARGE, f"the message is {size / 2**20:.1f} "
                                         f"MB, over this server's {self.config.max_message_mb:g} "
                                         "MB limit; send shorter audio or a smaller picture"))
            return
        try:
            request = m.decode_request(body)
        except m.ProtocolError as error:
            self._send(envelope, m.Error.from_protocol_error(error))
            return
        if isinstance(request, m.InfoRequest):
            self._send(envelope, m.ServerInfo(request.request_id, self.info()))
        elif isinstance(request, m.JOB_REQUESTS):
            self._accept(envelope, request)
        elif isinstance(request, m.CancelRequest):
            job = self.jobs.get(request.job_id)
            if job is None or job.envelope[-1:] != envelope[-1:]:   # only its own client's jobs
                self._send(envelope, m.Error(request.request_id, m.UNKNOWN_JOB,
                                             f"no open job {request.job_id!r} here; it may have "
                                             "finished already", request.job_id, "job_id"))
            else:
                self._cancel(job, "the job was cancelled at the client's request")
        # Heartbeats need no answer: last_seen is updated above.

    def _accept(self, envelope: list[bytes],
                request: m.AnimateRequest | m.DetectRequest) -> None:
        if self.draining:
            self._send(envelope, m.Error(request.request_id, m.SHUTTING_DOWN,
                                         "the server is shutting down; send the job to another "
                                         "server or try again when it is back"))
            return
        idle = sum(1 for w in self.workers.values() if w.ready and w.job is None)
        if len(self.queue) >= self.config.queue + idle:
            self._send(envelope, m.Error(request.request_id, m.BUSY,
                                         f"all {len(self.workers)} workers are busy and "
                                         f"{len(self.queue)} jobs are waiting; try again in a "
                                         "moment or start more workers (--workers)"))
            return
        job = Job(self.next_seq, m.new_id(), envelope, request)
        self.next_seq += 1
        self.jobs[job.job_id] = job
        self.queue.append(job)
        self._send(envelope, m.Accepted(request.request_id, job.job_id, max(0, len(self.queue) - idle)))

    def _send(self, envelope: list[bytes], message: m.Message) -> bool:
        """Send to a client; False when it is gone (then its jobs are cancelled)."""
        try:
            self.front.send_multipart([*envelope, m.DELIMITER, *message.to_frames()],
                                      zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError as error:  # EHOSTUNREACH (gone) or EAGAIN (not reading)
            if error.errno == zmq.EHOSTUNREACH:
                for job in list(self.jobs.values()):
                    if job.envelope == envelope:
                        self._cancel(job, "the client disconnected", notify=False)
            return False

    def _heartbeats(self) -> None:
        for envelope in {tuple(job.envelope): job for job in self.jobs.values()}.items():
            self._send(list(envelope[0]), m.Heartbeat(envelope[1].request.request_id))

    def _expire_silent_clients(self, now: float) -> None:
        timeout = self.config.client_timeout
        if timeout <= 0:
            return
        for job in list(self.jobs.values()):
            if now - self.last_seen.get(tuple(job.envelope), now) > timeout:
                self._cancel(job, f"no heartbeat from the client for {timeout:g} s", notify=False)
        self.last_seen = {k: t for k, t in self.last_seen.items() if now - t <= max(timeout, 60)}

    def info(self) -> dict:
        first = next(iter(self.workers.values())).info
        busy = sum(1 for w in self.workers.values() if w.job is not None)
        return {"server": "dimitra", "version": _package_version(), "protocol": m.PROTOCOL_VERSION,
                "server_id": self.server_id, "model": first.get("model"),
                "device": first.get("device"), "runtime": first.get("runtime", self.config.worker.runtime),
                "workers": len(self.workers),
                "limits": {"max_audio_seconds": self.config.max_audio_seconds,
                           "max_message_mb": self.config.max_message_mb,
                           "max_image_side": 4096, "max_image_megapixels": 40,
                           "queue": self.config.queue},
                "load": {"running": busy, "queued": len(self.queue)},
                "draining": self.draining}

    # -- jobs and workers --------------------------------------------------------------------

    def _dispatch(self) -> None:
        for worker in self.workers.values():
            if not self.queue:
                return
            if worker.ready and worker.job is None and worker.process.is_alive():
                job = self.queue.popleft()
                job.worker, worker.job = worker.identity, job
                request = job.request
                if isinstance(request, m.DetectRequest):
                    settings, audio, picture = {"kind": "detect"}, b"", request.picture
                else:
                    settings = {"options": request.options, "fps": request.fps,
                                "correspondence": request.correspondence}
                    audio, picture = request.audio, request.reference
                self.backend.send_multipart([worker.identity, WORKER_JOB, str(job.seq).encode(),
                                             json.dumps(settings).encode(), audio, picture],
                                            copy=False)

    def _cancel(self, job: Job, why: str, notify: bool = True) -> None:
        if job.worker is None:                       # still queued: just drop it
            self.queue.remove(job)
            self._finish(job, m.Error(job.request.request_id, m.CANCELLED, why, job.job_id),
                         notify)
        elif not job.cancelled:                      # running: the worker stops at its next check
            job.cancelled = True
            self.workers[job.worker].cancel_seq.value = job.seq
            if not notify:
                job.envelope = []                    # nobody to tell when it stops

    def _finish(self, job: Job, reply: m.Message, notify: bool = True) -> None:
        self.jobs.pop(job.job_id, None)
        if job in self.queue:
            self.queue.remove(job)
        if job.worker is not None:
            worker = self.workers.get(job.worker)
            if worker is not None and worker.job is job:
                worker.job = None
        if notify and job.envelope:
            self._send(job.envelope, reply)

    def _from_worker(self, frames: list[bytes]) -> None:
        identity, kind, *rest = frames
        worker = self.workers.get(identity)
        if worker is None:
            return
        if kind == WORKER_READY:
            worker.ready, worker.info = True, json.loads(rest[0])
            return
        if kind == WORKER_FAILED:
            print(f"dimitra serve: worker {worker.index} could not load the model: "
                  f"{rest[0].decode()}", file=sys.stderr)
            return
        job = worker.job
        if job is None or str(job.seq).encode() != rest[0]:
            return                                   # a reply for a job already given up
        request_id = job.request.request_id
        if kind == WORKER_PROGRESS:
            if job.envelope and not job.cancelled:
                status = json.loads(rest[1])
                self._send(job.envelope, m.Progress(request_id, job.job_id, status["stage"],
                                                    status["fraction"]))
            return
        if kind == WORKER_RESULT:
            summary, motion, points = json.loads(rest[1]), rest[2], rest[3]
            summary["server_id"] = self.server_id
            points = np.frombuffer(points, "<f4").reshape(m.LANDMARK_COUNT, 2) if points else None
            reply = m.Result(request_id, job.job_id, motion, points, summary)
        elif kind == WORKER_DETECTED:
            summary = {**json.loads(rest[1]), "server_id": self.server_id}
            points = np.frombuffer(rest[2], "<f4").reshape(m.LANDMARK_COUNT, 2)
            reply = m.Detected(request_id, job.job_id, points, summary)
        else:
            error = json.loads(rest[1])
            reply = m.Error(request_id, error["code"], error["message"], job.job_id)
        self._finish(job, reply)

    def _replace_dead_workers(self) -> None:
        for worker in self.workers.values():
            if worker.ready and not worker.process.is_alive():
                print(f"dimitra serve: worker {worker.index} died (exit code "
                      f"{worker.process.exitcode}); starting a new one", file=sys.stderr)
                if worker.job is not None:
                    self._finish(worker.job, m.Error(worker.job.request.request_id, m.INTERNAL,
                                                     "the worker running this job died (out of "
                                                     "memory?); the server started a new one. "
                                                     "Try again.", worker.job.job_id))
                worker.ready = False
                worker.cancel_seq.value = 0
                worker.process = start_worker(worker.index, self.backend_address,
                                              self.config.worker, worker.cancel_seq)


def serve(config: ServerConfig, announce=print) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    server = Server(config)
    try:
        address = server.start()
    except RuntimeError as error:
        print(f"dimitra serve: {error}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, server.request_drain)
    signal.signal(signal.SIGINT, server.request_drain)
    mode = "behind the proxy at" if config.connect else "on"
    announce(f"dimitra serve: serving {mode} {address} with {config.workers} worker(s) "
             f"({server.info()['device']}, {server.info()['runtime']})"
             + (", CurveZMQ" if config.curve_dir else "")
             + (f", test-only stage delay {config.worker.test_stage_delay_s:g} s"
                if config.worker.test_stage_delay_s else ""), flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
    announce("dimitra serve: stopped", flush=True)
    return 0


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dimitra-blender")
    except PackageNotFoundError:
        return "unknown"
