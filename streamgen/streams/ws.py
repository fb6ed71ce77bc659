"""A job over a WebSocket: msgpack binary messages out, JSON commands in, close codes.

Server → client: ``{"job_id", "seq", "type", "data"}`` (`streamgen_client.wire.message`)
packed with msgpack, bytes raw. Client → server (JSON text): a generate request,
``{"subscribe": id, "from_seq": n}`` or ``{"cancel": true}``. A close frame's reason is a
JSON error object cut to the 123 bytes RFC 6455 allows. The route (`streamgen.routes.ws`)
accepts the connection and starts or finds the job; `send_events` and `listen` answer with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import msgpack
from quart import websocket

from streamgen.broker.base import MAX_SEQ, Event
from streamgen.errors import (
    Conflict,
    InvalidParameter,
    MalformedRequest,
    ServiceError,
    SlowConsumer,
)
from streamgen.events import ErrorPayload, payload_of
from streamgen.jobs import Job

from .follow import Follower, Serving

log = logging.getLogger(__name__)

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


async def listen(state: Serving, job: Job) -> None:
    """Act on the client's later messages: ``{"cancel": true}`` cancels the job."""
    while True:
        message = await websocket.receive()
        try:
            command = parse_command(message)
        except ServiceError as exc:
            log.info("ws: ignoring a bad message for job %s: %s", job.id, exc)
            continue
        if isinstance(command, Cancel):
            with contextlib.suppress(Conflict):  # it finished meanwhile
                await state.manager.cancel(job, message="the client cancelled the job")


async def send_events(state: Serving, follower: Follower) -> tuple[int, str]:
    """Send events until the terminal one; the close code and reason to end with."""
    frames = state.frames
    async for item in follower.items():
        if isinstance(item, SlowConsumer):
            return item.close_code, close_reason(item, resume_from=item.resume_from)
        if item is None:
            continue
        await websocket.send(frames.frame("ws", item, pack_event))
        if item.terminal:
            return _close_for(item)
    return GOING_AWAY, '{"code":"shutting_down","param":null}'


def _close_for(event: Event) -> tuple[int, str]:
    payload = payload_of(event)
    if not isinstance(payload, ErrorPayload):
        return NORMAL, ""
    code = payload.code
    reason = close_reason(ServiceError(payload.message, code=code))
    if code == "cancelled":
        return NORMAL, reason
    if code == "shutting_down":
        return GOING_AWAY, reason
    return SERVER_ERROR, reason
