"""Typed events of a job's stream, and their decoding from the three wire forms.

Every transport carries the same ordered log (``seq`` 0, 1, 2, …): `StartEvent`, maybe
`QueuedEvent` (the job waits for a worker with room), `ProgressEvent`, `SegmentEvent`, then
`CompleteEvent` or `ErrorEvent`. The decoders here are
pure functions over already-framed messages:

- SSE: `from_sse(event_name, data_json)`; byte fields arrive base64 as ``<name>_base64``;
- NDJSON: `from_ndjson(obj)`; the type is in ``status`` (``started``, ``queued``,
  ``progress``, ``segment``, ``completed``, ``error``) and an error's fields are nested
  under ``error``;
- WebSocket: `from_msgpack(payload)`; ``{"job_id", "seq", "type", "data"}`` with raw bytes.

Unknown extra fields are ignored (the server may add some); a missing required field or a
wrong type is a `ProtocolError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack

from .errors import ProtocolError


@dataclass(frozen=True)
class StartEvent:
    """The job started: how to play it (codec, init segment) and what it will be."""

    job_id: str
    seq: int
    codec: str  # MSE codec string, e.g. "avc1.64000a"
    mime: str
    init_segment: bytes  # ftyp + moov
    width: int  # pixels
    height: int  # pixels
    fps: float  # frames per second
    total_segments: int | None  # None when unbounded
    total_frames: int | None  # None when unbounded
    seed: int | None
    model: str


@dataclass(frozen=True)
class QueuedEvent:
    """The job waits for a worker with room for it: `position` jobs wait before it; it should
    start at `estimated_start_at` (Unix seconds), `estimated_wait_seconds` from when the
    event was sent (both None when the server cannot tell yet)."""

    job_id: str
    seq: int
    position: int
    estimated_start_at: float | None
    estimated_wait_seconds: float | None


@dataclass(frozen=True)
class ProgressEvent:
    """One denoising step of one segment finished."""

    job_id: str
    seq: int
    segment_index: int
    step: int
    total_steps: int
    total_segments: int | None


@dataclass(frozen=True)
class SegmentEvent:
    """One generated segment, in both byte forms.

    `fragment` is ``moof``+``mdat`` with decode times continuous across the job (init + every
    fragment in order is one MP4); `segment` is init + this fragment rebased to time 0, a
    playable MP4 alone (None where the transport does not carry it).
    """

    job_id: str
    seq: int
    segment_index: int
    total_segments: int | None
    is_final: bool
    start_frame: int  # frames since the start of the video
    num_frames: int  # frames
    start_time: float  # seconds
    end_time: float  # seconds
    fragment: bytes
    segment: bytes | None
    generate_seconds: float | None
    encode_seconds: float | None


@dataclass(frozen=True)
class CompleteEvent:
    """The job finished; every segment has been sent."""

    job_id: str
    seq: int
    total_segments: int
    total_frames: int  # frames
    duration: float  # seconds


@dataclass(frozen=True)
class ErrorEvent:
    """The job (or this subscription) failed. `resume_from` is set for ``slow_consumer``:
    the subscriber was cut off and may resume at that seq."""

    job_id: str
    seq: int | None
    code: str
    message: str
    param: str | None
    resume_from: int | None = None


StreamEvent: TypeAlias = (
    StartEvent | QueuedEvent | ProgressEvent | SegmentEvent | CompleteEvent | ErrorEvent
)
TERMINAL = (CompleteEvent, ErrorEvent)

_NDJSON_STATUS = {
    "started": "start",
    "start": "start",
    "queued": "queued",
    "progress": "progress",
    "segment": "segment",
    "completed": "complete",
    "complete": "complete",
    "error": "error",
}


def from_sse(event_name: str, data: str) -> StreamEvent:
    """Decode one SSE event (its ``event:`` name and its ``data:`` JSON)."""
    fields = _json_object(data, f"SSE {event_name!r} event")
    return from_fields(event_name, fields)


def from_ndjson(obj: Mapping[str, Any]) -> StreamEvent:
    """Decode one NDJSON line (already parsed to an object)."""
    status = obj.get("status")
    kind = _NDJSON_STATUS.get(status) if isinstance(status, str) else None
    if kind is None:
        raise ProtocolError(f"NDJSON line has unknown status {status!r}")
    return from_fields(kind, obj)


def from_msgpack(payload: bytes) -> StreamEvent:
    """Decode one WebSocket binary message: msgpack ``{"job_id", "seq", "type", "data"}``."""
    try:
        message = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"WebSocket message is not msgpack: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise ProtocolError("WebSocket message is not {job_id, seq, type, data}")
    fields = dict(message["data"])
    fields.setdefault("job_id", message.get("job_id"))
    fields.setdefault("seq", message.get("seq"))
    return from_fields(_str(message, "type"), fields)


def from_fields(kind: str, fields: Mapping[str, Any]) -> StreamEvent:
    """Build the typed event of type `kind` from its fields (either byte encoding)."""
    if kind == "error":
        return _error(fields)
    job_id = _str(fields, "job_id")
    seq = _int(fields, "seq")
    if kind == "start":
        return StartEvent(
            job_id=job_id,
            seq=seq,
            codec=_str(fields, "codec"),
            mime=_str(fields, "mime", default=""),
            init_segment=_bytes(fields, "init_segment"),
            width=_int(fields, "width"),
            height=_int(fields, "height"),
            fps=_float(fields, "fps"),
            total_segments=_opt_int(fields, "total_segments"),
            total_frames=_opt_int(fields, "total_frames"),
            seed=_opt_int(fields, "seed"),
            model=_str(fields, "model", default=""),
        )
    if kind == "queued":
        return QueuedEvent(
            job_id=job_id,
            seq=seq,
            position=_int(fields, "position"),
            estimated_start_at=_opt_float(fields, "estimated_start_at"),
            estimated_wait_seconds=_opt_float(fields, "estimated_wait_seconds"),
        )
    if kind == "progress":
        return ProgressEvent(
            job_id=job_id,
            seq=seq,
            segment_index=_int(fields, "segment_index"),
            step=_int(fields, "step"),
            total_steps=_int(fields, "total_steps"),
            total_segments=_opt_int(fields, "total_segments"),
        )
    if kind == "segment":
        return SegmentEvent(
            job_id=job_id,
            seq=seq,
            segment_index=_int(fields, "segment_index"),
            total_segments=_opt_int(fields, "total_segments"),
            is_final=bool(fields.get("is_final", False)),
            start_frame=_int(fields, "start_frame"),
            num_frames=_int(fields, "num_frames"),
            start_time=_float(fields, "start_time"),
            end_time=_float(fields, "end_time"),
            fragment=_bytes(fields, "fragment"),
            segment=_opt_bytes(fields, "segment"),
            generate_seconds=_opt_float(fields, "generate_seconds"),
            encode_seconds=_opt_float(fields, "encode_seconds"),
        )
    if kind == "complete":
        return CompleteEvent(
            job_id=job_id,
            seq=seq,
            total_segments=_int(fields, "total_segments"),
            total_frames=_int(fields, "total_frames"),
            duration=_float(fields, "duration"),
        )
    raise ProtocolError(f"unknown event type {kind!r}")


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


def _error(fields: Mapping[str, Any]) -> ErrorEvent:
    nested = fields.get("error")
    inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else fields
    seq = fields.get("seq")
    resume_from = inner.get("resume_from", fields.get("resume_from"))
    return ErrorEvent(
        job_id=str(fields.get("job_id") or ""),
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        code=_str(inner, "code"),
        message=_str(inner, "message", default=""),
        param=_param(inner.get("param")),
        resume_from=resume_from if isinstance(resume_from, int) else None,
    )


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


_MISSING = object()


def _get(fields: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    value = fields.get(name, default)
    if value is _MISSING:
        raise ProtocolError(f"event is missing the field {name!r}")
    return value


def _str(fields: Mapping[str, Any], name: str, default: Any = _MISSING) -> str:
    value = _get(fields, name, default)
    if not isinstance(value, str):
        raise ProtocolError(f"field {name!r} must be a string, got {value!r}")
    return value


def _int(fields: Mapping[str, Any], name: str) -> int:
    value = _get(fields, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"field {name!r} must be an integer, got {value!r}")
    return value


def _opt_int(fields: Mapping[str, Any], name: str) -> int | None:
    return None if fields.get(name) is None else _int(fields, name)


def _float(fields: Mapping[str, Any], name: str) -> float:
    value = _get(fields, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"field {name!r} must be a number, got {value!r}")
    return float(value)


def _opt_float(fields: Mapping[str, Any], name: str) -> float | None:
    return None if fields.get(name) is None else _float(fields, name)


def _opt_bytes(fields: Mapping[str, Any], name: str) -> bytes | None:
    raw = fields.get(name)
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    text = fields.get(f"{name}_base64")
    if text is None:
        return None
    if not isinstance(text, str):
        raise ProtocolError(f"field {name + '_base64'!r} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"field {name + '_base64'!r} is not valid base64: {exc}") from exc


def _bytes(fields: Mapping[str, Any], name: str) -> bytes:
    value = _opt_bytes(fields, name)
    if value is None:
        raise ProtocolError(f"event is missing the field {name!r} (or {name + '_base64'!r})")
    return value
