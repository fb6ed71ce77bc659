"""The player's framing code, run in Chromium: the msgpack decoder (WebSocket events) and the
SSE parser (`POST /generate-stream` read with fetch). Inputs come from the Python side's real
packers (`msgpack`, `streamgen.streams.sse.format_event`), so both ends must agree."""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

import msgpack
import pytest
from streamgen_client.wire import sse_comment, sse_retry

from streamgen.broker.base import Event
from streamgen.streams.sse import format_event

pytestmark = pytest.mark.browser

# Turns decoded values into JSON-able ones the test can compare: bytes as hex, BigInt as text.
PLAIN_JS = """
const plain = (v) => {
  const hex = (b) => b.toString(16).padStart(2, "0");
  if (v instanceof Uint8Array) return {$bin: Array.from(v, hex).join("")};
  if (typeof v === "bigint") return {$big: v.toString()};
  if (v instanceof Date) return {$date: v.getTime()};
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") {
    if ("extType" in v) return {$ext: v.extType, data: plain(v.data)};
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
};
const b64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
"""


def _plain(value: Any) -> Any:
    """What `plain(decode(packb(value)))` must give in the browser."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, bool) or value is None or isinstance(value, float | str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 - 1 else {"$big": str(value)}
    if isinstance(value, msgpack.Timestamp):
        return {"$date": value.seconds * 1000 + value.nanoseconds // 1_000_000}
    if isinstance(value, msgpack.ExtType):  # a namedtuple: before the tuple case
        return {"$ext": value.code, "data": {"$bin": value.data.hex()}}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    raise TypeError(value)


VALUES: list[Any] = [
    # integers at every width boundary, both signs
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1, 2**53, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**53) + 1, -(2**63),
    # floats, strings (fix/8/16/32 lengths, multi-byte UTF-8), bytes (8/16/32 lengths)
    1.5, -0.25, 1e300, 5e-324,
    "", "a" * 31, "b" * 32, "é☕" * 100, "x" * 70_000,
    b"", bytes(range(256)), os.urandom(300), os.urandom(70_000),
    # containers (fix/16/32 sizes), nil and booleans, non-string keys, a dangerous key
    None, True, False,
    list(range(15)), list(range(16)), list(range(70_000)),
    {f"k{i}": i for i in range(15)}, {f"k{i}": [i] for i in range(16)},
    {f"k{i}": i for i in range(70_000)}, {1: "one", -2: "minus two"}, {"__proto__": {"x": 1}},
    {"nested": [{"a": [b"\x00\x01", None, {"b": 2.5}]}]},
    # extensions: timestamps of 32, 64 and 96 bits, and an application type
    msgpack.Timestamp(1_700_000_000, 0), msgpack.Timestamp(1_700_000_000, 500_000_000),
    msgpack.Timestamp(2**34 + 5, 0), msgpack.Timestamp(-5, 0), msgpack.ExtType(5, b"abc"),
]  # fmt: skip


def _decode_all(page: Any, static_url: str, payloads: list[bytes]) -> list[Any]:
    page.goto(static_url)
    # As JSON text: Playwright's own serialisation would drop a "__proto__" key.
    return json.loads(
        page.evaluate(
            PLAIN_JS
            + """async (cases) => {
              const { decode } = await import("/static/msgpack.js");
              return JSON.stringify(cases.map((text) => plain(decode(b64(text)))));
            }""",
            [base64.b64encode(p).decode() for p in payloads],
        )
    )


def test_msgpack_decodes_every_type_python_packs(page: Any, static_url: str) -> None:
    payloads = [msgpack.packb(v, use_bin_type=True) for v in VALUES]
    singles = [msgpack.packb(v, use_single_float=True) for v in (0.1, -3.5)]
    decoded = _decode_all(page, static_url, payloads + singles)
    for value, got in zip(VALUES, decoded, strict=False):
        assert got == _plain(value), f"msgpack value {str(value)[:60]!r}"
    as_float32 = [struct.unpack(">f", struct.pack(">f", x))[0] for x in (0.1, -3.5)]
    assert decoded[len(VALUES) :] == as_float32


def test_msgpack_decodes_a_streamgen_event_with_raw_bytes(page: Any, static_url: str) -> None:
    fragment = os.urandom(50_000)
    event = Event(
        "job_abc",
        7,
        "segment",
        {"segment_index": 2, "start_time": 2.0, "end_time": 3.0, "fragment": fragment,
         "segment": b"init" + fragment, "total_segments": None, "is_final": False},
    )  # fmt: skip
    [got] = _decode_all(page, static_url, [event.pack()])
    assert got["job_id"] == "job_abc" and got["seq"] == 7 and got["type"] == "segment"
    assert got["data"]["fragment"] == {"$bin": fragment.hex()}
    assert got["data"]["total_segments"] is None and got["data"]["end_time"] == 3.0


def test_msgpack_rejects_broken_input(page: Any, static_url: str) -> None:
    page.goto(static_url)
    errors = page.evaluate(
        PLAIN_JS
        + """async (cases) => {
          const { decode } = await import("/static/msgpack.js");
          return cases.map((text) => {
            try { return ["ok", plain(decode(b64(text)))]; }
            catch (err) { return [err.name, err.message]; }
          });
        }""",
        [base64.b64encode(p).decode() for p in (b"\x92\x01", b"\x01\x02", b"\xc1", b"\xc5\x00")],
    )
    assert [name for name, _ in errors] == ["MsgpackError"] * 4
    assert "truncated" in errors[0][1]
    assert "trailing" in errors[1][1]
    assert "0xc1" in errors[2][1]
    assert "truncated" in errors[3][1]


def _sse_stream() -> tuple[str, bytes]:
    """A stream as the server frames it, plus the fragment it carries."""
    fragment = os.urandom(3000)
    parts = [
        sse_retry(2000),
        sse_comment(),
        format_event(Event("job_x", 0, "start", {"mime": 'video/mp4; codecs="avc1.64000a"',
                                                 "init_segment": b"\x00\x00\x00\x18ftyp"})),
        format_event(Event("job_x", 1, "progress", {"segment_index": 0, "step": 1,
                                                    "total_steps": 2, "prompt": "café ☕"})),
        format_event(Event("job_x", 2, "segment", {"segment_index": 0, "fragment": fragment,
                                                   "segment": b"self-contained"})),
        b"event: note\ndata: first\ndata:second\ndata:  third\nid: 9\n\n",
        b"data: unnamed\n\n",
        b"event: lonely\nid: 10\n\n",  # no data: nothing is dispatched
        b"event: complete\nid: 11\ndata: {\"seq\": 11}\n\n",
        b"event: cut\ndata: never finished\n",  # no blank line before the end: dropped
    ]  # fmt: skip
    return b"".join(parts).decode("utf-8"), fragment


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_sse_parser_gives_the_same_events_for_any_chunking(
    page: Any, static_url: str, line_end: str
) -> None:
    text, _ = _sse_stream()
    text = text.replace("\n", line_end)
    page.goto(static_url)
    runs = page.evaluate(
        """async (text) => {
          const { SSEParser } = await import("/static/sse.js");
          const runs = [];
          const sizes = [1, 2, 3, 5, 64, 1000, text.length];
          for (const size of sizes) {
            const parser = new SSEParser();
            const events = [];
            for (let i = 0; i < text.length; i += size) {
              events.push(...parser.feed(text.slice(i, i + size)));
            }
            events.push(...parser.end());
            runs.push({ events, retry: parser.retryMs });
          }
          return runs;
        }""",
        text,
    )
    first = runs[0]
    assert all(run == first for run in runs), "chunking changed what was parsed"
    events = first["events"]
    assert first["retry"] == 2000
    assert [(e["type"], e["id"]) for e in events] == [
        ("start", "0"), ("progress", "1"), ("segment", "2"), ("note", "9"),
        ("message", "9"), ("complete", "11"),
    ]  # fmt: skip
    assert events[3]["data"] == "first\nsecond\n third"
    assert events[4]["data"] == "unnamed"


def test_sse_job_events_decode_base64_fields(page: Any, static_url: str) -> None:
    text, fragment = _sse_stream()
    page.goto(static_url)
    got = page.evaluate(
        PLAIN_JS
        + """async (text) => {
          const { SSEParser, jobEventFromSSE, base64ToBytes } = await import("/static/sse.js");
          const events = new SSEParser().feed(text).slice(0, 3).map(jobEventFromSSE);
          // The atob path, for browsers without Uint8Array.fromBase64:
          const native = Uint8Array.fromBase64;
          delete Uint8Array.fromBase64;
          const viaAtob = base64ToBytes(btoa("\\x00\\x01\\xfe\\xff"));
          Uint8Array.fromBase64 = native;
          return { events: plain(events), viaAtob: plain(viaAtob) };
        }""",
        text,
    )
    start, progress, segment = got["events"]
    assert start["type"] == "start" and start["seq"] == 0 and start["jobId"] == "job_x"
    assert start["data"]["init_segment"] == {"$bin": b"\x00\x00\x00\x18ftyp".hex()}
    assert "init_segment_base64" not in start["data"]
    assert progress["data"]["prompt"] == "café ☕"
    assert segment["seq"] == 2 and segment["data"]["fragment"] == {"$bin": fragment.hex()}
    assert "segment" not in segment["data"] and "segment_base64" not in segment["data"]
    assert got["viaAtob"] == {"$bin": "0001feff"}
