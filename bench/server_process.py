"""`streamgen serve` as a subprocess for the benchmarks: started on a free port with some
settings, waited for until `/health` answers 200."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    port: int, settings: Mapping[str, str] | None = None, *, tree: Path = REPO
) -> subprocess.Popen[bytes]:
    """`streamgen serve` from the source tree `tree` on `port`, with `settings` (name ->
    value, as STREAMGEN_* variables); returns once it is healthy (at most 120 s)."""
    # The tree's own client distribution too: the server imports its wire format from it.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tree), str(tree / "clients")))}
    env.update({f"STREAMGEN_{name.upper()}": value for name, value in (settings or {}).items()})
    command = [sys.executable, "-m", "streamgen", "serve", "--port", str(port),
               "--log-level", "WARNING"]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=tree)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited during startup")
        time.sleep(0.2)  # waiting for the model to load
    server.terminate()
    raise SystemExit("the server did not come up within 120 s")
