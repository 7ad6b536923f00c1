"""The wire format of the Dimitra service: one class per message of docs/PROTOCOL.md.

A message on the wire is a ZeroMQ multipart message:

    [envelope ...] b""  header  [binary part ...]

The envelope is what ROUTER sockets (the server, a zmq.proxy) prepend to route replies; the
empty delimiter frame ends it. The header is a UTF-8 JSON object carrying `protocol` (the
version tag), `type` and `request_id`; binary parts (audio, picture, motion file) follow as raw
frames, never inside JSON and never pickled.

Imports the standard library and numpy only: the Blender add-on vendors this package.
The constants (version, limits, error codes) are in `constants`.
"""

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

# The constants are importable from here as well (messages.BUSY, ...), as the service and the
# tests use them; their home is .constants.
from .constants import (  # noqa: F401 (re-exported)
    BAD_AUDIO,
    BAD_REFERENCE,
    BAD_REQUEST,
    BUSY,
    CANCELLED,
    DELIMITER,
    ERROR_CODES,
    INTERNAL,
    LANDMARK_COUNT,
    MAX_HEADER_BYTES,
    MAX_ID_CHARS,
    PROTOCOL_VERSION,
    SHUTTING_DOWN,
    TOO_LARGE,
    UNKNOWN_JOB,
    UNSUPPORTED_VERSION,
)
from .options import option_types

# Generation options an `animate` request may carry, with their JSON types: derived from the
# one table of options, .options.OPTIONS (which backend.generation.generator.GenerationOptions
# is built from too); ranges are checked by .options.validate.
OPTION_TYPES = option_types()


class ProtocolError(ValueError):
    """A message that does not follow docs/PROTOCOL.md. `field` names the offending part."""

    def __init__(self, message: str, field: str | None = None, code: str = BAD_REQUEST,
                 request_id: str | None = None):
        super().__init__(message)
        self.field, self.code, self.request_id = field, code, request_id


def new_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------
# Envelope and header
# ---------------------------------------------------------------------------------------------

def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(routing envelope, body) of a message received on a ROUTER socket.

    The envelope runs up to the first empty frame. A peer that left out the delimiter is still
    answered: its envelope is taken to be the first frame (the identity the ROUTER added).
    """
    for i, frame in enumerate(frames):
        if len(frame) == 0:
            return list(frames[:i]), list(frames[i + 1:])
    return list(frames[:1]), list(frames[1:])


def _header_frame(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def _parse_header(frame: bytes) -> dict:
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(f"the header frame is {len(frame)} bytes, over the "
                            f"{MAX_HEADER_BYTES} byte limit; send audio and pictures as "
                            "binary frames, not inside the JSON", "header")
    try:
        header = json.loads(bytes(frame).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"the header frame is not UTF-8 JSON ({error})", "header") from error
    if not isinstance(header, dict):
        raise ProtocolError("the header frame must be a JSON object", "header")
    request_id = header.get("request_id")
    request_id = request_id if _is_id(request_id) else None
    version = header.get("protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} is not spoken here (this end speaks "
                            f"{PROTOCOL_VERSION}); update the client or the server so they "
                            "match", "protocol", UNSUPPORTED_VERSION, request_id)
    header["request_id"] = request_id
    return header


def _is_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def _get(header: dict, name: str, kind, request_id: str | None = None, optional=False,
         default=None, prefix: str = ""):
    """header[name] checked against `kind` (bool is not taken for int or float); errors name
    the field as prefix + name."""
    if name not in header:
        if optional:
            return default
        raise ProtocolError(f"the header lacks '{prefix}{name}'", prefix + name,
                            request_id=request_id)
    value = header[name]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    if not ok:
        raise ProtocolError(f"'{prefix}{name}' must be {_kind_name(kind)}, got "
                            f"{type(value).__name__}", prefix + name, request_id=request_id)
    return value


def _kind_name(kind) -> str:
    return {int: "an integer", float: "a finite number", bool: "true or false",
            str: "a string", dict: "a JSON object"}.get(kind, kind.__name__)


# ---------------------------------------------------------------------------------------------
# Messages. Each has `type`, `to_frames()` (the body: header + binary parts) and `from_frames`.
# ---------------------------------------------------------------------------------------------

@dataclass
class Message:
    request_id: str
    type: ClassVar[str] = ""
    parts: ClassVar[tuple[str, ...]] = ()     # names of the binary frames after the header

    def header(self) -> dict:
        return {"protocol": PROTOCOL_VERSION, "type": self.type, "request_id": self.request_id}

    def binary_parts(self) -> list[bytes]:
        return []

    def to_frames(self) -> list[bytes]:
        return [_header_frame(self.header()), *self.binary_parts()]

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "Message":
        return cls(request_id=header["request_id"])


@dataclass
class InfoRequest(Message):
    """client -> server: what model, device and limits do you have? (idempotent)"""
    type: ClassVar[str] = "info"


@dataclass
class AnimateRequest(Message):
    """client -> server: speech + a reference face -> motion. Frames: header, audio, reference.

    audio: the bytes of an audio file in any common format; reference: the bytes of a picture
    (JPEG, PNG, WebP, BMP) or of a neutral-face motion file (.npz); options: a subset of
    OPTION_TYPES; fps: frame rate of the motion file; correspondence: also return the
    reference's 2D landmark positions (for ray casts onto the rig).
    """
    audio: bytes = b""
    reference: bytes = b""
    options: dict = field(default_factory=dict)
    fps: float = 25.0
    correspondence: bool = True
    type: ClassVar[str] = "animate"
    parts: ClassVar[tuple[str, ...]] = ("audio", "reference")

    def header(self) -> dict:
        return {**super().header(), "options": self.options, "fps": self.fps,
                "correspondence": self.correspondence}

    def binary_parts(self) -> list[bytes]:
        return [self.audio, self.reference]

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "AnimateRequest":
        request_id = header["request_id"]
        options = _get(header, "options", dict, request_id, optional=True, default={})
        for name in options:
            if name not in OPTION_TYPES:
                raise ProtocolError(f"unknown option '{name}'; known: "
                                    f"{', '.join(OPTION_TYPES)}", f"options.{name}",
                                    request_id=request_id)
            _get(options, name, OPTION_TYPES[name], request_id, prefix="options.")
        options = {name: float(v) if OPTION_TYPES[name] is float else v
                   for name, v in options.items()}
        fps = _get(header, "fps", float, request_id, optional=True, default=25.0)
        if not 1 <= fps <= 240:
            raise ProtocolError(f"'fps' must be between 1 and 240, got {fps}", "fps",
                                request_id=request_id)
        correspondence = _get(header, "correspondence", bool, request_id, optional=True,
                              default=True)
        for name, part in zip(cls.parts, parts):
            if not part:
                raise ProtocolError(f"the {name} frame is empty; send the bytes of the "
                                    f"{name} file", name, request_id=request_id)
        return cls(request_id, bytes(parts[0]), bytes(parts[1]), options, fps, correspondence)


@dataclass
class DetectRequest(Message):
    """client -> server: the landmarks of the one main face in a picture, no generation.
    Frames: header, picture (JPEG, PNG, WebP, BMP, or a neutral-face .npz).

    Clients that render a character from several sides send each render, rank the answers
    and then `animate` with the best one (docs/PROTOCOL.md). Servers before this message
    answer `bad_request` with field `type`.
    """
    picture: bytes = b""
    type: ClassVar[str] = "detect"
    parts: ClassVar[tuple[str, ...]] = ("picture",)

    def binary_parts(self) -> list[bytes]:
        return [self.picture]

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "DetectRequest":
        if not parts[0]:
            raise ProtocolError("the picture frame is empty; send the bytes of the picture",
                                "picture", request_id=header["request_id"])
        return cls(header["request_id"], bytes(parts[0]))


@dataclass
class CancelRequest(Message):
    """client -> server: stop job `job_id`; the job's request then ends with error `cancelled`."""
    job_id: str = ""
    type: ClassVar[str] = "cancel"

    def header(self) -> dict:
        return {**super().header(), "job_id": self.job_id}

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "CancelRequest":
        job_id = _get(header, "job_id", str, header["request_id"])
        return cls(header["request_id"], job_id)


@dataclass
class Heartbeat(Message):
    """both ways, every HEARTBEAT interval while a job is open: I am still here."""
    type: ClassVar[str] = "heartbeat"


@dataclass
class ServerInfo(Message):
    """server -> client, the reply to `info`: version, model, device, limits, load."""
    info: dict = field(default_factory=dict)
    type: ClassVar[str] = "server_info"

    def header(self) -> dict:
        return {**super().header(), "info": self.info}

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "ServerInfo":
        return cls(header["request_id"], _get(header, "info", dict, header["request_id"]))


@dataclass
class Accepted(Message):
    """server -> client: the animate request is queued as job `job_id` (0 = running now)."""
    job_id: str = ""
    queue_position: int = 0
    type: ClassVar[str] = "accepted"

    def header(self) -> dict:
        return {**super().header(), "job_id": self.job_id, "queue_position": self.queue_position}

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "Accepted":
        request_id = header["request_id"]
        return cls(request_id, _get(header, "job_id", str, request_id),
                   _get(header, "queue_position", int, request_id))


@dataclass
class Progress(Message):
    """server -> client: job `job_id` is at `stage`, `fraction` (0..1) of the way done."""
    job_id: str = ""
    stage: str = ""
    fraction: float = 0.0
    type: ClassVar[str] = "progress"

    def header(self) -> dict:
        return {**super().header(), "job_id": self.job_id, "stage": self.stage,
                "fraction": round(float(self.fraction), 4)}

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "Progress":
        request_id = header["request_id"]
        return cls(request_id, _get(header, "job_id", str, request_id),
                   _get(header, "stage", str, request_id),
                   _get(header, "fraction", float, request_id))


@dataclass
class Result(Message):
    """server -> client: the finished job. Frames: header, motion file, reference points.

    motion: the bytes of the motion file (.npz, docs/FORMATS.md), exactly what
    `dimitra animate --out` writes; reference_points: (478, 2) float32, the reference's
    landmarks in its image's pixels (x right, y down), or None when not asked for.
    """
    job_id: str = ""
    motion: bytes = b""
    reference_points: np.ndarray | None = None
    summary: dict = field(default_factory=dict)   # frames, fps, duration_s, timing_s
    type: ClassVar[str] = "result"
    parts: ClassVar[tuple[str, ...]] = ("motion", "reference_points")

    def header(self) -> dict:
        return {**super().header(), "job_id": self.job_id, "summary": self.summary,
                "reference_points": self.reference_points is not None}

    def binary_parts(self) -> list[bytes]:
        points = b"" if self.reference_points is None else np.ascontiguousarray(
            self.reference_points, dtype="<f4").tobytes()
        return [self.motion, points]

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "Result":
        request_id = header["request_id"]
        points = None
        if _get(header, "reference_points", bool, request_id):
            points = _points(parts[1], "reference_points", request_id)
        return cls(request_id, _get(header, "job_id", str, request_id), bytes(parts[0]), points,
                   _get(header, "summary", dict, request_id))


@dataclass
class Detected(Message):
    """server -> client: the answer to `detect`. Frames: header, points.

    points: (478, 2) float32, the face's landmarks in the picture's pixels (x right, y down);
    summary: `image_size` [w, h], `server_id`, `worker_pid`. No face is an `error`
    `bad_reference`, as for `animate`.
    """
    job_id: str = ""
    points: np.ndarray | None = None
    summary: dict = field(default_factory=dict)
    type: ClassVar[str] = "detected"
    parts: ClassVar[tuple[str, ...]] = ("points",)

    def header(self) -> dict:
        return {**super().header(), "job_id": self.job_id, "summary": self.summary}

    def binary_parts(self) -> list[bytes]:
        return [np.ascontiguousarray(self.points, dtype="<f4").tobytes()]

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "Detected":
        request_id = header["request_id"]
        return cls(request_id, _get(header, "job_id", str, request_id),
                   _points(parts[0], "points", request_id),
                   _get(header, "summary", dict, request_id))


def _points(frame: bytes, name: str, request_id: str | None) -> np.ndarray:
    """(478, 2) float32 landmarks from a frame of little-endian float32."""
    expected = LANDMARK_COUNT * 2 * 4
    if len(frame) != expected:
        raise ProtocolError(f"{name} must be {expected} bytes ((478, 2) float32), got "
                            f"{len(frame)}", name, request_id=request_id)
    return np.frombuffer(bytes(frame), dtype="<f4").reshape(LANDMARK_COUNT, 2)


@dataclass
class Error(Message):
    """server -> client: the request failed. request_id is null when the request had none."""
    code: str = INTERNAL
    message: str = ""
    job_id: str | None = None
    field: str | None = None       # the offending part of the request, when one is to blame
    type: ClassVar[str] = "error"

    def header(self) -> dict:
        return {**super().header(), "code": self.code, "message": self.message,
                "job_id": self.job_id, "field": self.field}

    @classmethod
    def from_parts(cls, header: dict, parts: list[bytes]) -> "Error":
        request_id = header["request_id"]
        return cls(request_id, _get(header, "code", str, request_id),
                   _get(header, "message", str, request_id),
                   header.get("job_id"), header.get("field"))

    @classmethod
    def from_protocol_error(cls, error: ProtocolError) -> "Error":
        return cls(error.request_id, error.code, str(error), None, error.field)

    def to_frames(self) -> list[bytes]:
        header = self.header()
        header["request_id"] = self.request_id   # may be None: the request had no usable id
        return [_header_frame(header)]


REQUESTS = {m.type: m for m in (InfoRequest, AnimateRequest, DetectRequest, CancelRequest,
                                 Heartbeat)}
REPLIES = {m.type: m for m in (ServerInfo, Accepted, Progress, Result, Detected, Error,
                               Heartbeat)}
JOB_REQUESTS = (AnimateRequest, DetectRequest)   # queued for a worker: `accepted`, then an end


def decode(body: list[bytes], kinds: dict[str, type[Message]]) -> Message:
    """The message in `body` (header + binary frames, no envelope); raises ProtocolError."""
    if not body:
        raise ProtocolError("the message has no header frame (after the empty delimiter)",
                            "header")
    header = _parse_header(body[0])
    request_id = header["request_id"]
    if request_id is None and header.get("type") != Error.type:  # errors to unreadable requests
        raise ProtocolError(f"'request_id' must be a non-empty string of at most {MAX_ID_CHARS} "
                            "characters", "request_id")
    kind = kinds.get(header.get("type"))
    if kind is None:
        raise ProtocolError(f"unknown message type {header.get('type')!r}; expected one of "
                            f"{', '.join(kinds)}", "type", request_id=request_id)
    parts = body[1:]
    if len(parts) != len(kind.parts):
        names = ", ".join(kind.parts) or "none"
        raise ProtocolError(f"a '{kind.type}' message has {len(kind.parts)} binary frame(s) "
                            f"after the header ({names}), got {len(parts)}", "frames",
                            request_id=request_id)
    try:
        return kind.from_parts(header, parts)
    except ProtocolError as error:
        error.request_id = error.request_id or request_id
        raise


def decode_request(body: list[bytes]) -> Message:
    return decode(body, REQUESTS)


def decode_reply(body: list[bytes]) -> Message:
    return decode(body, REPLIES)
