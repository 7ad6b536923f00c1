"""The constants of the Dimitra service, in one place: the public protocol (docs/PROTOCOL.md)
that clients and servers share, and the internal frames between a server and its workers.

`messages` and `client` import them from here (and `backend.protocol.messages.BUSY` etc. stay
importable, as they always were); `backend.service` does too. Standard library only: the
Blender add-on vendors this package.
"""

# ---------------------------------------------------------------------------------------------
# The wire format (docs/PROTOCOL.md)
# ---------------------------------------------------------------------------------------------

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_ID_CHARS = 64
LANDMARK_COUNT = 478            # MediaPipe Face Mesh points, as in retarget.face.topology
DELIMITER = b""

# Error codes (docs/PROTOCOL.md, "Errors").
BAD_REQUEST = "bad_request"                  # malformed frames, JSON or fields
UNSUPPORTED_VERSION = "unsupported_version"  # another protocol version
TOO_LARGE = "too_large"                      # over the server's --max-message-mb
BUSY = "busy"                                # every worker busy and the queue full
BAD_AUDIO = "bad_audio"                      # undecodable, empty or over --max-audio-seconds
BAD_REFERENCE = "bad_reference"              # no usable face in the picture / .npz
CANCELLED = "cancelled"                      # cancelled by the client, or the client went away
UNKNOWN_JOB = "unknown_job"                  # cancel for a job this server does not hold
SHUTTING_DOWN = "shutting_down"              # the server is draining after SIGTERM
INTERNAL = "internal"                        # the server failed; its log says why
ERROR_CODES = (BAD_REQUEST, UNSUPPORTED_VERSION, TOO_LARGE, BUSY, BAD_AUDIO, BAD_REFERENCE,
               CANCELLED, UNKNOWN_JOB, SHUTTING_DOWN, INTERNAL)

# ---------------------------------------------------------------------------------------------
# Addresses and timing
# ---------------------------------------------------------------------------------------------

# Where a server listens and a client looks when given no address: loopback only, so a server
# started without --bind is not reachable from other machines.
DEFAULT_SERVER = "tcp://127.0.0.1:5555"
# Where `dimitra proxy` waits for `dimitra serve --connect` servers when given no --backend.
DEFAULT_PROXY_BACKEND = "tcp://127.0.0.1:5556"
# Both sides send a heartbeat this often while a job is open, so a long job's silence is never
# mistaken for a lost peer.
HEARTBEAT_S = 1.0
# Seconds without a word from the other side (no progress, no heartbeat) before a client gives
# up on its server (`server_silence`) and a server cancels a client's jobs (`client_timeout`):
# ten heartbeats, so a few lost or late ones are not taken for a gone peer.
PEER_SILENCE_S = 10.0

# ---------------------------------------------------------------------------------------------
# Server <-> worker frames (internal to `dimitra serve`, not the public protocol)
# ---------------------------------------------------------------------------------------------
#
# A worker talks to its server over a private DEALER socket (backend.service.workers):
#
#     server -> worker   [WORKER_JOB, seq, settings JSON, audio, reference] | [WORKER_STOP]
#                        (a `detect`: settings {"kind": "detect"}, audio empty, the picture)
#     worker -> server   [WORKER_READY, info JSON]                          | [WORKER_FAILED, message]
#                        [WORKER_PROGRESS, seq, {"stage", "fraction"}]
#                        [WORKER_RESULT, seq, summary JSON, motion .npz, reference points (478,2) <f4]
#                        [WORKER_DETECTED, seq, summary JSON, points (478,2) <f4]
#                        [WORKER_ERROR, seq, {"code", "message"}]

WORKER_JOB = b"job"
WORKER_STOP = b"stop"
WORKER_READY = b"ready"
WORKER_FAILED = b"failed"
WORKER_PROGRESS = b"progress"
WORKER_RESULT = b"result"
WORKER_DETECTED = b"detected"
WORKER_ERROR = b"error"


def worker_identity(index: int) -> bytes:
    """The ZeroMQ routing id of worker `index`: how the server addresses it and knows its
    replies."""
    return f"worker-{index}".encode()
