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

from quart import Blueprint, websocket

from streamgen.errors import BacklogGone, Conflict, ServiceError
from streamgen.protocol import GenerationParams, parse
from streamgen.streams import ws as ws_stream
from streamgen.streams.follow import Follower, open_follower

from .state import AppState, app_state, visible_job, websocket_refusal
from .submit import submit

bp = Blueprint("ws", __name__)


@bp.websocket("/ws")
async def stream() -> None:
    await websocket.accept()
    try:
        refusal = websocket_refusal()
        if refusal is not None:
            raise refusal
        state = app_state()
        follower = await _start(state, ws_stream.parse_command(await websocket.receive()))
    except ServiceError as exc:
        extra = {"resume_from": exc.resume_from} if isinstance(exc, BacklogGone) else {}
        await websocket.close(exc.close_code, ws_stream.close_reason(exc, **extra))
        return
    try:
        listener = asyncio.create_task(ws_stream.listen(state, follower.job))
        try:
            code, reason = await ws_stream.send_events(state, follower)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    finally:
        await follower.aclose()
    await websocket.close(code, reason)


async def _start(state: AppState, command: ws_stream.Command) -> Follower:
    if isinstance(command, ws_stream.Cancel):
        raise Conflict("nothing to cancel: start or subscribe to a job first", param="cancel")
    if isinstance(command, ws_stream.Subscribe):
        job = await visible_job(state, command.job_id)
        return await open_follower(state, job, command.from_seq)
    params = parse(GenerationParams, command.params)
    job = await submit(state, params, request_scoped=True, live=True)
    return await open_follower(state, job, 0, holds_lease=True)
