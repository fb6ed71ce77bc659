"""A real streamgen server for tests: the app on Hypercorn, on a free port, in a thread.

    from tests.server import running_server

    with running_server({"subscriber_buffer_events": 8}) as base_url:
        httpx.get(f"{base_url}/health")

The embedded model is loaded once per test process (`shared_generator`) and shared by every
server started here. `ServerThread` gives access to the app and a graceful stop for tests
that need them. The `server_url` fixture (tests/conftest.py) is one server per session.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
from quart import Quart

from segment_pipeline import SegmentedGenerator, load_generator
from streamgen.app import create_app
from streamgen.config import Settings
from streamgen.http_server import bound_send_buffer, serve

START_TIMEOUT_S = 60.0


@functools.cache
def shared_generator() -> SegmentedGenerator:
    """The embedded model, loaded once per process."""
    return load_generator("embedded")


class ServerThread:
    """`create_app(settings)` served by Hypercorn on 127.0.0.1:<free port> in a thread."""

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        generator: SegmentedGenerator | None = None,
        send_buffer_bytes: int | None = None,
    ) -> None:
        """`send_buffer_bytes` sets SO_SNDBUF on the listening socket (accepted connections
        inherit it): small values make a stalled client back up into the server quickly."""
        self.settings = Settings().replace(**dict(overrides or {}))
        self.app: Quart = create_app(self.settings, generator or self._shared(self.settings))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if send_buffer_bytes is not None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
        else:
            bound_send_buffer(self._sock, self.settings)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1024)
        self.port: int = self._sock.getsockname()[1]
        self.tls = bool(self.settings.certfile and self.settings.keyfile)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"server-{self.port}", daemon=True)

    @staticmethod
    def _shared(settings: Settings) -> SegmentedGenerator:
        """The shared model under this server's request caps (a shallow copy: the weights
        are the same objects)."""
        generator = copy.copy(shared_generator())
        generator.limits = settings.limits
        return generator

    def start(self) -> ServerThread:
        """Start serving; returns once `/health` answers 200."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._error is not None:
                raise RuntimeError("the test server failed to start") from self._error
            try:
                health = httpx.get(f"{self.url}/health", timeout=5.0, verify=not self.tls)
                if health.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test server did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.05)  # polling a deadline, not synchronising

    def stop(self, timeout_s: float = 60.0) -> None:
        """Shut down gracefully (running jobs finish or end with an error event)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the test server did not stop within {timeout_s} s")

    def call(self, function: Any, *args: Any) -> Any:
        """Run `function(*args)` on the server's loop and return its result (tests only)."""
        assert self._loop is not None

        async def run() -> Any:
            result = function(*args)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        await serve(self.app, self.settings, self._stop, self._sock)


@contextmanager
def running_server(
    overrides: Mapping[str, Any] | None = None, *, generator: SegmentedGenerator | None = None
) -> Iterator[str]:
    """A started server's base URL (``http://127.0.0.1:PORT``); stopped on exit."""
    server = ServerThread(overrides, generator=generator).start()
    try:
        yield server.url
    finally:
        server.stop()
