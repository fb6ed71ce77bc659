"""Server-sent events framing (``text/event-stream``).

Every event is an ``event:`` line, an ``id:`` line (the job's `seq`) and ONE ``data:`` line
of compact JSON, then a blank line. A comment line (``: keep-alive``) keeps idle
connections open through proxies; ``retry:`` tells `EventSource` how long to wait before
reconnecting. `SSEParser` reads the format back (tests and clients use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched message: `event` ("message" when not named), `id`, joined `data`."""

    event: str
    data: str
    id: str | None
    retry: int | None = None


class SSEParser:
    """Incremental parser of an SSE byte stream (per the WHATWG event-stream rules)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self.comments = 0
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Messages completed by `chunk` (a chunk may end anywhere)."""
        self._buffer += chunk
        messages: list[SSEMessage] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return messages
            end, skip = cut
            line = self._buffer[:end].decode("utf-8")
            self._buffer = self._buffer[end + skip :]
            message = self._line(line)
            if message is not None:
                messages.append(message)

    def _line(self, line: str) -> SSEMessage | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        if self._id is not None:
            self.last_event_id = self._id
        if not self._data:
            retry, self._retry = self._retry, None
            self._event, self._id = "", None
            return SSEMessage("retry", "", None, retry) if retry is not None else None
        message = SSEMessage(self._event or "message", "\n".join(self._data), self._id, self._retry)
        self._event, self._data, self._id, self._retry = "", [], None, None
        return message


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """(index, terminator length) of the first line end (CRLF, LF or CR), or None."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, 1
    if cr + 1 == len(buffer):
        return None  # a CR at the end may be the first half of CRLF
    return cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
