"""Server-sent events framing: a pure parser over bytes, no sockets.

`SSEParser.feed(chunk)` takes the response body in whatever pieces the network delivers
(split anywhere: inside a line, between CR and LF, inside a UTF-8 character) and returns the
events completed by that piece. It follows the WHATWG `text/event-stream` rules:

- lines end with CRLF, LF or CR; a leading UTF-8 BOM is dropped;
- a blank line dispatches the event being built; lines starting with ``:`` are comments;
- ``data`` lines are joined with ``\\n``; ``event`` names the type (default ``message``);
- ``id`` sets the last event id (kept across events; ignored if it holds NUL);
- ``retry`` sets the reconnection delay (milliseconds) when it is all ASCII digits;
- an event with no ``data`` is not dispatched, and an event cut off by the end of the
  stream (no blank line after it) is discarded — so a dropped connection never yields a
  half-received event.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event. `id` is the last event id in force when it was dispatched
    ("" if the stream never set one)."""

    event: str
    data: str
    id: str


class SSEParser:
    """Incremental `text/event-stream` parser (see the module docstring)."""

    def __init__(self) -> None:
        self.last_event_id = ""
        self.retry_ms: int | None = None  # reconnection delay the server asked for (ms)
        self.comments = 0  # comment lines seen (keep-alives)
        self._buffer = bytearray()
        self._started = False  # BOM check done
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF is its pair
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add the next bytes of the body; return the events they complete, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        self._buffer += chunk
        if not self._started:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(bytes(self._buffer)):
                return []  # could still be a BOM: wait for more bytes
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]
            self._started = True
        events: list[ServerSentEvent] = []
        start = 0
        buffer = self._buffer
        while True:
            end = _line_end(buffer, start)
            if end < 0:
                break
            line = bytes(buffer[start:end])
            if buffer[end] == 0x0D:  # CR: a following LF belongs to the same line ending
                if end + 1 < len(buffer):
                    start = end + 2 if buffer[end + 1] == 0x0A else end + 1
                else:
                    start = end + 1
                    self._skip_lf = True
            else:
                start = end + 1
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        del buffer[:start]
        return events

    @property
    def pending(self) -> bool:
        """True while part of an event has been received but not dispatched."""
        return bool(self._buffer) or bool(self._data) or bool(self._event)

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        # Any other field name is ignored, as the spec says.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(
            event=event or "message", data="\n".join(data), id=self.last_event_id
        )


def _line_end(buffer: bytearray, start: int) -> int:
    """Index of the first CR or LF at or after `start`, or -1."""
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start)
    if lf < 0:
        return cr
    if cr < 0:
        return lf
    return min(lf, cr)
