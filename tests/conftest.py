"""Shared fixtures: one real streamgen server per test session (see tests/server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server import ServerThread


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    """The session's server (embedded model, memory broker, default settings)."""
    thread = ServerThread().start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def server_url(server: ServerThread) -> str:
    """Base URL of the session's server, e.g. ``http://127.0.0.1:40123``."""
    return server.url
