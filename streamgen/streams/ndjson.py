"""NDJSON (``application/x-ndjson``): a job's events one JSON object a line.

Each line has ``status`` (started, queued, progress, segment, completed, error), ``job_id`` and
``seq``; an error line nests ``{"code", "message", "param"}`` under ``error``
(`streamgen_client.wire` defines the form).
"""

from __future__ import annotations

from quart import Response
from streamgen_client import wire

from streamgen.broker.base import Event
from streamgen.errors import SlowConsumer
from streamgen.events import to_data

from .follow import Follower, Serving, StreamBody, cut_off_payload, streaming_response

CONTENT_TYPE = wire.NDJSON_CONTENT_TYPE
HEADERS = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def format_event(event: Event, omit: frozenset[str] = frozenset()) -> bytes:
    """A job event as one line (byte fields in `omit` left out)."""
    return wire.ndjson_line(
        wire.ndjson_object(event.job_id, event.seq, event.type, event.data, omit)
    )


def format_cut_off(cut: SlowConsumer, job_id: str) -> bytes:
    """The final line of a subscriber that fell behind."""
    data = to_data(cut_off_payload(cut))
    return wire.ndjson_line(wire.ndjson_object(job_id, cut.resume_from - 1, "error", data))


def ndjson_response(
    state: Serving, follower: Follower, omit: frozenset[str] = frozenset()
) -> Response:
    """An ``application/x-ndjson`` response of the follower's events."""
    frames, job_id = state.frames, follower.job.id
    transport = "ndjson:" + ",".join(sorted(omit))

    def render(item: Event | SlowConsumer | None) -> bytes | None:
        if item is None:
            return None
        if isinstance(item, SlowConsumer):
            return format_cut_off(item, job_id)
        return frames.frame(transport, item, lambda event: format_event(event, omit))

    return streaming_response(StreamBody(follower, render), HEADERS, job_id)
