"""Shared fixtures: one real streamgen server per test session (see tests/server.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from tests.server import ServerThread

# Servers started by tests (and `streamgen keys` run by them) look for API keys under
# $XDG_DATA_HOME when no key file is set: never the developer's own keys.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="streamgen-tests-")


@pytest.fixture(scope="session")
def default_server() -> Iterator[ServerThread]:
    """The session's server (embedded model, memory broker, default settings), shared by
    every module that asks for nothing else."""
    thread = ServerThread().start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """The real server a test module talks to. A module that needs other settings says so
    with module-level ``SERVER_SETTINGS`` (a dict of `Settings` fields) and, to make a
    stalled client back up into the server within a few kB, ``SERVER_SEND_BUFFER_BYTES``;
    it then gets a server of its own, stopped after its last test. Otherwise: the session's."""
    overrides = getattr(request.module, "SERVER_SETTINGS", None)
    send_buffer = getattr(request.module, "SERVER_SEND_BUFFER_BYTES", None)
    if overrides is None and send_buffer is None:
        yield request.getfixturevalue("default_server")
        return
    thread = ServerThread(overrides, send_buffer_bytes=send_buffer).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def server_url(server: ServerThread) -> str:
    """Base URL of the module's server, e.g. ``http://127.0.0.1:40123``."""
    return server.url
