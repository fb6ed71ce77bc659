"""Typed events of a job's stream, and their decoding from the three wire forms.

Every transport carries the same ordered log (``seq`` 0, 1, 2, …): `StartEvent`, maybe
`QueuedEvent` (the job waits for a worker with room), `ProgressEvent`, `SegmentEvent`, then
`CompleteEvent` or `ErrorEvent`. Each is the payload the server published (its fields are
the wire schema, `streamgen_client.wire`, the one module the server imports too) plus where
it stands in the log: `job_id` and `seq`, keyword-only. The decoders here are pure functions
over already-framed messages:

- SSE: `from_sse(event_name, data_json)`; byte fields arrive base64 as ``<name>_base64``;
- NDJSON: `from_ndjson(obj)`; the type is in ``status`` (``started``, ``queued``,
  ``progress``, ``segment``, ``completed``, ``error``) and an error's fields are nested
  under ``error``;
- WebSocket: `from_msgpack(payload)`; ``{"job_id", "seq", "type", "data"}`` with raw bytes.

Unknown extra fields are ignored (the server may add some); a missing required field or a
wrong type is a `ProtocolError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack

from . import wire
from .errors import ProtocolError


@dataclass(frozen=True, kw_only=True)
class StartEvent(wire.StartPayload):
    """The job started: how to play it (codec, init segment) and what it will be."""

    job_id: str
    seq: int


@dataclass(frozen=True, kw_only=True)
class QueuedEvent(wire.QueuedPayload):
    """The job waits for a worker with room for it (times are None while the server cannot
    tell yet)."""

    job_id: str
    seq: int


@dataclass(frozen=True, kw_only=True)
class ProgressEvent(wire.ProgressPayload):
    """One denoising step of one segment finished."""

    job_id: str
    seq: int


@dataclass(frozen=True, kw_only=True)
class SegmentEvent(wire.SegmentPayload):
    """One generated segment, in both byte forms (`segment` None where the transport does
    not carry it)."""

    job_id: str
    seq: int


@dataclass(frozen=True, kw_only=True)
class CompleteEvent(wire.CompletePayload):
    """The job finished; every segment has been sent."""

    job_id: str
    seq: int


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(wire.ErrorPayload):
    """The job (or this subscription) failed. `resume_from` is set for ``slow_consumer``:
    the subscriber was cut off and may resume at that seq (then `seq` may be None)."""

    job_id: str = ""
    seq: int | None = None


StreamEvent: TypeAlias = (
    StartEvent | QueuedEvent | ProgressEvent | SegmentEvent | CompleteEvent | ErrorEvent
)
TERMINAL = (CompleteEvent, ErrorEvent)
_CLASSES: dict[str, type[StreamEvent]] = {
    cls.type: cls
    for cls in (StartEvent, QueuedEvent, ProgressEvent, SegmentEvent, CompleteEvent, ErrorEvent)
}


def from_sse(event_name: str, data: str) -> StreamEvent:
    """Decode one SSE event (its ``event:`` name and its ``data:`` JSON)."""
    fields = _json_object(data, f"SSE {event_name!r} event")
    return from_fields(event_name, fields)


def from_ndjson(obj: Mapping[str, Any]) -> StreamEvent:
    """Decode one NDJSON line (already parsed to an object)."""
    try:
        kind = wire.ndjson_type(obj.get("status"))
    except wire.WireError as exc:
        raise ProtocolError(str(exc)) from exc
    return from_fields(kind, wire.ndjson_fields(obj))


def from_msgpack(payload: bytes) -> StreamEvent:
    """Decode one WebSocket binary message: msgpack ``{"job_id", "seq", "type", "data"}``."""
    try:
        message = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"WebSocket message is not msgpack: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise ProtocolError("WebSocket message is not {job_id, seq, type, data}")
    fields = {"job_id": message.get("job_id"), "seq": message.get("seq"), **message["data"]}
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"field 'type' must be a string, got {kind!r}")
    return from_fields(kind, fields)


def from_fields(kind: str, fields: Mapping[str, Any]) -> StreamEvent:
    """Build the typed event of type `kind` from its flat fields (either byte encoding)."""
    try:
        payload = wire.from_data(kind, fields)
        if kind == "error":
            seq = fields.get("seq")
            job_id = fields.get("job_id")
            envelope: dict[str, Any] = {
                "job_id": job_id if isinstance(job_id, str) else "",
                "seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            }
        else:
            envelope = {name: _envelope(fields, name, kind) for name in ("job_id", "seq")}
    except wire.WireError as exc:
        raise ProtocolError(str(exc)) from exc
    values = {field.name: getattr(payload, field.name) for field in dataclasses.fields(payload)}
    return _CLASSES[kind](**values, **envelope)


def _envelope(fields: Mapping[str, Any], name: str, kind: str) -> Any:
    if name not in fields or fields[name] is None:
        raise wire.WireError(f"{kind} event is missing the field {name!r}")
    return wire.check(name, fields[name], str if name == "job_id" else int)


def error_from_body(body: bytes) -> tuple[str, str, str | None]:
    """(code, message, param) from an HTTP error body ``{"error": {...}}`` (or a WebSocket
    close reason, which may be the bare ``{"code", "message", "param"}``).

    A body that is not that shape gives code ``http_error`` and the body's text (cut to 500
    characters) as the message, so the user still sees what the server said.
    """
    try:
        value = json.loads(body)
        error = value.get("error", value)  # a WebSocket close reason may be the bare object
        # A WebSocket close reason is cut to 123 bytes, so the message may be short or gone.
        return str(error["code"]), str(error.get("message", "")), _param(error.get("param"))
    except (ValueError, TypeError, KeyError, AttributeError):
        text = body.decode("utf-8", errors="replace").strip()
        return "http_error", text[:500] or "(empty body)", None


def _param(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what} data is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} data is a JSON {type(value).__name__}, not an object")
    return value
