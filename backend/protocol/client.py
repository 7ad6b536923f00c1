"""The client of the Dimitra service: a DEALER socket speaking docs/PROTOCOL.md.

Used by the Blender add-on (which vendors this package), `dimitra client`, batch scripts and
the tests. Nothing here blocks forever: `info` is retried Lazy-Pirate style (a fresh socket
for every try) and gives up with a clear error after `timeout` seconds; an `animate` job must
be accepted within `timeout`, and is abandoned when the server stays silent (no progress, no
heartbeat) for `server_silence` seconds. A server that refuses the CurveZMQ handshake is
reported as soon as the refusal is known.

A client is not thread-safe (ZeroMQ sockets belong to one thread): use one per thread.
Imports the standard library, numpy and pyzmq only.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import zmq

from . import messages as m
from .constants import DEFAULT_SERVER, HEARTBEAT_S, PEER_SILENCE_S

POLL_S = 0.1               # how often a waiting client checks for cancellation


class ServiceError(RuntimeError):
    """The server answered with an error, or did not answer. `code` is one of
    messages.ERROR_CODES, or 'unreachable' / 'server_lost' for a missing server."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code, self.field = code, field


class JobCancelled(ServiceError):
    def __init__(self, message: str = "the job was cancelled"):
        super().__init__(m.CANCELLED, message)


@dataclass
class CurveKeys:
    """CurveZMQ keys of a client: the server's public key and this client's key pair, as
    written by zmq.auth.create_certificates (`NAME.key`, `NAME.key_secret`)."""
    server_public_file: str | Path
    client_secret_file: str | Path

    def apply(self, socket: zmq.Socket) -> None:
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(self.server_public_file)
        public, secret = zmq.auth.load_certificate(self.client_secret_file)
        if secret is None:
            raise ValueError(f"{self.client_secret_file} holds no secret key; pass the client's "
                             "`.key_secret` file")
        socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = (
            server_public, public, secret)


@dataclass
class AnimateResult:
    job_id: str
    motion: bytes                           # the motion file (.npz bytes, docs/FORMATS.md)
    reference_points: np.ndarray | None     # (478, 2) float32, reference image pixels
    summary: dict                           # frames, fps, duration_s, timing_s, worker
    latency_s: float                        # request sent -> result received


@dataclass
class DetectResult:
    job_id: str
    points: np.ndarray                      # (478, 2) float32, the picture's pixels
    summary: dict                           # image_size, server_id, worker_pid
    latency_s: float


ProgressCallback = Callable[[str, float], None]


def detect_unsupported(error: ServiceError) -> bool:
    """The server predates `detect` (docs/PROTOCOL.md): it refused the message type."""
    return error.code == m.BAD_REQUEST and error.field == "type"


class DimitraClient:
    def __init__(self, address: str = DEFAULT_SERVER, timeout: float = 3.0, retries: int = 3,
                 server_silence: float = PEER_SILENCE_S, curve: CurveKeys | None = None,
                 context: zmq.Context | None = None):
        """timeout: seconds to wait for a first answer, all tries together; retries: tries of
        an idempotent request (`info`); server_silence: seconds without a word from the
        server during a job before it counts as gone."""
        self.address, self.timeout, self.retries = address, timeout, max(1, retries)
        self.server_silence, self.curve = server_silence, curve
        self.context = context or zmq.Context.instance()
        self.socket: zmq.Socket | None = None

    # -- sockets -----------------------------------------------------------------------------

    def _open(self) -> zmq.Socket:
        if self.socket is None:
            socket = self.context.socket(zmq.DEALER)
            socket.linger = 0                      # never hang on close waiting for a dead peer
            if self.curve is not None:
                self.curve.apply(socket)
            socket.connect(self.address)
            self.socket = socket
        return self.socket

    def _reset(self) -> None:
        """Lazy Pirate: a fresh socket, so a reply to the abandoned try cannot arrive late."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, message: m.Message) -> None:
        # Not blocking: a DEALER blocks a send while it has no connection to queue on. It
        # keeps one through refused TCP connects and reconnects, so having none means the
        # server refused the handshake (CurveZMQ keys), which would otherwise hang us forever.
        try:
            self._open().send_multipart([m.DELIMITER, *message.to_frames()], zmq.NOBLOCK,
                                        copy=False)
        except zmq.Again:
            self._reset()
            raise ServiceError("unreachable", f"the server at {self.address} refused this "
                               f"client's connection: {self._security_hint()}") from None

    def _receive(self, wait_s: float, request_id: str) -> m.Message | None:
        """The next reply to `request_id` within wait_s seconds, or None. Replies to other
        (abandoned) requests are dropped; server heartbeats are returned."""
        socket = self._open()
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not socket.poll(max(1, int(left * 1000)), zmq.POLLIN):
                return None
            frames = socket.recv_multipart()
            _, body = m.split_envelope(frames) if frames and frames[0] == b"" else ([], frames)
            try:
                reply = m.decode_reply(body)
            except m.ProtocolError as error:
                raise ServiceError(m.BAD_REQUEST, f"the server at {self.address} sent a "
                                   f"malformed reply ({error}); is it a Dimitra server of this "
                                   "version?") from error
            if isinstance(reply, m.Heartbeat) or reply.request_id in (request_id, None):
                return reply

    def _security_hint(self) -> str:
        if self.curve is None:
            return ("if it runs `dimitra serve --curve-dir DIR`, give this client CurveZMQ keys "
                    "whose public key is in DIR/clients")
        return ("check that this client's public key is in DIR/clients and that the server key "
                "is DIR/server.key, DIR being the server's `dimitra serve --curve-dir`")

    def _unreachable(self, waited: float) -> ServiceError:
        hint = (f"start one with `dimitra serve`, or check the address; {self._security_hint()}"
                if self.curve is None else
                f"start one with `dimitra serve --curve-dir DIR`, and {self._security_hint()} "
                "(CurveZMQ refuses unknown clients without a reply)")
        return ServiceError("unreachable", f"no Dimitra server answered at {self.address} "
                            f"within {waited:.1f} s: {hint}")

    # -- requests ----------------------------------------------------------------------------

    def info(self) -> dict:
        """Version, model, device, limits and load of the server (retried: it is idempotent)."""
        request = m.InfoRequest(m.new_id())
        per_try = self.timeout / self.retries
        for _ in range(self.retries):
            self._send(request)
            reply = self._receive(per_try, request.request_id)
            while isinstance(reply, m.Heartbeat):     # left over from an earlier job
                reply = self._receive(per_try, request.request_id)
            if reply is not None:
                return self._check(reply, m.ServerInfo).info
            self._reset()
        raise self._unreachable(self.timeout)

    def animate(self, audio: bytes | str | Path, reference: bytes | str | Path,
                options: dict | None = None, fps: float = 25.0, correspondence: bool = True,
                progress: ProgressCallback | None = None,
                cancel: Callable[[], bool] | None = None) -> AnimateResult:
        """Speech + a reference face -> AnimateResult. audio: the bytes or path of an audio
        file; reference: of a picture or neutral-face .npz; options: GenerationOptions fields.
        progress(stage, fraction) is called as the job advances; when cancel() turns true the
        job is cancelled and JobCancelled is raised. Not retried (it is not cheap)."""
        request = m.AnimateRequest(m.new_id(), _read(audio, "audio"), _read(reference, "reference"),
                                   dict(options or {}), float(fps), correspondence)
        started = time.monotonic()
        reply = self._job(request, progress, cancel)
        return AnimateResult(reply.job_id, reply.motion, reply.reference_points, reply.summary,
                             time.monotonic() - started)

    def detect(self, picture: bytes | str | Path,
               cancel: Callable[[], bool] | None = None) -> DetectResult:
        """The landmarks of the one main face in a picture (bytes or path), nothing generated.
        A picture without a usable face raises ServiceError `bad_reference`; a server older
        than `detect` raises ServiceError `bad_request` with field 'type' (see
        `detect_unsupported`). Not retried."""
        request = m.DetectRequest(m.new_id(), _read(picture, "picture"))
        started = time.monotonic()
        reply = self._job(request, None, cancel)
        return DetectResult(reply.job_id, np.array(reply.points), reply.summary,
                            time.monotonic() - started)

    def _job(self, request: m.Message, progress: ProgressCallback | None,
             cancel: Callable[[], bool] | None) -> m.Message:
        """Send a job request and follow it to its end: the final reply (Result, Detected);
        errors raise. Heartbeats both ways, cancel repeated until the job ends."""
        self._send(request)
        reply = self._receive(self.timeout, request.request_id)
        if reply is None:
            self._reset()
            raise self._unreachable(self.timeout)
        job_id, cancel_id = None, m.new_id()
        cancel_at: float | None = None     # when the cancel was last sent
        last_heard = last_beat = time.monotonic()
        while True:
            if isinstance(reply, m.Accepted):
                job_id = reply.job_id
                if progress is not None:
                    progress("queued" if reply.queue_position else "started", 0.0)
            elif isinstance(reply, m.Progress) and progress is not None:
                progress(reply.stage, reply.fraction)
            elif isinstance(reply, (m.Result, m.Detected)):
                return reply
            elif reply is not None and not isinstance(reply, (m.Heartbeat, m.Progress)):
                self._check(reply, m.Result if isinstance(request, m.AnimateRequest)
                            else m.Detected)
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_S:
                self._send(m.Heartbeat(request.request_id))
                last_beat = now
            if cancel_at is None and job_id is not None and cancel is not None and cancel():
                cancel_at = -HEARTBEAT_S
            if cancel_at is not None and now - cancel_at >= HEARTBEAT_S:
                # Repeated every heartbeat until the job ends: behind a zmq.proxy a message
                # reaches one of the servers in turn, not necessarily the job's.
                self._send(m.CancelRequest(cancel_id, job_id))
                cancel_at = now
            reply = self._receive(POLL_S, request.request_id)
            if reply is not None:
                last_heard = time.monotonic()
            elif time.monotonic() - last_heard > self.server_silence:
                self._reset()
                raise ServiceError("server_lost", f"the Dimitra server at {self.address} went "
                                   f"silent for {self.server_silence:.0f} s during job {job_id}; "
                                   "it may have stopped or lost its network. Try again.")

    def _check(self, reply: m.Message, expected: type[m.Message]) -> m.Message:
        if isinstance(reply, m.Error):
            if reply.code == m.CANCELLED:
                raise JobCancelled(reply.message)
            raise ServiceError(reply.code, reply.message, reply.field)
        if not isinstance(reply, expected):
            raise ServiceError(m.BAD_REQUEST, f"the server at {self.address} answered "
                               f"'{reply.type}' where '{expected.type}' was due")
        return reply


def _read(source: bytes | str | Path, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"the {name} file '{path}' does not exist; check the path")
    return path.read_bytes()
