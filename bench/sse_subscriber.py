"""A raw HTTP/1.1 SSE subscriber for the benchmarks: many of them fit in one asyncio process.

Each records, per event, the lag from the event's server publish `time` to its receipt.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Subscriber(asyncio.Protocol):
    """One SSE connection; records (event type, lag in seconds) per live event."""

    path: str
    lags: list[tuple[str, float]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    buffer: bytes = b""
    headers_done: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        request = f"GET {self.path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
        transport.write(request.encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.headers_done:
            _, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.headers_done, self.buffer = True, rest
        # Chunked framing lines ("1a2f\r\n") sit between messages; SSE messages end "\n\n".
        while (end := self.buffer.find(b"\n\n")) != -1:
            message, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            kind_at = message.find(b"event: ")
            if kind_at == -1:
                continue
            kind = message[kind_at + 7 : message.index(b"\n", kind_at)].decode()
            if kind == "start":
                self.started.set()
                continue
            time_at = message.rfind(b'"time":')
            if time_at != -1:
                sent = float(message[time_at + 7 :].split(b"}", 1)[0].split(b",", 1)[0])
                self.lags.append((kind, now - sent))
            if kind in ("complete", "error"):
                self.ended.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()
