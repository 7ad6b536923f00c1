"""The wire format and the client of the Dimitra service (docs/PROTOCOL.md).

Standard library, numpy and pyzmq only, with relative imports: the Blender add-on vendors this
package as it is.
"""

from .messages import PROTOCOL_VERSION, ProtocolError

_CLIENT_NAMES = ("AnimateResult", "CurveKeys", "DimitraClient", "JobCancelled", "ServiceError")


def __getattr__(name: str):
    """The client's names, imported on first use: `dimitra animate` reads only the constants
    here and should not pay for pyzmq's import."""
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
           "PROTOCOL_VERSION",
           "AnimateResult",
           "CurveKeys",
           "DimitraClient",
           "JobCancelled",
           "ProtocolError",
           "ServiceError",
]
