"""The wire format: every message of docs/PROTOCOL.md round-trips, bad ones name their field."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dimitra.backend.protocol import messages as m

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)

EXAMPLES = [
    m.InfoRequest("r1"),
    m.AnimateRequest("r2", b"RIFF....", b"\xff\xd8jpeg", {"seed": 3, "expressiveness": 2.0,
                                                          "blink": False}, 30.0, False),
    m.DetectRequest("r11", b"\x89PNG...."),
    m.CancelRequest("r3", "job9"),
    m.Heartbeat("r4"),
    m.ServerInfo("r5", {"model": "cmdt_default.safetensors", "limits": {"queue": 2}}),
    m.Accepted("r6", "job1", 2),
    m.Progress("r7", "job1", "sampling", 0.5),
    m.Result("r8", "job1", b"PK\x03\x04npz", np.arange(956, dtype=np.float32).reshape(478, 2),
             {"frames": 50}),
    m.Result("r9", "job1", b"PK\x03\x04npz", None, {"frames": 50}),
    m.Detected("r12", "job2", np.arange(956, dtype=np.float32).reshape(478, 2),
               {"image_size": [512, 512]}),
    m.Error("r10", m.BUSY, "all workers are busy", None, None),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda msg: f"{msg.type}-{msg.request_id}")
def test_every_message_round_trips(message):
    kinds = m.REQUESTS if message.type in m.REQUESTS else m.REPLIES
    decoded = m.decode(message.to_frames(), kinds)
    assert type(decoded) is type(message)
    for name, value in vars(message).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(decoded, name), value)
        else:
            assert getattr(decoded, name) == value, name


def test_protocol_md_lists_exactly_the_message_types_and_error_codes():
    """The table in docs/PROTOCOL.md and the code's message types mirror each other."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text()
    table = text[text.index("## Messages"):text.index("## Errors")]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
    assert documented == set(m.REQUESTS) | set(m.REPLIES)
    errors = text[text.index("## Errors"):]
    assert set(re.findall(r"^\| `(\w+)` \|", errors, re.MULTILINE)) == set(m.ERROR_CODES)


def test_option_types_mirror_generation_options():
    from dimitra.backend.generation.generator import GenerationOptions
    from dimitra.backend.protocol.options import OPTIONS

    fields = {f.name: type(f.default) for f in dataclasses.fields(GenerationOptions)}
    assert fields == m.OPTION_TYPES == {option.name: option.type for option in OPTIONS}


def _header(**fields) -> bytes:
    return json.dumps({"protocol": m.PROTOCOL_VERSION, "request_id": "r", **fields}).encode()


@pytest.mark.parametrize(("body", "field", "code"), [
    ([], "header", m.BAD_REQUEST),
    ([b"{not json"], "header", m.BAD_REQUEST),
    ([b"\xff\xfe"], "header", m.BAD_REQUEST),
    ([b"[1, 2]"], "header", m.BAD_REQUEST),
    ([b'{"protocol": 2, "type": "info", "request_id": "r"}'], "protocol", m.UNSUPPORTED_VERSION),
    ([b'{"type": "info", "request_id": "r"}'], "protocol", m.UNSUPPORTED_VERSION),
    ([b'{"protocol": 1, "type": "info"}'], "request_id", m.BAD_REQUEST),
    ([_header(type="paint")], "type", m.BAD_REQUEST),
    ([_header(type="info"), b"extra"], "frames", m.BAD_REQUEST),
    ([_header(type="animate"), b"audio"], "frames", m.BAD_REQUEST),
    ([_header(type="animate"), b"", b"ref"], "audio", m.BAD_REQUEST),
    ([_header(type="animate", options={"sed": 1}), b"a", b"r"], "options.sed", m.BAD_REQUEST),
    ([_header(type="animate", options={"steps": 2.5}), b"a", b"r"], "options.steps",
     m.BAD_REQUEST),
    ([_header(type="animate", options={"blink": 1}), b"a", b"r"], "options.blink",
     m.BAD_REQUEST),
    ([_header(type="animate", options=[]), b"a", b"r"], "options", m.BAD_REQUEST),
    ([_header(type="animate", fps=0), b"a", b"r"], "fps", m.BAD_REQUEST),
    ([_header(type="animate", fps="25"), b"a", b"r"], "fps", m.BAD_REQUEST),
    ([_header(type="cancel")], "job_id", m.BAD_REQUEST),
    ([_header(type="detect")], "frames", m.BAD_REQUEST),
    ([_header(type="detect"), b""], "picture", m.BAD_REQUEST),
    ([b" " * (m.MAX_HEADER_BYTES + 1)], "header", m.BAD_REQUEST),
])
def test_malformed_requests_name_the_field(body, field, code):
    with pytest.raises(m.ProtocolError) as caught:
        m.decode_request(body)
    assert caught.value.field == field
    assert caught.value.code == code
    assert field.split(".")[-1] in str(caught.value) or field in ("header", "frames")


def test_detected_points_must_be_478_pairs():
    frames = m.Detected("r", "job", np.zeros((478, 2), np.float32), {}).to_frames()
    with pytest.raises(m.ProtocolError) as caught:
        m.decode_reply([frames[0], frames[1][:-8]])
    assert caught.value.field == "points"


def test_a_malformed_request_keeps_its_request_id_for_the_error_reply():
    with pytest.raises(m.ProtocolError) as caught:
        m.decode_request([_header(type="animate", fps=-1), b"a", b"r"])
    reply = m.decode_reply(m.Error.from_protocol_error(caught.value).to_frames())
    assert (reply.request_id, reply.code, reply.field) == ("r", m.BAD_REQUEST, "fps")


def test_envelope_is_split_at_the_delimiter_or_taken_as_the_identity():
    assert m.split_envelope([b"proxy", b"client", b"", b"h", b"a"]) == (
        [b"proxy", b"client"], [b"h", b"a"])
    assert m.split_envelope([b"client", b"h"]) == ([b"client"], [b"h"])


def test_the_protocol_package_imports_without_torch_or_bpy():
    """The add-on vendors backend/protocol, and `dimitra client` runs on machines without
    the model: both import with only numpy and zmq."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['bpy'] = None; "
            "sys.modules['dimitra.backend.generation'] = None; "
            "import dimitra.backend.protocol.messages, dimitra.backend.protocol.client, "
            "dimitra.backend.protocol.remote; "
            "heavy = [n for n in ('torch', 'bpy', 'mediapipe', 'cv2', 'av') "
            "if sys.modules.get(n) is not None]; assert not heavy, heavy; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
