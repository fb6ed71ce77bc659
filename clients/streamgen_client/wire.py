"""The wire format of a job's events: the one schema both the server and the client import.

Standard library only, so the server (which builds and frames events from it) and the client
(which parses with it) share it without sharing anything else. msgpack stays at the edges:
this module says what a message is, not how it is packed.

A job's log is an ordered list of events ``(job_id, seq, type, data)``, ``seq`` 0, 1, 2, …
with no gaps. `data` is a payload's fields (below, in this order) plus ``time``, the publish
time (Unix seconds), which readers may ignore:

    start     StartPayload     the job is accepted: codec, init segment, size, rate
    queued    QueuedPayload    it waits for a worker: its place and estimated start
    progress  ProgressPayload  one denoising step of one segment is done
    segment   SegmentPayload   one segment left the encoder: both byte forms, time span
    complete  CompletePayload  the last segment was sent (terminal)
    error     ErrorPayload     the job failed, was cancelled, or this subscriber was cut off

Three framings carry it:

- msgpack (WebSocket, Redis): the message ``{"job_id", "seq", "type", "data"}`` with raw bytes;
- SSE (``text/event-stream``): ``event: <type>``, ``id: <seq>``, one ``data:`` line of compact
  JSON ``{"job_id", "seq", "type", **data}``, a blank line; ``:`` comments keep it alive;
- NDJSON: one compact JSON object a line, ``{"status", "job_id", "seq", **data}`` where
  ``status`` names the type (`NDJSON_STATUS`) and an error's code/message/param nest under
  ``error``.

In both JSON forms a byte field travels base64 under its name plus ``_base64``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

TERMINAL_TYPES = frozenset({"complete", "error"})
BASE64_SUFFIX = "_base64"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
NDJSON_CONTENT_TYPE = "application/x-ndjson"
MP4_CONTENT_TYPE = "video/mp4"
NDJSON_STATUS = {
    "start": "started",
    "queued": "queued",
    "progress": "progress",
    "segment": "segment",
    "complete": "completed",
    "error": "error",
}
"""An NDJSON line's ``status`` for each event type (the OmniAvatar-style names)."""
ERROR_FIELDS = ("code", "message", "param")
"""The fields of an error that NDJSON nests under ``error``."""


class WireError(ValueError):
    """A message does not follow this schema; the text names the field."""


@dataclass(frozen=True)
class StartPayload:
    """`codec` is the MSE codec string (``avc1.PPCCLL``), `mime` the full MSE type;
    `init_segment` is ``ftyp``+``moov``. Totals are None for an unbounded job."""

    type: ClassVar[str] = "start"
    codec: str
    mime: str
    init_segment: bytes
    width: int  # pixels
    height: int  # pixels
    fps: float  # frames per second
    total_segments: int | None
    total_frames: int | None
    seed: int
    model: str


@dataclass(frozen=True)
class QueuedPayload:
    """The job waits for a worker with room for it: `position` jobs wait before it, and it
    should start at `estimated_start_at` (Unix seconds; None when no worker reports yet),
    `estimated_wait_seconds` from when the event was published."""

    type: ClassVar[str] = "queued"
    position: int
    estimated_start_at: float | None
    estimated_wait_seconds: float | None


@dataclass(frozen=True)
class ProgressPayload:
    """Step `step` of `total_steps` of segment `segment_index` is done."""

    type: ClassVar[str] = "progress"
    segment_index: int
    step: int
    total_steps: int
    total_segments: int | None


@dataclass(frozen=True)
class SegmentPayload:
    """One generated segment. `fragment` is ``moof``+``mdat`` with continuous decode time
    (append it to the init segment); `segment` is init + fragment at time 0, a file that
    plays alone (None where a transport leaves it out). Times are seconds of video;
    `*_seconds` are wall seconds spent."""

    type: ClassVar[str] = "segment"
    segment_index: int
    total_segments: int | None
    is_final: bool
    start_frame: int  # frames since the start of the video
    num_frames: int  # frames
    start_time: float  # seconds
    end_time: float  # seconds
    fragment: bytes
    segment: bytes | None
    generate_seconds: float
    encode_seconds: float


@dataclass(frozen=True)
class CompletePayload:
    """The job ended with `total_segments` segments, `total_frames` frames, `duration`
    seconds of video."""

    type: ClassVar[str] = "complete"
    total_segments: int
    total_frames: int
    duration: float  # seconds
    final: bool = True


class HasError(Protocol):
    """What an error payload is made from (the server's `ServiceError`)."""

    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def param(self) -> str | None: ...


@dataclass(frozen=True)
class ErrorPayload:
    """The job ended without completing, or this subscriber was cut off: the error object
    clients see (`code`, `message`, `param`), e.g. ``cancelled`` or ``generation_failed``.
    `resume_from` is set only for ``slow_consumer``, the cut-off of one subscriber that fell
    behind: it may resume at that seq (it is left off the wire when None)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    param: str | None = None
    resume_from: int | None = dataclasses.field(default=None, metadata={"omit_none": True})

    @classmethod
    def of(cls, error: HasError) -> ErrorPayload:
        return cls(code=error.code, message=error.message, param=error.param)


Payload = (
    StartPayload | QueuedPayload | ProgressPayload | SegmentPayload | CompletePayload | ErrorPayload
)
Terminal = CompletePayload | ErrorPayload
"""The payload of a job's last event."""

PAYLOADS: dict[str, type[Payload]] = {
    cls.type: cls
    for cls in (
        StartPayload,
        QueuedPayload,
        ProgressPayload,
        SegmentPayload,
        CompletePayload,
        ErrorPayload,
    )
}
EVENT_TYPES = frozenset(PAYLOADS)


@dataclass(frozen=True)
class _Field:
    """How one payload field reads: its name, the value type, whether None may stand in."""

    name: str
    kind: type
    optional: bool
    default: Any


def _fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kind = next(arg for arg in args if arg is not type(None))
        out.append(_Field(field.name, kind, type(None) in args, field.default))
    return tuple(out)


_SCHEMA: dict[str, tuple[_Field, ...]] = {kind: _fields(cls) for kind, cls in PAYLOADS.items()}
_OMIT_NONE = {
    (kind, field.name)
    for kind, cls in PAYLOADS.items()
    for field in dataclasses.fields(cls)
    if field.metadata.get("omit_none")
}


def to_data(payload: Payload) -> dict[str, Any]:
    """The event `data` of `payload` (without ``time``), keys in field order."""
    data = {field.name: getattr(payload, field.name) for field in dataclasses.fields(payload)}
    for kind, name in _OMIT_NONE:
        if kind == payload.type and data[name] is None:
            del data[name]
    return data


def from_data(kind: str, data: Mapping[str, Any]) -> Payload:
    """The payload of an event of type `kind` whose data is `data`, checked field by field.

    Byte fields may come raw (any buffer) or as base64 text under ``<name>_base64``; a field
    that may be None, or has a default, may be absent; extra keys (``time``, ``job_id``,
    fields a later server adds) are ignored. Raises `WireError` naming the field.
    """
    schema = _SCHEMA.get(kind)
    if schema is None:
        raise WireError(f"unknown event type {kind!r}")
    values = {field.name: _value(field, data) for field in schema}
    return PAYLOADS[kind](**values)


def _value(field: _Field, data: Mapping[str, Any]) -> Any:
    name = field.name
    if field.kind is bytes:
        return _bytes(field, data)
    if name not in data or (data[name] is None and field.optional):
        if field.optional:
            return None
        if field.default is not dataclasses.MISSING:
            return field.default
        raise WireError(f"event is missing the field {name!r}")
    return check(name, data[name], field.kind)


def check(name: str, value: Any, kind: type) -> Any:
    """`value` as a `kind` (str, int, float, bool) or a `WireError` naming field `name`."""
    if kind is bool:
        if not isinstance(value, bool):
            raise WireError(f"field {name!r} must be a boolean, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(f"field {name!r} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WireError(f"field {name!r} must be a number, got {value!r}")
        return value  # an int stays one: what the server publishes reads back unchanged
    if not isinstance(value, kind):
        raise WireError(f"field {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def _bytes(field: _Field, data: Mapping[str, Any]) -> bytes | None:
    name, text_name = field.name, field.name + BASE64_SUFFIX
    raw = data.get(name)
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    text = data.get(text_name)
    if text is None:
        if field.optional:
            return None
        raise WireError(f"event is missing the field {name!r} (or {text_name!r})")
    if not isinstance(text, str):
        raise WireError(f"field {text_name!r} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(f"field {text_name!r} is not valid base64: {exc}") from exc


# The msgpack message (WebSocket, Redis)


def message(job_id: str, seq: int, kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The dict that msgpack carries for one event (bytes stay raw)."""
    return {"job_id": job_id, "seq": seq, "type": kind, "data": dict(data)}


def message_parts(value: Any) -> tuple[str, int, str, dict[str, Any]]:
    """(job_id, seq, type, data) of an unpacked message, checked."""
    if not isinstance(value, dict) or not isinstance(value.get("data"), dict):
        raise WireError("message is not {job_id, seq, type, data}")
    return (
        check("job_id", value.get("job_id"), str),
        check("seq", value.get("seq"), int),
        check("type", value.get("type"), str),
        value["data"],
    )


# The JSON form of the text transports (SSE, NDJSON)


def dumps(value: Any) -> str:
    """Compact JSON on one line (json escapes every newline inside strings)."""
    return json.dumps(value, separators=(",", ":"))


def base64_bytes(data: Mapping[str, Any], omit: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of `data` whose byte values are base64 text under ``<key>_base64`` (the byte
    fields named in `omit`, e.g. ``segment``, are dropped)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in omit:
            continue
        if isinstance(value, bytes | bytearray | memoryview):
            out[key + BASE64_SUFFIX] = base64.b64encode(value).decode("ascii")
        else:
            out[key] = value
    return out


def text_fields(
    job_id: str, seq: int, kind: str, data: Mapping[str, Any], omit: Iterable[str] = ()
) -> dict[str, Any]:
    """``{"job_id", "seq", "type", **data}`` with bytes base64 (the SSE ``data:`` object)."""
    return {"job_id": job_id, "seq": seq, "type": kind, **base64_bytes(data, omit)}


# SSE (`text/event-stream`)

SSE_KEEP_ALIVE = b": keep-alive\n\n"


def sse_message(kind: str, event_id: int | None, data: Mapping[str, Any]) -> bytes:
    """One SSE message: ``event:``, ``id:`` (when given) and a single-line ``data:``."""
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {dumps(data)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def sse_retry(milliseconds: int) -> bytes:
    """The reconnection delay hint for `EventSource` (milliseconds)."""
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")


def sse_comment(text: str = "keep-alive") -> bytes:
    """A comment line; clients ignore it, proxies see traffic."""
    if "\n" in text or "\r" in text:
        raise ValueError("an SSE comment must be one line")
    return f": {text}\n\n".encode()


# NDJSON

_STATUS_TYPES = {status: kind for kind, status in NDJSON_STATUS.items()} | {
    kind: kind for kind in NDJSON_STATUS
}  # a reader also takes the event type itself as the status


def ndjson_object(
    job_id: str, seq: int, kind: str, data: Mapping[str, Any], omit: Iterable[str] = ()
) -> dict[str, Any]:
    """The JSON object of one event's NDJSON line."""
    line: dict[str, Any] = {"status": NDJSON_STATUS[kind], "job_id": job_id, "seq": seq}
    fields = base64_bytes(data, omit)
    if kind == "error":
        line["error"] = {key: fields.pop(key, None) for key in ERROR_FIELDS}
    line.update(fields)
    return line


def ndjson_line(line: Mapping[str, Any]) -> bytes:
    """`line` as compact JSON plus a newline."""
    return (dumps(line) + "\n").encode("utf-8")


def ndjson_type(status: Any) -> str:
    """The event type an NDJSON line's ``status`` names."""
    kind = _STATUS_TYPES.get(status) if isinstance(status, str) else None
    if kind is None:
        raise WireError(f"NDJSON line has unknown status {status!r}")
    return kind


def ndjson_fields(line: Mapping[str, Any]) -> dict[str, Any]:
    """An NDJSON line's fields with an error's nested fields lifted up beside the rest."""
    nested = line.get("error")
    if isinstance(nested, Mapping):
        return {**line, **nested}
    return dict(line)
