"""WebSocket framing: msgpack binary messages out, JSON commands in, close codes.

Server → client: ``{"job_id", "seq", "type", "data"}`` packed with msgpack, bytes raw.
Client → server (JSON text): a generate request, ``{"subscribe": id, "from_seq": n}`` or
``{"cancel": true}``. A close frame's reason is a JSON error object cut to the 123 bytes
RFC 6455 allows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack

from streamgen.broker.base import MAX_SEQ, Event
from streamgen.errors import InvalidParameter, MalformedRequest, ServiceError

NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
SERVER_ERROR = 1011
MAX_REASON_BYTES = 123


@dataclass(frozen=True)
class Generate:
    """Start a job from `params` (the fields of `POST /generate-stream`)."""

    params: dict[str, Any]


@dataclass(frozen=True)
class Subscribe:
    """Follow job `job_id` from sequence number `from_seq`."""

    job_id: str
    from_seq: int = 0


@dataclass(frozen=True)
class Cancel:
    """Cancel the job this connection follows."""


Command = Generate | Subscribe | Cancel


def pack_event(event: Event) -> bytes:
    """The binary message for `event` (msgpack, raw bytes)."""
    return event.pack()


def unpack_message(payload: bytes) -> dict[str, Any]:
    """A server message back as a dict (tests and clients)."""
    message: dict[str, Any] = msgpack.unpackb(payload, raw=False)
    return message


def parse_command(message: str | bytes) -> Command:
    """The client command in a text (or binary JSON) message; errors name the field."""
    try:
        payload = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"message is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise MalformedRequest("message must be a JSON object")
    if "cancel" in payload:
        if payload != {"cancel": True}:
            raise InvalidParameter('a cancel message is exactly {"cancel": true}', param="cancel")
        return Cancel()
    if "subscribe" in payload:
        return _subscribe(payload)
    return Generate(payload)


def _subscribe(payload: dict[str, Any]) -> Subscribe:
    extra = sorted(set(payload) - {"subscribe", "from_seq"})
    if extra:
        raise InvalidParameter(f"unknown field {extra[0]!r}", param=extra[0])
    job_id, from_seq = payload["subscribe"], payload.get("from_seq", 0)
    if not isinstance(job_id, str) or not job_id:
        raise InvalidParameter("subscribe must be a job id (string)", param="subscribe")
    if isinstance(from_seq, bool) or not isinstance(from_seq, int) or not 0 <= from_seq <= MAX_SEQ:
        raise InvalidParameter(f"from_seq must be an integer 0..{MAX_SEQ}", param="from_seq")
    return Subscribe(job_id, from_seq)


def close_reason(error: ServiceError, **extra: Any) -> str:
    """``{"code", "param", "message", **extra}`` as JSON of at most 123 UTF-8 bytes."""
    head = {"code": error.code, "param": error.param, **extra}
    message = error.message
    while True:
        reason = json.dumps({**head, "message": message}, separators=(",", ":"))
        if len(reason.encode("utf-8")) <= MAX_REASON_BYTES:
            return reason
        if not message:
            return json.dumps(head, separators=(",", ":"))[:MAX_REASON_BYTES]
        message = message[: max(0, len(message) - max(4, len(reason) - MAX_REASON_BYTES))]
