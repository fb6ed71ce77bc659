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
def server() -> Iterator[ServerThread]:
    """The session's server (embedded model, memory broker, default settings)."""
    thread = ServerThread().start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def server_url(server: ServerThread) -> str:
    """Base URL of the session's server, e.g. ``http://127.0.0.1:40123``."""
    return server.url
