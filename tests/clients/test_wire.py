"""The wire schema (`streamgen_client.wire`) round trip, field by field, in both byte forms;
no server."""

from __future__ import annotations

import dataclasses
import json

import pytest
from streamgen_client import wire

PAYLOADS = [
    wire.StartPayload("avc1.64000a", "video/mp4", b"\x00init", 64, 48, 8.0, None, None, 3, "m"),
    wire.QueuedPayload(2, 1796290654.5, None),
    wire.ProgressPayload(1, 3, 8, None),
    wire.SegmentPayload(1, 3, False, 8, 6, 1.0, 1.75, b"moof\n", b"\x00seg", 0.25, 0.01),
    wire.CompletePayload(3, 20, 2.5),
    wire.ErrorPayload("cancelled", "stop", None),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.type)
def test_every_field_survives_raw_and_base64(payload: wire.Payload) -> None:
    data = wire.to_data(payload)
    names = [f.name for f in dataclasses.fields(payload) if getattr(payload, f.name) is not None]
    assert [name for name in data if data[name] is not None] == names  # field order
    assert wire.from_data(payload.type, {**data, "time": 1.5}) == payload
    text = json.loads(wire.dumps(wire.text_fields("j", 4, payload.type, data)))
    assert (text["job_id"], text["seq"], text["type"]) == ("j", 4, payload.type)
    assert wire.from_data(payload.type, text) == payload
    line = json.loads(wire.ndjson_line(wire.ndjson_object("j", 4, payload.type, data)))
    assert wire.ndjson_type(line["status"]) == payload.type
    assert wire.from_data(payload.type, wire.ndjson_fields(line)) == payload


def test_resume_from_is_on_the_wire_only_when_set() -> None:
    assert "resume_from" not in wire.to_data(wire.ErrorPayload("cancelled", "stop"))
    cut = wire.ErrorPayload("slow_consumer", "behind", None, resume_from=9)
    line = wire.ndjson_object("j", 8, "error", wire.to_data(cut))
    assert line == {
        "status": "error",
        "job_id": "j",
        "seq": 8,
        "error": {"code": "slow_consumer", "message": "behind", "param": None},
        "resume_from": 9,
    }
    assert wire.from_data("error", wire.ndjson_fields(line)) == cut


def test_bad_messages_name_the_field() -> None:
    with pytest.raises(wire.WireError, match="unknown event type"):
        wire.from_data("mystery", {})
    with pytest.raises(wire.WireError, match="'total_steps' must be an integer"):
        wire.from_data("progress", {"segment_index": 0, "step": 1, "total_steps": "8"})
    with pytest.raises(wire.WireError, match="'fragment'"):
        wire.from_data("segment", wire.to_data(PAYLOADS[3]) | {"fragment": None})
    with pytest.raises(wire.WireError, match="message is not"):
        wire.message_parts({"job_id": "j", "seq": 0, "type": "start"})
    assert wire.message_parts(wire.message("j", 0, "start", {"a": b"x"})) == (
        "j",
        0,
        "start",
        {"a": b"x"},
    )


def test_sse_lines() -> None:
    frame = wire.sse_message("segment", 7, {"note": "a\nb"})
    assert frame == b'event: segment\nid: 7\ndata: {"note":"a\\nb"}\n\n'
    assert wire.sse_retry(1500) == b"retry: 1500\n\n"
    assert wire.sse_comment() == wire.SSE_KEEP_ALIVE
    with pytest.raises(ValueError, match="one line"):
        wire.sse_comment("two\nlines")
