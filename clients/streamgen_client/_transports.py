"""The connections under `EventStream`: one HTTP response (SSE or NDJSON) or one WebSocket.

Each turns its framing into typed events and every way the connection can end early into
`Dropped` (resumable) — or into `RequestRejected` / `ProtocolError` when retrying cannot help.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from .errors import ClientError, RequestRejected
from .events import StreamEvent, error_from_body, from_msgpack, from_ndjson, from_sse
from .ndjson import NDJSONDecoder
from .sse import SSEParser


@dataclass(frozen=True)
class Timeouts:
    """Network timeouts (seconds).

    `read_s` is the longest silence tolerated on an SSE stream, where the server sends a
    keep-alive about every 15 s. NDJSON and WebSocket have no keep-alive events (a queued job
    is silent until it starts), so they wait `quiet_read_s` (None: as long as it takes); a
    dead peer is still found by TCP keep-alive probes (about 60 s) or WebSocket pings (20 s).
    """

    connect_s: float = 10.0
    read_s: float = 60.0
    quiet_read_s: float | None = None
    write_s: float = 30.0


# Statuses and close codes that mean "try again" rather than "your request is wrong".
RETRY_HTTP_STATUS = frozenset({502, 503, 504})
# 1000 before the final event, 1001 going away, 1006 no close frame (network), 1012 restart,
# 4408 slow consumer (resume from the last event received).
RESUMABLE_CLOSE_CODES = frozenset({1000, 1001, 1006, 1012, 4408})
Framing = Literal["sse", "ndjson"]
SSE_EVENT_NAMES = frozenset({"start", "progress", "segment", "complete", "error"})
# A segment travels as one message; this bounds what one message may allocate (bytes).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class Dropped(ClientError):
    """The connection ended before the job's final event; resuming may help.

    `request_not_sent`: the connection failed before the request reached the server, so
    sending it again cannot start a second job. `deliberate`: `EventStream.drop` asked for it.
    """

    def __init__(self, message: str, *, request_not_sent: bool = False, deliberate: bool = False):
        super().__init__(message)
        self.request_not_sent = request_not_sent
        self.deliberate = deliberate


class HTTPConnection:
    """One streaming HTTP response carrying SSE or NDJSON."""

    def __init__(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        framing: Framing,
        timeout: httpx.Timeout,
        *,
        resuming: bool,
    ) -> None:
        self.framing = framing
        self.retry_ms: int | None = None  # the server's SSE `retry:` (ms)
        request = http.build_request(method, path, json=body, headers=headers, timeout=timeout)
        where = f"{method} {request.url}"
        try:
            self.response = http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Dropped(f"cannot connect for {where}: {exc}", request_not_sent=True) from exc
        except httpx.TransportError as exc:
            raise Dropped(f"{where} failed: {exc!r}") from exc
        status = self.response.status_code
        if status >= 400:
            code, message, param = error_from_body(self._error_body())
            if resuming and status in RETRY_HTTP_STATUS:
                raise Dropped(f"{where}: HTTP {status} {code}: {message}")
            raise RequestRejected(status, code, message, param)
        self.job_id: str | None = self.response.headers.get("x-job-id")
        kind = self.response.headers.get("content-type", "")
        expected = "text/event-stream" if framing == "sse" else "ndjson"
        if expected not in kind:
            self.response.close()
            raise RequestRejected(
                status, "unexpected_content_type", f"{where} answered {kind!r}, not {expected}"
            )

    def events(self) -> Iterator[StreamEvent]:
        """The events of the body, in order; `Dropped` when the body breaks off."""
        try:
            if self.framing == "sse":
                yield from self._sse()
            else:
                yield from self._ndjson()
        except httpx.TransportError as exc:  # read error, timeout, truncated chunked body
            raise Dropped(f"connection lost: {exc!r}") from exc

    def close(self, *, abort: bool = False) -> None:
        """Close the response; an unread body closes its TCP connection."""
        self.response.close()

    def _sse(self) -> Iterator[StreamEvent]:
        parser = SSEParser()
        for chunk in self.response.iter_bytes():
            for message in parser.feed(chunk):
                self.retry_ms = parser.retry_ms
                # Like EventSource, ignore event names this client does not know.
                if message.event in SSE_EVENT_NAMES:
                    yield from_sse(message.event, message.data)
            self.retry_ms = parser.retry_ms

    def _ndjson(self) -> Iterator[StreamEvent]:
        decoder = NDJSONDecoder()
        for chunk in self.response.iter_bytes():
            for obj in decoder.feed(chunk):
                yield from_ndjson(obj)
        if decoder.pending:
            raise Dropped("the NDJSON body ended inside a line")

    def _error_body(self) -> bytes:
        try:
            return self.response.read()
        except httpx.TransportError:
            return b""
        finally:
            self.response.close()


class WebSocketConnection:
    """One WebSocket on ``/ws``: sends one JSON text message, then reads msgpack events."""

    def __init__(
        self,
        url: str,
        message: Mapping[str, Any],
        timeouts: Timeouts,
        headers: Mapping[str, str],
        *,
        resuming: bool,
    ) -> None:
        self.retry_ms: int | None = None
        self.job_id: str | None = None
        self.read_s = timeouts.quiet_read_s  # liveness: websockets pings every 20 s
        self._exit = contextlib.ExitStack()
        try:
            # Entered as a context manager, as websockets >= 17.1 asks; `close` exits it.
            self.ws: ClientConnection = self._exit.enter_context(
                connect(
                    url,
                    open_timeout=timeouts.connect_s,
                    close_timeout=timeouts.connect_s,
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None,  # video does not deflate; save the CPU
                    additional_headers=dict(headers) or None,
                )
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            code, text, param = error_from_body(bytes(exc.response.body or b""))
            if resuming and status in RETRY_HTTP_STATUS:
                raise Dropped(f"WebSocket {url}: HTTP {status} {code}: {text}") from exc
            raise RequestRejected(status, code, text, param) from exc
        except InvalidHandshake as exc:
            raise RequestRejected(0, "websocket_handshake", f"{url}: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            # The request goes as the first message after the handshake: not sent yet.
            raise Dropped(f"cannot connect to {url}: {exc!r}", request_not_sent=True) from exc
        try:
            self.ws.send(json.dumps(dict(message), separators=(",", ":")))
        except ConnectionClosed as exc:
            self.close(abort=True)
            self._closed(exc)

    def events(self) -> Iterator[StreamEvent]:
        """The events of the connection, in order; `Dropped` when it breaks off."""
        while True:
            try:
                data = self.ws.recv(timeout=self.read_s)
            except TimeoutError as exc:
                raise Dropped(f"no message for {self.read_s} s") from exc
            except ConnectionClosed as exc:
                self._closed(exc)
            if isinstance(data, str):
                raise RequestRejected(
                    0,
                    "unexpected_text_message",
                    f"expected msgpack binary, got text {data[:200]!r}",
                )
            yield from_msgpack(data)

    def close(self, *, abort: bool = False) -> None:
        """Close cleanly (close frame 1000), or with `abort` drop the TCP connection."""
        if abort:
            self.ws.close_socket()
            self._exit.pop_all()
        else:
            self._exit.close()

    def _closed(self, exc: ConnectionClosed) -> NoReturn:
        frame = exc.rcvd
        code = frame.code if frame is not None else 1006
        reason = frame.reason if frame is not None else ""
        if code in RESUMABLE_CLOSE_CODES:
            raise Dropped(f"WebSocket closed with code {code} {reason!r}") from exc
        error_code, message, param = error_from_body(reason.encode())
        raise RequestRejected(code, error_code, message, param) from exc
