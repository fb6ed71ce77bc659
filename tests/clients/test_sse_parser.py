"""The SSE parser, fed bytes split at awkward places; no server."""

import base64
import json

import pytest
from streamgen_client.sse import ServerSentEvent, SSEParser


def parse(*chunks: bytes) -> tuple[list[ServerSentEvent], SSEParser]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser


def every_split(stream: bytes):
    """The stream fed whole, one byte at a time, and cut in two at every offset."""
    yield [stream]
    yield [stream[i : i + 1] for i in range(len(stream))]
    for cut in range(1, len(stream)):
        yield [stream[:cut], stream[cut:]]


PROTOCOL_STREAM = (
    b"retry: 2000\n\n"
    b": keep-alive\n\n"
    b'event: start\nid: 0\ndata: {"job_id": "j", "seq": 0}\n\n'
    b'event: segment\nid: 1\ndata: {"job_id": "j", "seq": 1, "caf\xc3\xa9": "\xe2\x82\xac"}\n\n'
    b'event: complete\nid: 2\ndata: {"job_id": "j", "seq": 2}\n\n'
)


def test_protocol_stream_gives_the_same_events_however_it_is_split():
    expected = [
        ServerSentEvent("start", '{"job_id": "j", "seq": 0}', "0"),
        ServerSentEvent("segment", '{"job_id": "j", "seq": 1, "café": "€"}', "1"),
        ServerSentEvent("complete", '{"job_id": "j", "seq": 2}', "2"),
    ]
    for chunks in every_split(PROTOCOL_STREAM):
        events, parser = parse(*chunks)
        assert events == expected, chunks
        assert parser.retry_ms == 2000
        assert parser.comments == 1
        assert parser.last_event_id == "2"
        assert not parser.pending


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending_and_a_split_crlf_does_not_make_a_blank_line(newline):
    stream = b"data: a" + newline + b"data: b" + newline + newline
    for chunks in every_split(stream):
        events, _ = parse(*chunks)
        assert events == [ServerSentEvent("message", "a\nb", "")], chunks


def test_cr_at_the_end_of_a_chunk_then_lf():
    # If the CR and the LF of one CRLF were taken as two line ends, "a" would be dispatched
    # alone, before "b".
    events, _ = parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")
    assert events == [ServerSentEvent("message", "a\nb", "")]


def test_multi_line_data_and_field_value_spacing():
    events, _ = parse(b"data:no-space\ndata:  two\ndata\ndata: \n\n")
    assert [e.data for e in events] == ["no-space\n two\n\n"]


def test_comments_are_not_events_and_do_not_break_an_event_in_progress():
    events, parser = parse(b"data: x\n: comment inside\ndata: y\n\n:tail\n")
    assert [e.data for e in events] == ["x\ny"]
    assert parser.comments == 2


def test_retry_only_takes_ascii_digits():
    _, parser = parse(b"retry: 1500\n\n")
    assert parser.retry_ms == 1500
    for bad in (b"retry: 15s\n", b"retry: -1\n", b"retry: \xd9\xa3\n", b"retry:\n"):
        _, parser = parse(b"retry: 700\n", bad, b"\n")
        assert parser.retry_ms == 700, bad


def test_id_persists_is_reset_by_an_empty_id_and_ignores_nul():
    events, parser = parse(
        b"id: 5\ndata: a\n\n",
        b"data: b\n\n",  # no id line: keeps 5
        b"id: 6\0x\ndata: c\n\n",  # NUL: ignored
        b"id\ndata: d\n\n",  # empty id: reset
    )
    assert [(e.data, e.id) for e in events] == [("a", "5"), ("b", "5"), ("c", "5"), ("d", "")]
    assert parser.last_event_id == ""


def test_event_without_data_is_not_dispatched_but_its_id_counts():
    events, parser = parse(b"event: progress\nid: 3\n\n", b"data: x\n\n")
    assert events == [ServerSentEvent("message", "x", "3")]
    assert parser.last_event_id == "3"


def test_bom_is_dropped_even_when_split():
    for chunks in every_split(b"\xef\xbb\xbfdata: x\n\n"):
        events, _ = parse(*chunks)
        assert [e.data for e in events] == ["x"], chunks


def test_bom_later_in_the_stream_is_data():
    events, _ = parse(b"data: x\n\n", b"\xef\xbb\xbfdata: y\n\n")
    assert [e.data for e in events] == ["x"]  # the second line's field is "\ufeffdata"


def test_event_cut_off_by_the_end_of_the_stream_is_not_dispatched():
    events, parser = parse(b'event: segment\nid: 4\ndata: {"partial"')
    assert events == []
    assert parser.pending
    events, parser = parse(b"event: segment\nid: 4\ndata: {}\n")  # no blank line yet
    assert events == []
    assert parser.pending


def test_unknown_fields_are_ignored():
    events, _ = parse(b"foo: bar\ndata: x\nevent: segment\nbar\n\n")
    assert events == [ServerSentEvent("segment", "x", "")]


def test_a_large_base64_segment_on_one_line_in_small_chunks():
    payload = bytes(range(256)) * 1024  # 256 KiB
    data = json.dumps({"segment_base64": base64.b64encode(payload).decode()}).encode()
    stream = b"event: segment\nid: 9\ndata: " + data + b"\n\n"
    chunks = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    events, _ = parse(*chunks)
    assert len(events) == 1
    assert base64.b64decode(json.loads(events[0].data)["segment_base64"]) == payload
