"""Running the app under Hypercorn: HTTP/1.1, h2c (upgrade or prior knowledge), WebSocket,
and HTTP/2 over TLS when a certificate is given.

`serve(app, settings, stop)` runs until `stop` is set, then drains the app (running jobs
finish or get an `error` event while their streams are still open) before Hypercorn closes
the connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from quart import Quart

from .app import drain
from .config import Settings


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
    return config


async def serve(
    app: Quart, settings: Settings, stop: asyncio.Event, sock: socket.socket | None = None
) -> None:
    """Serve `app` until `stop` is set, then shut down gracefully."""

    async def shutdown_trigger() -> None:
        await stop.wait()
        await drain(app)

    await hypercorn_serve(app, hypercorn_config(settings, sock), shutdown_trigger=shutdown_trigger)
