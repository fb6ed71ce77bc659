"""A private redis-server for tests: its own free port, nothing saved to disk, and it can be
killed and restarted empty on the same port.

Tests that need Redis FAIL (not skip) when `redis-server` is not on PATH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_path() -> str:
    """The `redis-server` executable; fails the test loudly when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(
            "redis-server is not on PATH: the Redis broker tests need a real Redis "
            "(e.g. `apt-get install redis-server`)",
            pytrace=False,
        )
    return path


class RedisServer:
    """One redis-server process on 127.0.0.1:`port` (no RDB, no AOF)."""

    def __init__(self) -> None:
        self.executable = redis_server_path()
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="streamgen-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    def start(self) -> None:
        """Start the server and wait (polling, with a deadline) until it answers PING."""
        self._process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.client() as probe:
            while True:
                if self._process.poll() is not None:
                    stderr = self._process.stderr.read() if self._process.stderr else b""
                    raise RuntimeError(f"redis-server exited: {stderr.decode(errors='replace')}")
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
                time.sleep(0.02)  # polling the new process with a deadline

    def kill(self) -> None:
        """SIGKILL: connections drop at once and every key is gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None

    def restart_empty(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
