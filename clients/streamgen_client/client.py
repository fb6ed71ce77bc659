"""The streaming client: one job's events over SSE, NDJSON or WebSocket, resumed after a drop.

`StreamClient(base_url).generate(request, transport=...)` starts a job and returns an
`EventStream`: iterate it for typed events (`StartEvent`, `ProgressEvent`, `SegmentEvent`,
`CompleteEvent`). When the connection drops — a network error, the end of the body before
the job's final event, a read timeout, a ``slow_consumer`` cut-off, or the server going away
— the stream reconnects and resumes right after the last event it received:

- SSE and NDJSON: ``GET /v1/jobs/{id}/events?format=sse|ndjson`` with
  ``Last-Event-ID: <last seq>``;
- WebSocket: a new ``/ws`` connection sending ``{"subscribe": id, "from_seq": last + 1}``.

Events are checked in order by ``seq``: one already received (a replay) is skipped, a gap is
a `ProtocolError`. Reconnects back off per `RetryPolicy` and give up with `StreamInterrupted`
after ``max_retries`` failures in a row. A job that ends with an ``error`` event raises
`JobFailed`; a refused request raises `RequestRejected` (never retried).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from . import _transports
from ._transports import Dropped, Timeouts
from .errors import JobFailed, ProtocolError, RequestRejected, StreamInterrupted
from .events import TERMINAL, ErrorEvent, StartEvent, StreamEvent, error_from_body
from .request import GenerateRequest

Transport = Literal["sse", "ndjson", "ws"]
TRANSPORTS: tuple[Transport, ...] = ("sse", "ndjson", "ws")
_ACCEPT = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}


@dataclass(frozen=True)
class RetryPolicy:
    """How a dropped stream is retried: exponential backoff, bounded.

    The first delay is the server's SSE ``retry:`` if it sent one, else `initial_delay_s`;
    each further failure in a row multiplies it by `multiplier`, up to `max_delay_s`. After
    `max_retries` failures in a row the stream gives up. Receiving an event resets the count.
    """

    max_retries: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("initial_delay_s and max_delay_s must be >= 0 (seconds)")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def delay_s(self, failures: int, server_retry_ms: int | None = None) -> float:
        """Seconds to wait before retry number ``failures + 1``."""
        first = self.initial_delay_s if server_retry_ms is None else server_retry_ms / 1000
        return float(min(self.max_delay_s, first * self.multiplier**failures))


class _Connection(Protocol):
    retry_ms: int | None

    def events(self) -> Iterator[StreamEvent]: ...

    def close(self, *, abort: bool = False) -> None: ...


class StreamClient:
    """A client of one streamgen server (``http://host:port``)."""

    def __init__(
        self,
        base_url: str,
        *,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self.headers = dict(headers or {})
        t = self.timeouts
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=httpx.Timeout(
                connect=t.connect_s, read=t.read_s, write=t.write_s, pool=t.connect_s
            ),
            transport=httpx.HTTPTransport(socket_options=_tcp_keepalive()),
        )

    def generate(
        self, request: GenerateRequest | Mapping[str, Any], transport: Transport = "sse"
    ) -> EventStream:
        """Start a job and stream its events (see `EventStream`)."""
        _check_transport(transport)
        body = request.to_json() if isinstance(request, GenerateRequest) else dict(request)
        return EventStream(self, transport, body=body)

    def submit(self, request: GenerateRequest | Mapping[str, Any]) -> str:
        """Queue a job with ``POST /v1/jobs`` and return its id. Unlike `generate`, the job
        runs whether or not anyone follows it; follow it with `attach`."""
        body = request.to_json() if isinstance(request, GenerateRequest) else dict(request)
        try:
            response = self.http.post("/v1/jobs", json=body)
        except httpx.TransportError as exc:
            raise StreamInterrupted(
                f"POST /v1/jobs failed: {exc!r}", job_id="", last_seq=-1
            ) from exc
        if response.status_code >= 400:
            code, message, param = error_from_body(response.content)
            raise RequestRejected(response.status_code, code, message, param)
        try:
            job_id = response.json()["id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"POST /v1/jobs answered without a job id: {exc!r}") from exc
        if not isinstance(job_id, str) or not job_id:
            raise ProtocolError(f"POST /v1/jobs answered a bad job id {job_id!r}")
        return job_id

    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job (``DELETE /v1/jobs/{id}``); its stream then ends
        with an ``error`` event (code ``cancelled``), which `EventStream` raises as
        `JobFailed`. A finished job is a `RequestRejected` with status 409."""
        try:
            response = self.http.delete(f"/v1/jobs/{quote(job_id, safe='')}")
        except httpx.TransportError as exc:
            raise StreamInterrupted(
                f"DELETE /v1/jobs/{job_id} failed: {exc!r}", job_id=job_id, last_seq=-1
            ) from exc
        if response.status_code >= 400:
            code, message, param = error_from_body(response.content)
            raise RequestRejected(response.status_code, code, message, param)

    def attach(
        self, job_id: str, *, from_seq: int = 0, transport: Transport = "sse"
    ) -> EventStream:
        """Stream the events of an existing job with ``seq >= from_seq`` (the job's whole log
        from 0; the `start` event, which holds the init segment, is seq 0)."""
        _check_transport(transport)
        if not job_id:
            raise ValueError("job_id must be a non-empty job id")
        if from_seq < 0:
            raise ValueError(f"from_seq must be >= 0, got {from_seq}")
        return EventStream(self, transport, job_id=job_id, from_seq=from_seq)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connect(self, stream: EventStream) -> _Connection:
        """Open the connection that carries `stream` on from its last received event."""
        resuming = stream.job_id is not None
        if stream.transport == "ws":
            url = _ws_url(self.base_url)
            if resuming:
                message: dict[str, Any] = {
                    "subscribe": stream.job_id,
                    "from_seq": stream.last_seq + 1,
                }
            else:
                message = stream.body or {}
            return _transports.WebSocketConnection(
                url, message, self.timeouts, self.headers, resuming=resuming
            )
        framing: _transports.Framing = "ndjson" if stream.transport == "ndjson" else "sse"
        headers = {"Accept": _ACCEPT[framing]}
        t = self.timeouts
        read_s = t.quiet_read_s if framing == "ndjson" else t.read_s
        timeout = httpx.Timeout(connect=t.connect_s, read=read_s, write=t.write_s, pool=t.connect_s)
        if not resuming:
            path = "/generate-stream-chunked" if framing == "ndjson" else "/generate-stream"
            return _transports.HTTPConnection(
                self.http, "POST", path, stream.body, headers, framing, timeout, resuming=False
            )
        # Both framings resume on the job's events; `format` picks NDJSON or SSE.
        if stream.last_seq >= 0:
            headers["Last-Event-ID"] = str(stream.last_seq)
        path = f"/v1/jobs/{quote(stream.job_id or '', safe='')}/events?format={framing}"
        return _transports.HTTPConnection(
            self.http, "GET", path, None, headers, framing, timeout, resuming=True
        )


class EventStream(Iterator[StreamEvent]):
    """The events of one job, in `seq` order, across reconnects (see the module docstring).

    `job_id` is known once the `start` event (or the server's ``X-Job-Id`` header) arrived;
    `last_seq` is the last sequence number received; `reconnects` counts resumed connections.
    Iteration ends after `CompleteEvent`; an ``error`` event raises `JobFailed`.
    """

    def __init__(
        self,
        client: StreamClient,
        transport: Transport,
        *,
        body: dict[str, Any] | None = None,
        job_id: str | None = None,
        from_seq: int = 0,
    ) -> None:
        self.client = client
        self.transport = transport
        self.body = body
        self.job_id = job_id
        self.last_seq = from_seq - 1
        self.reconnects = 0
        self._start_seen = False
        self._drop_requested = False
        self._connection: _Connection | None = None
        self._events = self._run()

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def drop(self) -> None:
        """Close the current connection abruptly, as a network failure would, once the caller
        asks for the next event; the stream then resumes on a new connection. Call it between
        events (in the loop body)."""
        self._drop_requested = True

    def close(self) -> None:
        """Stop streaming and close the connection. A queued job keeps running; the server
        cancels a request-scoped one (`generate`) when its last client leaves."""
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> Generator[StreamEvent, None, None]:
        failures = 0  # failed connections in a row
        retry_ms: int | None = None  # the server's SSE `retry:` (ms)
        try:
            while True:
                try:
                    self._connection = self.client._connect(self)
                    self.job_id = self.job_id or getattr(self._connection, "job_id", None)
                    for event in self._connection.events():
                        failures = 0
                        if self._accept(event):
                            yield event
                            if isinstance(event, TERMINAL):
                                return
                            if self._drop_requested:
                                self._drop_requested = False
                                raise Dropped("dropped on request", deliberate=True)
                    raise Dropped("the stream ended before the job's final event")
                except Dropped as exc:
                    if self._connection is not None:
                        retry_ms = self._connection.retry_ms or retry_ms
                    self._close_connection(abort=True)
                    failures = self._before_retry(exc, failures, retry_ms)
        finally:
            self._close_connection()

    def _before_retry(self, exc: Dropped, failures: int, retry_ms: int | None) -> int:
        """Back off before reconnecting after `exc`, or raise `StreamInterrupted`; returns
        the new count of failures in a row."""
        if self.job_id is None and not exc.request_not_sent:
            # The request may have started a job we cannot name: sending it again could
            # start a second one.
            raise StreamInterrupted(
                f"connection lost before the server named the job: {exc}",
                job_id="",
                last_seq=self.last_seq,
            ) from exc
        if not exc.deliberate:
            policy = self.client.retry
            if failures >= policy.max_retries:
                raise StreamInterrupted(
                    f"gave up after {_attempts(failures + 1)} in a row: {exc}",
                    job_id=self.job_id or "",
                    last_seq=self.last_seq,
                ) from exc
            time.sleep(policy.delay_s(failures, retry_ms))
            failures += 1
        if self.job_id is not None:
            self.reconnects += 1
        return failures

    def _accept(self, event: StreamEvent) -> bool:
        """Track `seq` and the job id; False for an event already received. Raises `Dropped`
        for a slow-consumer cut-off and `JobFailed` for the job's `error` event."""
        if isinstance(event, ErrorEvent) and event.resume_from is not None:
            raise Dropped(f"the server cut this subscriber off: {event.message}")
        if event.job_id:
            if self.job_id is None:
                self.job_id = event.job_id
            elif event.job_id != self.job_id:
                raise ProtocolError(f"got an event of job {event.job_id} on job {self.job_id}")
        if event.seq is not None:  # only a transport's own error may come without one
            if event.seq <= self.last_seq:
                # A server may send the `start` event (the init segment) ahead of a resumed
                # log: pass it on once.
                first_start = isinstance(event, StartEvent) and not self._start_seen
                self._start_seen = self._start_seen or first_start
                return first_start
            if event.seq != self.last_seq + 1:
                raise ProtocolError(
                    f"events {self.last_seq + 1}..{event.seq - 1} of job {self.job_id} are missing"
                )
            self.last_seq = event.seq
        self._start_seen = self._start_seen or isinstance(event, StartEvent)
        if isinstance(event, ErrorEvent):
            raise JobFailed(event.code, event.message, event.param, job_id=self.job_id or "")
        return True

    def _close_connection(self, *, abort: bool = False) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close(abort=abort)


def _tcp_keepalive() -> list[tuple[int, int, int]]:
    """Socket options that make the kernel probe an idle connection, so a peer that vanished
    without closing is found (Linux: after about 30 + 3 x 10 s)."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def _check_transport(transport: str) -> None:
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")


def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :] + "/ws"
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :] + "/ws"
    raise ValueError(f"server URL must start with http:// or https://, got {base_url!r}")


def _attempts(count: int) -> str:
    return f"{count} failed attempt" + ("" if count == 1 else "s")
