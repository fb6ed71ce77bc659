"""The live ``video/mp4`` body of a job: the init segment (from `start`), then each segment's
fragment (continuous decode times), byte for byte — a growing fragmented MP4."""

from __future__ import annotations

from streamgen.broker.base import Event
from streamgen.events import SegmentPayload, StartPayload, payload_of

CONTENT_TYPE = "video/mp4"


def body_chunk(event: Event) -> bytes | None:
    """The bytes `event` adds to the live MP4 body, or None when it adds none."""
    if event.type not in ("start", "segment"):
        return None
    payload = payload_of(event)
    if isinstance(payload, StartPayload):
        return payload.init_segment
    assert isinstance(payload, SegmentPayload)
    return payload.fragment


def ends_body(event: Event) -> bool:
    """Whether the body is over after `event` (the job ended, one way or another)."""
    return event.terminal
