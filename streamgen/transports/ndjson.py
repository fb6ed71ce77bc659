"""NDJSON framing (``application/x-ndjson``): one JSON object a line.

Each line has ``status`` (started, queued, progress, segment, completed, error), ``job_id`` and
``seq``; an error line nests ``{"code", "message", "param"}`` under ``error``.
"""

from __future__ import annotations

from typing import Any

from streamgen.broker.base import Event

from .text import base64_bytes, dumps

CONTENT_TYPE = "application/x-ndjson"
HEADERS = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STATUS = {
    "start": "started",
    "queued": "queued",
    "progress": "progress",
    "segment": "segment",
    "complete": "completed",
    "error": "error",
}
_ERROR_FIELDS = ("code", "message", "param")


def event_line(event: Event, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The JSON object of one event's line (byte fields in `omit` left out)."""
    line: dict[str, Any] = {"status": STATUS[event.type], "job_id": event.job_id, "seq": event.seq}
    data = base64_bytes(event.data, omit)
    if event.type == "error":
        line["error"] = {key: data.pop(key, None) for key in _ERROR_FIELDS}
    line.update(data)
    return line


def format_line(line: dict[str, Any]) -> bytes:
    """`line` as compact JSON plus a newline."""
    return (dumps(line) + "\n").encode("utf-8")


def format_event(event: Event, omit: frozenset[str] = frozenset()) -> bytes:
    return format_line(event_line(event, omit))
