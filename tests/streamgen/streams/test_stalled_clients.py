"""Clients that stop reading: a write that cannot go out within `write_timeout_seconds` cuts
the connection, and the request-scoped job it held is cancelled as for any disconnect,
where before it generated on for as long as the socket stayed open."""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import httpx

from streamgen.observability import REGISTRY
from tests.server import ServerThread

WRITE_TIMEOUT_S = 1.0
GRACE_S = 0.5
UNBOUNDED = {"prompt": "a red ball drifting left", "size": "64x64", "unbounded": True,
             "num_steps": 1}  # fmt: skip


SERVER_SETTINGS = {"write_timeout_seconds": WRITE_TIMEOUT_S, "resume_grace_seconds": GRACE_S}
SERVER_SEND_BUFFER_BYTES = 4096  # a stalled client backs up into the server within a few kB


def _stalled_request(server: ServerThread, method: str, path: str, body: bytes) -> socket.socket:
    """Send a request on a socket with a small receive window; read only the headers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _headers(sock: socket.socket) -> dict[str, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)  # one byte at a time: nothing of the body is read
    lines = data.decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if line)}


def _closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Read what the buffers hold; True when the server closed (EOF or reset) meanwhile."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False  # still open, nothing more coming
    except ConnectionError:
        return True
    return True


def _ended(server: ServerThread, job_id: str, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.1)  # polling a deadline, not synchronising
    raise AssertionError(f"job {job_id} still runs {timeout_s} s after its client stalled")


def test_a_stream_whose_client_stops_reading_is_cut_and_its_job_cancelled(
    server: ServerThread,
) -> None:
    cut_before = _stalled_cutoffs()
    sock = _stalled_request(server, "POST", "/generate-stream", json.dumps(UNBOUNDED).encode())
    try:
        job_id = _headers(sock)["x-job-id"]
        stalled_at = time.monotonic()
        job = _ended(server, job_id, timeout_s=30)
        assert job["status"] == "cancelled"
        assert job["error"]["message"] == "the last subscriber disconnected"  # type: ignore[index]
        # Cut within the write timeout plus the grace and the segments that filled the
        # buffers first (well under the 30 s this waited at most).
        assert time.monotonic() - stalled_at < 15
        assert _closed_by_server(sock, timeout_s=10)
        assert _stalled_cutoffs() == cut_before + 1  # counted in /metrics
    finally:
        sock.close()


def _stalled_cutoffs() -> float:
    return REGISTRY.get_sample_value("streamgen_stalled_client_cutoffs_total") or 0.0


def test_a_follower_that_stops_reading_lets_go_of_an_offline_job(server: ServerThread) -> None:
    """A `/v1/jobs` job runs without readers: cutting its stalled follower leaves it alone."""
    job = httpx.post(f"{server.url}/v1/jobs", json=UNBOUNDED).json()
    sock = _stalled_request(server, "GET", f"/v1/jobs/{job['id']}/events", b"")
    try:
        assert _headers(sock)["content-type"].startswith("text/event-stream")
        time.sleep(WRITE_TIMEOUT_S * 3)  # the stall itself: this client reads nothing
        assert _closed_by_server(sock, timeout_s=10)
        assert httpx.get(f"{server.url}/v1/jobs/{job['id']}").json()["status"] == "running"
    finally:
        sock.close()
        httpx.delete(f"{server.url}/v1/jobs/{job['id']}")


def _stalled_websocket(server: ServerThread, request: dict[str, object]) -> socket.socket:
    """A WebSocket (handshake by hand on a small receive window) that sends `request` as
    its one text frame and then reads nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    assert _headers(sock)  # 101 Switching Protocols
    payload = json.dumps(request).encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


def test_a_websocket_whose_client_stops_reading_is_cut_and_its_job_cancelled(
    server: ServerThread,
) -> None:
    store = server.app.extensions["streamgen"].runtime.store
    before = set(server.call(lambda: list(store.jobs)))
    cut_before = _stalled_cutoffs()
    sock = _stalled_websocket(server, UNBOUNDED)
    try:
        stalled_at = time.monotonic()
        deadline = stalled_at + 30
        while not (made := set(server.call(lambda: list(store.jobs))) - before):
            assert time.monotonic() < deadline, "the WebSocket made no job"
            time.sleep(0.05)  # polling a deadline, not synchronising
        job = _ended(server, made.pop(), timeout_s=30)
        assert job["status"] == "cancelled"
        assert time.monotonic() - stalled_at < 15
        assert _closed_by_server(sock, timeout_s=10)
        assert _stalled_cutoffs() == cut_before + 1
    finally:
        sock.close()
