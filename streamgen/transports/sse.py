"""Server-sent events framing (``text/event-stream``).

Every event is an ``event:`` line, an ``id:`` line (the job's `seq`) and ONE ``data:`` line
of compact JSON, then a blank line. A comment line (``: keep-alive``) keeps idle
connections open through proxies; ``retry:`` tells `EventSource` how long to wait before
reconnecting. This module only writes the format: the Python parser that reads it back is
the client's (`streamgen_client.sse.SSEParser`, used by the tests and benchmarks too), and
the browser player has its own (``static/sse.js``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamgen.broker.base import Event

from .text import dumps, text_fields

CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {
    "Content-Type": CONTENT_TYPE,
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}
KEEP_ALIVE = b": keep-alive\n\n"


def format_message(event_type: str, event_id: int | None, data: Mapping[str, Any]) -> bytes:
    """One SSE message: ``event:``, ``id:`` (when given) and a single-line ``data:``."""
    lines = [f"event: {event_type}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {dumps(data)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def format_event(event: Event, omit: frozenset[str] = frozenset()) -> bytes:
    """A job event as an SSE message whose id is its `seq` (byte fields in `omit` left out)."""
    return format_message(event.type, event.seq, text_fields(event, omit))


def format_retry(milliseconds: int) -> bytes:
    """The reconnection delay hint for `EventSource` (milliseconds)."""
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")


def format_comment(text: str = "keep-alive") -> bytes:
    """A comment line; clients ignore it, proxies see traffic."""
    if "\n" in text or "\r" in text:
        raise ValueError("an SSE comment must be one line")
    return f": {text}\n\n".encode()
