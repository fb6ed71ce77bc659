"""Server-sent events (``text/event-stream``): a job's events as the server writes them.

Every event is an ``event:`` line, an ``id:`` line (the job's `seq`) and ONE ``data:`` line
of compact JSON, then a blank line (`streamgen_client.wire` defines the form). A comment line
(``: keep-alive``) keeps idle connections open through proxies; ``retry:`` tells
`EventSource` how long to wait before reconnecting. The Python parser that reads it back is
the client's (`streamgen_client.sse.SSEParser`, used by the tests and benchmarks too), and
the browser player has its own (``static/sse.js``).
"""

from __future__ import annotations

from quart import Response
from streamgen_client import wire

from streamgen.broker.base import Event
from streamgen.errors import SlowConsumer
from streamgen.events import to_data

from .follow import Follower, Serving, StreamBody, cut_off_payload, streaming_response

CONTENT_TYPE = wire.SSE_CONTENT_TYPE
HEADERS = {
    "Content-Type": CONTENT_TYPE,
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def format_event(event: Event, omit: frozenset[str] = frozenset()) -> bytes:
    """A job event as an SSE message whose id is its `seq` (byte fields in `omit` left out)."""
    fields = wire.text_fields(event.job_id, event.seq, event.type, event.data, omit)
    return wire.sse_message(event.type, event.seq, fields)


def format_cut_off(cut: SlowConsumer, job_id: str) -> bytes:
    """The final message of a subscriber that fell behind."""
    seq = cut.resume_from - 1
    fields = wire.text_fields(job_id, seq, "error", to_data(cut_off_payload(cut)))
    return wire.sse_message("error", seq, fields)


def sse_response(
    state: Serving, follower: Follower, omit: frozenset[str] = frozenset()
) -> Response:
    """A ``text/event-stream`` response of the follower's events."""
    frames, job_id = state.frames, follower.job.id
    transport = "sse:" + ",".join(sorted(omit))

    def render(item: Event | SlowConsumer | None) -> bytes:
        if item is None:
            return wire.SSE_KEEP_ALIVE
        if isinstance(item, SlowConsumer):
            return format_cut_off(item, job_id)
        return frames.frame(transport, item, lambda event: format_event(event, omit))

    body = StreamBody(
        follower,
        render,
        preamble=wire.sse_retry(state.settings.sse_retry_ms),
        heartbeat_s=state.settings.sse_heartbeat_seconds,
    )
    return streaming_response(body, HEADERS, job_id)
