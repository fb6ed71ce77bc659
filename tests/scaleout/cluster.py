"""A scale-out cluster of real processes for tests and the fan-out benchmark.

`streamgen serve` replicas and `streamgen worker` processes (``python -m streamgen``), each
on its own free port, all on one private `redis-server` (tests/redis_server.py). Settings go
through ``STREAMGEN_*`` variables, as in a deployment. Every process writes its log to a
file, printed when a test fails; every process is killed on exit.

    with Cluster() as cluster:
        a = cluster.serve("a")
        b = cluster.serve("b")
        w = cluster.worker("w")
        cluster.wait_ready()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis

from tests.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0  # a process imports torch and loads the model: slow on a busy machine

# Small timings so faults show within seconds: heartbeat every 0.25 s, dead after 2 s.
FAST = {
    "STREAMGEN_WORKER_HEARTBEAT_SECONDS": "0.25",
    "STREAMGEN_WORKER_DEAD_AFTER_SECONDS": "2",
    "STREAMGEN_GRACEFUL_TIMEOUT_SECONDS": "5",
    "STREAMGEN_TORCH_THREADS": "1",
    "STREAMGEN_ENCODER_PRESET": "ultrafast",
}


class Process:
    """One ``python -m streamgen`` child process and its log file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path):
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.ended = False  # stopped or killed on purpose
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "streamgen", *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last words (a crash)."""
        self.ended = True
        if self.alive:
            self.popen.kill()
        self.popen.wait(30)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        self.ended = True
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(30)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Replica(Process):
    """`streamgen serve` on 127.0.0.1:<free port>."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], env,
                         log_dir)  # fmt: skip

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False


class Cluster:
    """A private Redis plus the replicas and workers a test starts (see module docstring)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.redis = RedisServer()
        self.redis.start()
        self.env = {**FAST, "STREAMGEN_BROKER": self.redis.url, **(env or {})}
        self._dir = tempfile.TemporaryDirectory(prefix="streamgen-cluster-")
        self.log_dir = Path(self._dir.name)
        self.processes: list[Process] = []  # replicas and workers

    def serve(
        self, name: str, *, embedded_worker: bool = False, env: Mapping[str, str] | None = None
    ) -> Replica:
        """Start a replica (API-only unless `embedded_worker`); `wait_ready` for it."""
        extra = {"STREAMGEN_EMBEDDED_WORKER": "true" if embedded_worker else "false"}
        replica = Replica(name, {**self.env, **extra, **(env or {})}, self.log_dir, free_port())
        self.processes.append(replica)
        return replica

    def worker(self, name: str, *, env: Mapping[str, str] | None = None, concurrency: int = 1
               ) -> Process:  # fmt: skip
        """Start a `streamgen worker` named `name`; `wait_ready` for it."""
        args = ["worker", "--worker-id", name, "--concurrency", str(concurrency)]
        process = Process(name, args, {**self.env, **(env or {})}, self.log_dir)
        self.processes.append(process)
        return process

    def client(self) -> redis.Redis:
        return self.redis.client()

    def workers_registered(self) -> set[str]:
        with self.client() as client:
            now_ms = time.time() * 1000
            members = client.zrangebyscore("streamgen:jobs:workers", now_ms, "+inf")
        return {m.decode() for m in members}

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll (with a deadline) until every live replica answers /health with 200 and
        every live worker has registered in Redis."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending: list[Process] = []
            registered = self.workers_registered()
            for process in self.processes:
                if process.ended:
                    continue
                if isinstance(process, Replica):
                    if not process.healthy():
                        pending.append(process)
                elif process.name not in registered:
                    pending.append(process)
            if not pending:
                return
            for process in pending:
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{process.name} exited:\n{process.log()[-4000:]}")
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in pending)
                raise TimeoutError(f"not ready within {timeout_s} s: {names}")
            time.sleep(0.1)  # polling a deadline, not synchronising

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} -----\n{p.log()[-6000:]}" for p in self.processes)

    def close(self) -> None:
        for process in self.processes:
            if process.alive:
                process.popen.kill()
        for process in self.processes:
            process.stop()
        self.redis.close()
        self._dir.cleanup()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            print(self.logs(), file=sys.stderr)
        self.close()


def small_job(**changes: Any) -> dict[str, Any]:
    """A request the embedded model runs in a few seconds here: 64x64, 2 steps."""
    body: dict[str, Any] = {
        "prompt": "a red ball moving left",
        "size": "64x64",
        "num_steps": 2,
        "seed": 7,
        "num_frames": 28,  # 3 segments: 12 + 8 + 8 frames
    }
    body.update(changes)
    return body
