"""Typed events from the three wire forms (SSE JSON, NDJSON, msgpack); no server."""

import base64
import json

import pytest
from streamgen_client.errors import ProtocolError
from streamgen_client.events import (
    CompleteEvent,
    ErrorEvent,
    ProgressEvent,
    QueuedEvent,
    SegmentEvent,
    StartEvent,
    error_from_body,
    from_msgpack,
    from_ndjson,
    from_sse,
)

from streamgen.broker.base import Event

INIT = b"\x00\x00\x00\x08ftyp-init"
FRAGMENT = b"\x00\x00\x00\x08moof-fragment\x00"
SEGMENT = INIT + b"\x00\x00\x00\x08moof-at-zero"

START = {
    "codec": "avc1.64000a",
    "mime": 'video/mp4; codecs="avc1.64000a"',
    "init_segment": INIT,
    "width": 64,
    "height": 48,
    "fps": 8.0,
    "total_segments": 3,
    "total_frames": 20,
    "seed": 7,
    "model": "streamgen-tiny",
}
SEGMENT_FIELDS = {
    "segment_index": 1,
    "total_segments": 3,
    "is_final": False,
    "start_frame": 8,
    "num_frames": 6,
    "start_time": 1.0,
    "end_time": 1.75,
    "fragment": FRAGMENT,
    "segment": SEGMENT,
    "generate_seconds": 0.25,
    "encode_seconds": 0.01,
}


def text_form(fields):
    """How SSE and NDJSON carry fields: bytes as base64 under `<name>_base64`."""
    out = {}
    for name, value in fields.items():
        if isinstance(value, bytes):
            out[f"{name}_base64"] = base64.b64encode(value).decode()
        else:
            out[name] = value
    return out


@pytest.mark.parametrize(
    ("kind", "status", "fields"),
    [
        ("start", "started", START),
        (
            "progress",
            "progress",
            {"segment_index": 0, "step": 2, "total_steps": 4, "total_segments": 3},
        ),
        ("segment", "segment", SEGMENT_FIELDS),
        ("complete", "completed", {"total_segments": 3, "total_frames": 20, "duration": 2.5}),
        (
            "queued",
            "queued",
            {"position": 2, "estimated_start_at": 1796290654.5, "estimated_wait_seconds": 7.25},
        ),
        (
            "queued",
            "queued",
            {"position": 0, "estimated_start_at": None, "estimated_wait_seconds": None},
        ),
    ],
)
def test_the_three_wire_forms_decode_to_the_same_event(kind, status, fields):
    packed = Event(job_id="job-1", seq=4, type=kind, data=fields).pack()  # the server's msgpack
    sse = json.dumps({"job_id": "job-1", "seq": 4, **text_form(fields)})
    ndjson = {"status": status, "job_id": "job-1", "seq": 4, **text_form(fields)}
    events = [from_msgpack(packed), from_sse(kind, sse), from_ndjson(ndjson)]
    assert events[0] == events[1] == events[2]
    assert events[0].job_id == "job-1" and events[0].seq == 4
    expected_type = {
        "start": StartEvent,
        "progress": ProgressEvent,
        "segment": SegmentEvent,
        "complete": CompleteEvent,
        "queued": QueuedEvent,
    }[kind]
    assert type(events[0]) is expected_type


def test_segment_bytes_and_units():
    event = from_sse("segment", json.dumps({"job_id": "j", "seq": 2, **text_form(SEGMENT_FIELDS)}))
    assert isinstance(event, SegmentEvent)
    assert event.fragment == FRAGMENT and event.segment == SEGMENT
    assert (event.start_time, event.end_time, event.num_frames) == (1.0, 1.75, 6)


def test_segment_without_its_self_contained_form():
    fields = {k: v for k, v in SEGMENT_FIELDS.items() if k != "segment"}
    event = from_msgpack(Event(job_id="j", seq=2, type="segment", data=fields).pack())
    assert isinstance(event, SegmentEvent) and event.segment is None


def test_unbounded_start_has_no_totals_and_extra_fields_are_ignored():
    fields = {**START, "total_segments": None, "total_frames": None, "added_later": [1]}
    event = from_msgpack(Event(job_id="j", seq=0, type="start", data=fields).pack())
    assert isinstance(event, StartEvent)
    assert event.total_segments is None and event.total_frames is None


def test_errors_flat_nested_and_slow_consumer():
    flat = from_sse(
        "error",
        json.dumps(
            {
                "job_id": "j",
                "seq": 5,
                "code": "cancelled",
                "message": "job cancelled",
                "param": None,
            }
        ),
    )
    nested = from_ndjson(
        {
            "status": "error",
            "job_id": "j",
            "seq": 5,
            "error": {"code": "cancelled", "message": "job cancelled", "param": None},
        }
    )
    assert flat == nested == ErrorEvent("cancelled", "job cancelled", None, job_id="j", seq=5)
    slow = from_sse(
        "error",
        json.dumps({"job_id": "j", "code": "slow_consumer", "message": "behind", "resume_from": 9}),
    )
    assert isinstance(slow, ErrorEvent) and slow.resume_from == 9 and slow.seq is None


def test_missing_and_mistyped_fields_name_the_field():
    with pytest.raises(ProtocolError, match="'codec'"):
        from_sse(
            "start",
            json.dumps(
                {
                    "job_id": "j",
                    "seq": 0,
                    **text_form({k: v for k, v in START.items() if k != "codec"}),
                }
            ),
        )
    with pytest.raises(ProtocolError, match="'fragment'"):
        from_sse(
            "segment",
            json.dumps(
                {
                    "job_id": "j",
                    "seq": 1,
                    "segment_index": 0,
                    "is_final": False,
                    "start_frame": 0,
                    "num_frames": 1,
                    "start_time": 0,
                    "end_time": 1,
                }
            ),
        )
    with pytest.raises(ProtocolError, match="'seq' must be an integer"):
        from_sse(
            "complete",
            json.dumps(
                {"job_id": "j", "seq": "3", "total_segments": 1, "total_frames": 1, "duration": 1}
            ),
        )
    with pytest.raises(ProtocolError, match="'init_segment_base64' is not valid base64"):
        from_sse(
            "start",
            json.dumps({"job_id": "j", "seq": 0, **text_form(START), "init_segment_base64": "@@@"}),
        )


def test_malformed_messages():
    with pytest.raises(ProtocolError, match="not valid JSON"):
        from_sse("start", "{")
    with pytest.raises(ProtocolError, match="unknown status"):
        from_ndjson({"status": "weird", "seq": 0})
    with pytest.raises(ProtocolError, match="unknown event type"):
        from_sse("mystery", json.dumps({"job_id": "j", "seq": 0}))
    with pytest.raises(ProtocolError, match="not msgpack"):
        from_msgpack(b"\xc1")


def test_error_bodies():
    body = b'{"error": {"code": "invalid_request", "message": "width too big", "param": "width"}}'
    assert error_from_body(body) == ("invalid_request", "width too big", "width")
    bare = b'{"code": "job_not_found", "message": "no job", "param": "job_id"}'
    assert error_from_body(bare) == ("job_not_found", "no job", "job_id")
    assert error_from_body(b"<html>Bad Gateway</html>") == (
        "http_error",
        "<html>Bad Gateway</html>",
        None,
    )
    assert error_from_body(b"") == ("http_error", "(empty body)", None)
    cut = b'{"code":"slow_consumer","param":null}'  # a close reason cut to 123 bytes
    assert error_from_body(cut) == ("slow_consumer", "", None)
