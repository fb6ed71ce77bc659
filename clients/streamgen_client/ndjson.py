"""Newline-delimited JSON framing: a pure decoder over bytes, no sockets.

`NDJSONDecoder.feed(chunk)` takes the body in arbitrary pieces and returns the JSON objects
of the lines those pieces complete. Lines end with LF (a CR before it is dropped); blank
lines are skipped. `close()` says whether the body ended cleanly: a last line without its
LF is a truncated object (a dropped connection), never parsed as if whole.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ProtocolError

# One line carries at most one segment in base64; bound it so a broken stream cannot eat memory.
DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024


class NDJSONDecoder:
    """Incremental NDJSON decoder (see the module docstring)."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.lines = 0  # complete lines seen, blank ones included
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """Add the next bytes of the body; return the objects of the lines they complete."""
        self._buffer += chunk
        objects: list[dict[str, Any]] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            line = bytes(self._buffer[start:end])
            start = end + 1
            self.lines += 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                objects.append(self._decode(line))
        del self._buffer[:start]
        if len(self._buffer) > self.max_line_bytes:
            raise ProtocolError(
                f"NDJSON line {self.lines + 1} is over {self.max_line_bytes} bytes "
                "without a newline"
            )
        return objects

    @property
    def pending(self) -> bool:
        """True while part of a line has been received but not its newline."""
        return bool(self._buffer.strip())

    def close(self) -> None:
        """End of body: raises `ProtocolError` if it ended inside a line (truncated)."""
        if self.pending:
            raise ProtocolError(
                f"NDJSON stream ended inside line {self.lines + 1} "
                f"({len(self._buffer)} bytes without a newline)"
            )

    def _decode(self, line: bytes) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"NDJSON line {self.lines} is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ProtocolError(
                f"NDJSON line {self.lines} is a JSON {type(value).__name__}, not an object"
            )
        return value
