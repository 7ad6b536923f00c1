"""The wire format and the client of the Dimitra service (docs/PROTOCOL.md).

Standard library, numpy and pyzmq only, with relative imports: the Blender add-on vendors this
package as it is.
"""

from .client import AnimateResult, CurveKeys, DimitraClient, JobCancelled, ServiceError
from .messages import PROTOCOL_VERSION, ProtocolError

__all__ = [
           "PROTOCOL_VERSION",
           "AnimateResult",
           "CurveKeys",
           "DimitraClient",
           "JobCancelled",
           "ProtocolError",
           "ServiceError",
]
