"""Framing of events for SSE, NDJSON, WebSocket and the live MP4, without a server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import msgpack
import pytest
from streamgen_client import wire
from streamgen_client.sse import SSEParser

from streamgen.broker.base import Event
from streamgen.errors import InvalidParameter, MalformedRequest, SlowConsumer
from streamgen.events import ProgressPayload, SegmentPayload, StartPayload, to_data
from streamgen.streams import mp4, ndjson, sse, ws
from streamgen.streams.follow import FrameCache, _batches

SEGMENT = Event(
    "job_1",
    7,
    "segment",
    {"segment_index": 1, "fragment": b"\x00moof\nline", "segment": b"seg\r\n", "note": "a\nb"},
)
ERROR = Event("job_1", 9, "error", {"code": "cancelled", "message": "stop", "param": None})


def test_text_fields_base64_bytes_under_suffixed_names() -> None:
    fields = wire.text_fields(SEGMENT.job_id, SEGMENT.seq, SEGMENT.type, SEGMENT.data)
    assert fields["job_id"] == "job_1" and fields["seq"] == 7 and fields["type"] == "segment"
    assert base64.b64decode(fields["fragment_base64"]) == b"\x00moof\nline"
    assert base64.b64decode(fields["segment_base64"]) == b"seg\r\n"
    assert "fragment" not in fields and fields["note"] == "a\nb"


def test_sse_event_is_event_id_then_one_data_line() -> None:
    frame = sse.format_event(SEGMENT)
    assert frame.endswith(b"\n\n")
    lines = frame.decode().split("\n")[:-2]
    assert lines[0] == "event: segment"
    assert lines[1] == "id: 7"
    assert len(lines) == 3 and lines[2].startswith("data: {")
    assert json.loads(lines[2][len("data: ") :])["note"] == "a\nb"


def test_sse_retry_and_comments() -> None:
    assert wire.sse_retry(2000) == b"retry: 2000\n\n"
    assert wire.SSE_KEEP_ALIVE == wire.sse_comment("keep-alive") == b": keep-alive\n\n"
    with pytest.raises(ValueError):
        wire.sse_comment("two\nlines")


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_sse_reads_back_what_is_written_in_any_chunking(newline: bytes) -> None:
    # The client's parser (the project's one SSE parser) reads what the server writes, also
    # with CRLF line ends (a proxy may rewrite them). The data is compact JSON, so its text
    # holds no raw newline and only the line ends change.
    stream = (
        wire.sse_retry(1500)
        + wire.SSE_KEEP_ALIVE
        + sse.format_event(SEGMENT)
        + sse.format_event(ERROR)
    ).replace(b"\n", newline)
    for size in (1, 2, 7, len(stream)):
        parser = SSEParser()
        messages = []
        for start in range(0, len(stream), size):
            messages += parser.feed(stream[start : start + size])
        assert [m.event for m in messages] == ["segment", "error"]
        assert parser.retry_ms == 1500
        assert json.loads(messages[0].data) == wire.text_fields(
            SEGMENT.job_id, SEGMENT.seq, SEGMENT.type, SEGMENT.data
        )
        assert messages[1].id == "9" and parser.last_event_id == "9"
        assert parser.comments == 1
        assert not parser.pending


def test_ndjson_lines_carry_status_and_nest_errors() -> None:
    line = json.loads(ndjson.format_event(SEGMENT))
    assert line["status"] == "segment" and line["seq"] == 7
    assert base64.b64decode(line["fragment_base64"]) == b"\x00moof\nline"
    error = ndjson.format_event(ERROR)
    assert error.endswith(b"\n") and error.count(b"\n") == 1
    parsed = json.loads(error)
    assert parsed["status"] == "error"
    assert parsed["error"] == {"code": "cancelled", "message": "stop", "param": None}
    start = Event("j", 0, "start", {"init_segment": b"ftyp"})
    assert json.loads(ndjson.format_event(start))["status"] == "started"
    done = Event("j", 3, "complete", {"final": True})
    assert json.loads(ndjson.format_event(done))["status"] == "completed"


def test_ws_messages_are_msgpack_with_raw_bytes() -> None:
    message = ws.unpack_message(ws.pack_event(SEGMENT))
    assert message["job_id"] == "job_1" and message["seq"] == 7 and message["type"] == "segment"
    assert message["data"]["fragment"] == b"\x00moof\nline"
    assert isinstance(msgpack.unpackb(ws.pack_event(SEGMENT))["data"]["segment"], bytes)


def test_ws_commands() -> None:
    assert ws.parse_command('{"cancel": true}') == ws.Cancel()
    assert ws.parse_command('{"subscribe": "job_1", "from_seq": 4}') == ws.Subscribe("job_1", 4)
    assert ws.parse_command(b'{"subscribe": "job_1"}') == ws.Subscribe("job_1", 0)
    assert ws.parse_command('{"prompt": "a"}') == ws.Generate({"prompt": "a"})
    with pytest.raises(MalformedRequest):
        ws.parse_command("{not json")
    with pytest.raises(MalformedRequest):
        ws.parse_command("[1]")
    for bad, param in (
        ('{"subscribe": "j", "from_seq": -1}', "from_seq"),
        ('{"subscribe": "j", "from": 1}', "from"),
        ('{"subscribe": 3}', "subscribe"),
        ('{"cancel": false}', "cancel"),
    ):
        with pytest.raises(InvalidParameter) as info:
            ws.parse_command(bad)
        assert info.value.param == param


def test_ws_close_reason_fits_in_a_close_frame() -> None:
    error = InvalidParameter("é" * 500, param="width")
    reason = ws.close_reason(error)
    assert len(reason.encode()) <= ws.MAX_REASON_BYTES
    parsed = json.loads(reason)
    assert parsed["code"] == "invalid_request" and parsed["param"] == "width"
    cut = SlowConsumer("job_1", 12, 4)
    assert json.loads(ws.close_reason(cut, resume_from=12))["resume_from"] == 12


def test_mp4_body_is_init_then_fragments() -> None:
    start = Event("j", 0, "start", to_data(StartPayload(
        codec="avc1.64000a", mime='video/mp4; codecs="avc1.64000a"', init_segment=b"INIT",
        width=64, height=64, fps=8.0, total_segments=2, total_frames=20, seed=1, model="m",
    )))  # fmt: skip
    progress = Event("j", 1, "progress", to_data(ProgressPayload(0, 1, 2, 2)))
    segment = Event("j", 2, "segment", to_data(SegmentPayload(
        segment_index=0, total_segments=2, is_final=False, start_frame=0, num_frames=12,
        start_time=0.0, end_time=1.5, fragment=b"\x00moof\nline", segment=b"seg\r\n",
        generate_seconds=0.1, encode_seconds=0.01,
    )))  # fmt: skip
    assert mp4.body_chunk(start) == b"INIT"
    assert mp4.body_chunk(progress) is None
    assert mp4.body_chunk(segment) == b"\x00moof\nline"


def test_frame_cache_frames_each_event_once() -> None:
    cache, calls = FrameCache(max_entries=2), []

    def make(event: Event) -> bytes:
        calls.append(event.seq)
        return sse.format_event(event)

    for _ in range(3):
        assert cache.frame("sse", SEGMENT, make) == sse.format_event(SEGMENT)
    assert calls == [7]
    cache.frame("sse", ERROR, make)
    cache.frame("ndjson", ERROR, make)
    cache.frame("sse", SEGMENT, make)  # evicted: framed again
    assert calls == [7, 9, 9, 7]


def test_batches_tick_while_idle_group_waiting_events_and_raise_after_them() -> None:
    async def scenario() -> list[list[int | None]]:
        queue: asyncio.Queue[int] = asyncio.Queue()

        async def source():  # type: ignore[no-untyped-def]
            while (item := await queue.get()) != -1:
                if item == -2:
                    raise OverflowError("cut off")
                yield item

        seen: list[list[int | None]] = []
        with contextlib.suppress(OverflowError):
            async for batch in _batches(source(), 0.01, max_batch=3):
                seen.append(list(batch))
                if seen.count([None]) == 2 and len(seen) == 2:
                    queue.put_nowait(1)
                elif batch == [1]:
                    for item in (2, 3, 4, 5, 6, -2):  # all waiting at once
                        queue.put_nowait(item)
        return seen

    seen = asyncio.run(scenario())
    assert seen[:2] == [[None], [None]]
    assert seen[2:] == [[1], [2, 3, 4], [5, 6]], "waiting events come in batches; none is lost"
