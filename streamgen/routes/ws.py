"""`GET /ws`: one job per connection, events as msgpack binary messages.

The client's first message starts a job (a generate request) or follows one
(``{"subscribe": id, "from_seq": n}``); later it may send ``{"cancel": true}``. The server
closes with 1000 after `complete` (or a cancel), 1001 when shutting down, 1011 when
generation failed, 4408 when the client fell behind (resume with `from_seq`), and a
request error's own code (1008, 4404, 1013…) with a JSON reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from quart import Blueprint, websocket

from streamgen.broker.base import Event
from streamgen.errors import BacklogGone, Conflict, ServiceError, SlowConsumer
from streamgen.events import ErrorPayload, payload_of
from streamgen.jobs import Job
from streamgen.protocol import GenerationParams, parse
from streamgen.streaming import Follower
from streamgen.transports import ws as framing

from .responses import open_follower
from .state import AppState, app_state, visible_job, websocket_refusal
from .submit import submit

bp = Blueprint("ws", __name__)
log = logging.getLogger(__name__)


@bp.websocket("/ws")
async def stream() -> None:
    await websocket.accept()
    try:
        refusal = websocket_refusal()
        if refusal is not None:
            raise refusal
        state = app_state()
        follower = await _start(state, framing.parse_command(await websocket.receive()))
    except ServiceError as exc:
        extra = {"resume_from": exc.resume_from} if isinstance(exc, BacklogGone) else {}
        await websocket.close(exc.close_code, framing.close_reason(exc, **extra))
        return
    try:
        listener = asyncio.create_task(_listen(state, follower.job))
        try:
            code, reason = await _send_events(state, follower)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    finally:
        await follower.aclose()
    await websocket.close(code, reason)


async def _start(state: AppState, command: framing.Command) -> Follower:
    if isinstance(command, framing.Cancel):
        raise Conflict("nothing to cancel: start or subscribe to a job first", param="cancel")
    if isinstance(command, framing.Subscribe):
        job = await visible_job(state, command.job_id)
        return await open_follower(state, job, command.from_seq)
    params = parse(GenerationParams, command.params)
    job = await submit(state, params, request_scoped=True, live=True)
    return await open_follower(state, job, 0, holds_lease=True)


async def _listen(state: AppState, job: Job) -> None:
    """Act on the client's later messages: ``{"cancel": true}`` cancels the job."""
    while True:
        message = await websocket.receive()
        try:
            command = framing.parse_command(message)
        except ServiceError as exc:
            log.info("ws: ignoring a bad message for job %s: %s", job.id, exc)
            continue
        if isinstance(command, framing.Cancel):
            with contextlib.suppress(Conflict):  # it finished meanwhile
                await state.manager.cancel(job, message="the client cancelled the job")


async def _send_events(state: AppState, follower: Follower) -> tuple[int, str]:
    """Send events until the terminal one; the close code and reason to end with."""
    frames = state.frames
    async for item in follower.items():
        if isinstance(item, SlowConsumer):
            return item.close_code, framing.close_reason(item, resume_from=item.resume_from)
        if item is None:
            continue
        await websocket.send(frames.frame("ws", item, framing.pack_event))
        if item.terminal:
            return _close_for(item)
    return framing.GOING_AWAY, '{"code":"shutting_down","param":null}'


def _close_for(event: Event) -> tuple[int, str]:
    payload = payload_of(event)
    if not isinstance(payload, ErrorPayload):
        return framing.NORMAL, ""
    code = payload.code
    reason = framing.close_reason(ServiceError(payload.message, code=code))
    if code == "cancelled":
        return framing.NORMAL, reason
    if code == "shutting_down":
        return framing.GOING_AWAY, reason
    return framing.SERVER_ERROR, reason
