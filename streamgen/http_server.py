"""Running the app under Hypercorn: HTTP/1.1, h2c (upgrade or prior knowledge), WebSocket,
and HTTP/2 over TLS when a certificate is given.

`serve(app, settings, stop)` runs until `stop` is set, then drains the app (running jobs
finish or get an `error` event while their streams are still open) before Hypercorn closes
the connections.

Every write to a client has `write_timeout_seconds` to go out (`WriteTimeout`): a client
that stops reading fills its socket's buffers, the write waits, and when the time is up the
connection is cut. Its stream then lets go of its job like any closed stream (a
request-scoped job with no other reader is cancelled).

Around both, `RequestLog` (`streamgen.observability`) names each request, logs it and
counts it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart import Quart
from werkzeug.exceptions import HTTPException

from .app import drain
from .config import Settings
from .observability import STALLED_CLIENTS, RequestLog

log = logging.getLogger(__name__)
_TIMED = frozenset({"http.response.body", "websocket.send", "websocket.close"})


class ClientStalled(Exception):
    """A client read nothing for `write_timeout_seconds` while a write waited for it."""


class _StalledIsNoError(logging.Filter):
    """A cut-off stalled client is logged once, by `WriteTimeout`: not again by Hypercorn
    as an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ClientStalled))


class WriteTimeout:
    """ASGI middleware: a response body or WebSocket message that cannot be written within
    `timeout_s` (the client stopped reading) ends the app's handling of that connection
    with `ClientStalled`, and the server closes it."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)

        async def timed_send(message: ASGISendEvent) -> None:
            if message["type"] not in _TIMED:
                return await send(message)
            try:
                await asyncio.wait_for(send(message), self.timeout_s)
            except TimeoutError:
                client = scope.get("client")
                log.info("cut off %s %s: it read nothing for %g s",
                         client, scope.get("path"), self.timeout_s)  # fmt: skip
                STALLED_CLIENTS.inc()
                raise ClientStalled(f"no write for {self.timeout_s} s") from None

        await self.app(scope, receive, timed_send)


def hypercorn_config(settings: Settings, sock: socket.socket | None = None) -> Config:
    """Hypercorn settings for `settings`; `sock` (bound, listening) replaces host/port and
    is handed over to Hypercorn."""
    config = Config()
    if sock is not None:
        config.bind = [f"fd://{sock.detach()}"]
    else:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        config.bind = [f"{host}:{settings.port}"]
    if settings.certfile and settings.keyfile:
        config.certfile = settings.certfile
        config.keyfile = settings.keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
    config.graceful_timeout = settings.graceful_timeout_seconds
    config.websocket_max_message_size = settings.max_body_bytes
    config.h11_max_incomplete_size = 64 * 1024
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our logging config, once
    if not any(isinstance(f, _StalledIsNoError) for f in config.errorlog.filters):
        config.errorlog.addFilter(_StalledIsNoError())
    return config


def route_namer(app: Quart) -> Callable[[str, str], str]:
    """`route_of(method, path)`: the route's template (``/v1/jobs/<job_id>``), a bounded
    label for metrics; "unmatched" for paths no route takes."""
    adapter = app.url_map.bind("streamgen")

    def route_of(method: str, path: str) -> str:
        try:
            if method == "WS":
                rule, _ = adapter.match(path, return_rule=True, websocket=True)
            else:
                rule, _ = adapter.match(path, method=method, return_rule=True)
        except HTTPException:
            return "unmatched"
        return str(rule.rule)

    return route_of


async def serve(
    app: Quart, settings: Settings, stop: asyncio.Event, sock: socket.socket | None = None
) -> None:
    """Serve `app` until `stop` is set, then shut down gracefully."""

    async def shutdown_trigger() -> None:
        await stop.wait()
        await drain(app)

    if sock is None:
        sock = listening_socket(settings)
    timed = RequestLog(WriteTimeout(app, settings.write_timeout_seconds), route_namer(app))
    await hypercorn_serve(
        timed, hypercorn_config(settings, sock), shutdown_trigger=shutdown_trigger
    )


def listening_socket(settings: Settings) -> socket.socket:
    """A socket listening on `settings`' host (a name, an address, or ``[v6 address]``) and
    port whose connections hold at most `send_buffer_bytes` unsent."""
    host = settings.host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(
        host, settings.port, type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bound_send_buffer(sock, settings)
    sock.bind(address)
    sock.listen(1024)
    return sock


def bound_send_buffer(sock: socket.socket, settings: Settings) -> None:
    """Connections accepted on `sock` keep at most `send_buffer_bytes` unsent, so a write
    to a client that stops reading blocks soon and `write_timeout_seconds` can cut it off
    (the kernel would queue megabytes first). `TCP_NOTSENT_LOWAT` bounds only the bytes
    not yet sent, so throughput is not capped (data in flight is the congestion window's);
    where it is missing, the whole send buffer is bounded instead."""
    if settings.send_buffer_bytes <= 0:
        return
    lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if lowat is not None:
        sock.setsockopt(socket.IPPROTO_TCP, lowat, settings.send_buffer_bytes)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer_bytes)
