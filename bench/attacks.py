"""Replay the hardening issue's attacks against a real `streamgen serve` and print what each
gets now: status, error code, and the server's peak memory growth while it was handled.

    python bench/attacks.py            # ~1 min on a 2-core CPU

The server runs as a subprocess (its peak RSS read from /proc and reset before each
attack) in open mode first, then with one API key made by `streamgen keys create`.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.server_process import REPO, free_port, start_server
from tests.segment_pipeline.test_media import png_claiming
from tests.streamgen.test_hostile_inputs import flat_video


class Probe:
    def __init__(self, server: subprocess.Popen[bytes], url: str) -> None:
        self.server, self.url = server, url
        self.http = httpx.Client(base_url=url, timeout=120)
        self.rows: list[tuple[str, str, str]] = []

    def _status_line(self, key: str) -> int:
        for line in Path(f"/proc/{self.server.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) // 1024
        return 0

    def attack(self, name: str, call: Callable[[], httpx.Response | str]) -> None:
        before = self._status_line("VmRSS:")
        Path(f"/proc/{self.server.pid}/clear_refs").write_text("5")
        started = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - started
        grew = self._status_line("VmHWM:") - before
        if isinstance(result, httpx.Response):
            try:
                error = result.json().get("error") or {}
            except ValueError:
                error = {}
            code = error.get("code") or ""
            param = f" ({error['param']})" if error.get("param") else ""
            what = f"{result.status_code} {code}{param}".strip()
        else:
            what = result
        self.rows.append((name, what, f"{max(grew, 0)} MiB, {seconds:.2f} s"))
        print(f"{name:60s} {what:45s} +{max(grew, 0)} MiB peak, {seconds:.2f} s", flush=True)

    def jobs(self) -> int:
        return len(httpx.get(f"{self.url}/health").json().get("jobs", {}) or {})


def stalled_reader(port: int, body: dict) -> str:
    """A request-scoped stream whose client reads only the headers: how long until the
    server cuts it and cancels its job."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    sock.sendall(
        f"POST /generate-stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    job_id = next(line.split(":", 1)[1].strip() for line in head.decode().split("\r\n")
                  if line.lower().startswith("x-job-id"))  # fmt: skip
    started = time.monotonic()
    while time.monotonic() - started < 120:
        state = httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job_id}").json()
        if state["status"] not in ("queued", "running"):
            sock.close()
            return f"{state['status']} after {time.monotonic() - started:.1f} s"
        time.sleep(0.2)  # polling a deadline
    sock.close()
    return "still running after 120 s"


def main() -> None:
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="streamgen-attacks-"))
    settings = {"write_timeout_seconds": "5", "resume_grace_seconds": "2",
                "data_dir": str(data_dir)}  # fmt: skip
    server = start_server(port, settings)
    url = f"http://127.0.0.1:{port}"
    probe = Probe(server, url)
    post = probe.http.post
    try:
        probe.attack(
            "seed 2^64 (x70, more than the queue holds)",
            lambda: [post("/v1/jobs", json={"prompt": "a ball", "seed": 2**64}) for _ in range(70)][
                -1
            ],
        )
        probe.attack(
            "a valid request after those",
            lambda: post("/v1/jobs", json={"prompt": "a ball", "seconds": 1}),
        )
        probe.attack(
            "priority 100 (open mode)",
            lambda: post("/v1/jobs", json={"prompt": "a ball", "priority": 100, "seconds": 1}),
        )
        probe.attack(
            "1280x1280, 100000 frames, 200 steps",
            lambda: post(
                "/v1/jobs",
                json={
                    "prompt": "a ball",
                    "width": 1280,
                    "height": 1280,
                    "num_frames": 100_000,
                    "num_inference_steps": 200,
                },
            ),
        )
        for side in (12_000, 20_000):
            image = base64.b64encode(png_claiming(side, side)).decode()
            probe.attack(
                f"reference_image: {len(image) * 3 // 4} B PNG claiming {side}x{side}",
                lambda image=image: post(
                    "/v1/jobs", json={"prompt": "a ball", "reference_image": image}
                ),
            )
        video = flat_video(1280, 1280, 400)
        probe.attack(
            f"extend_video: {len(video) * 3 // 4 // 1024} kB MP4, 1280x1280, 400 frames",
            lambda: post("/v1/jobs", json={"prompt": "a ball", "extend_video": video}),
        )
        nested = "[" * 100_000 + "]" * 100_000
        probe.attack(
            "JSON nested 100,000 deep",
            lambda: post("/v1/jobs", content=nested, headers={"Content-Type": "application/json"}),
        )
        probe.attack(
            "guidance_scale NaN",
            lambda: post(
                "/v1/jobs",
                content=b'{"prompt": "a ball", "guidance_scale": NaN}',
                headers={"Content-Type": "application/json"},
            ),
        )
        done = post("/v1/jobs", json={"prompt": "a ball", "seconds": 1}).json()["id"]
        with probe.http.stream("GET", f"/v1/jobs/{done}/events") as events:
            for _ in events.iter_bytes():
                pass
        for path in (f"/v1/jobs/{done}/video.mp4", f"/v1/videos/{done}/content"):
            probe.attack(
                f"Range: bytes=-100 on {path.split('/')[-1]}",
                lambda path=path: probe.http.get(path, headers={"Range": "bytes=-100"}),
            )
        probe.attack(
            "from_seq 2^63",
            lambda: probe.http.get(f"/v1/jobs/{done}/events", params={"from_seq": 2**63}),
        )
        probe.attack(
            "Last-Event-ID 2^63",
            lambda: probe.http.get(
                f"/v1/jobs/{done}/events", headers={"Last-Event-ID": str(2**63)}
            ),
        )
        running = post(
            "/v1/jobs", json={"prompt": "a ball", "unbounded": True, "size": "64x64"}
        ).json()["id"]
        probe.attack(
            "from_seq past the end of a running job",
            lambda: probe.http.get(f"/v1/jobs/{running}/events", params={"from_seq": 10_000}),
        )
        probe.http.delete(f"/v1/jobs/{running}")
        probe.attack(
            "cross-site text/plain POST",
            lambda: post(
                "/v1/jobs",
                content=b'{"prompt": "a ball"}',
                headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
            ),
        )
        probe.attack(
            "cross-site form POST (Origin elsewhere)",
            lambda: post(
                "/v1/jobs", data={"prompt": "a ball"}, headers={"Origin": "https://evil.example"}
            ),
        )
        probe.attack(
            "/ws handshake from another Origin",
            # on a connection of its own: one whose upgrade was refused is not for reuse
            lambda: httpx.get(
                f"{url}/ws",
                headers={
                    "Origin": "https://evil.example",
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            ),
        )
        probe.attack("/v1/models (no filesystem path?)", lambda: probe.http.get("/v1/models"))
        probe.attack(
            "a stream whose client reads only the headers (write timeout 5 s)",
            lambda: stalled_reader(port, {"prompt": "a ball", "unbounded": True, "size": "64x64"}),
        )
        subprocess.run([sys.executable, "-m", "streamgen", "keys", "--data-dir", str(data_dir),
                        "create", "--name", "probe"], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        probe.attack("with a key made: a request without one", lambda: probe.http.get("/v1/videos"))
        probe.attack(
            "with a key made: a wrong key",
            lambda: probe.http.get("/v1/videos", headers={"Authorization": "Bearer sgk_guess"}),
        )
    finally:
        server.terminate()
        server.wait(30)
    print()
    print("| attack | now | server peak growth, time |")
    print("| --- | --- | --- |")
    for name, what, cost in probe.rows:
        print(f"| {name} | {what} | {cost} |")


if __name__ == "__main__":
    main()
