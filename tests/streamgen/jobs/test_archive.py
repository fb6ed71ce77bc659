"""A single-process server with a data directory, killed with SIGKILL mid-job and started
again: finished videos come back whole (record, list, the same MP4 bytes), the job it was
running comes back failed without its partial file, deleting forgets the record, and files
no record owns are removed."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import httpx
import pytest

from tests.redis_server import free_port
from tests.scaleout.cluster import FAST, START_TIMEOUT_S, Replica

UNBOUNDED = {"prompt": "a red ball drifting left", "size": "64x64", "unbounded": True,
             "num_steps": 1}  # fmt: skip


@pytest.fixture
def logs() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="streamgen-data-dir-") as directory:
        yield Path(directory)


def start(data_dir: Path, logs: Path, name: str) -> Replica:
    env = {**FAST, "STREAMGEN_BROKER": "memory", "STREAMGEN_DATA_DIR": str(data_dir)}
    replica = Replica(name, env, logs, free_port())
    deadline = time.monotonic() + START_TIMEOUT_S
    while not replica.healthy():
        assert replica.alive, replica.log()
        assert time.monotonic() < deadline, replica.log()
        time.sleep(0.1)  # polling a deadline, not synchronising
    return replica


def wait_for(url: str, check: Callable[[dict], bool]) -> dict:
    """GET `url` until `check` holds for its JSON (within a deadline)."""
    deadline = time.monotonic() + 120
    while True:
        state = httpx.get(url).json()
        if check(state):
            return dict(state)
        assert time.monotonic() < deadline, state
        time.sleep(0.05)  # polling a deadline, not synchronising


def test_finished_videos_survive_a_kill_and_restart(tmp_path: Path, logs: Path) -> None:
    first = start(tmp_path, logs, "first")
    try:
        video = httpx.post(f"{first.url}/v1/videos", json={"prompt": "a blue square",
                                                           "seconds": "4"}).json()  # fmt: skip
        wait_for(f"{first.url}/v1/videos/{video['id']}", lambda s: s["status"] == "completed")
        before = httpx.get(f"{first.url}/v1/videos/{video['id']}/content").content
        running = httpx.post(f"{first.url}/v1/jobs", json=UNBOUNDED).json()
        wait_for(f"{first.url}/v1/jobs/{running['id']}", lambda s: s["segments_done"] >= 1)
        assert (tmp_path / "jobs" / f"{running['id']}.mp4").exists()
        orphan = tmp_path / "jobs" / "job_0123456789abcdef0123.mp4"
        orphan.write_bytes(b"no record owns this")
    finally:
        first.kill()  # SIGKILL mid-job

    second = start(tmp_path, logs, "second")
    try:
        kept = httpx.get(f"{second.url}/v1/videos/{video['id']}").json()
        assert (kept["status"], kept["seconds"]) == ("completed", "4")
        assert [v["id"] for v in httpx.get(f"{second.url}/v1/videos").json()["data"]] == [
            video["id"]
        ]
        after = httpx.get(f"{second.url}/v1/videos/{video['id']}/content").content
        assert after == before
        with av.open(io.BytesIO(after)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 32

        cut = httpx.get(f"{second.url}/v1/jobs/{running['id']}").json()
        assert cut["status"] == "failed" and cut["error"]["code"] == "server_restarted"
        assert not (tmp_path / "jobs" / f"{running['id']}.mp4").exists()
        assert httpx.get(f"{second.url}/v1/jobs/{running['id']}/video.mp4").status_code == 404
        assert not orphan.exists()
        # its events were not kept: a clear 410, the video is the file
        events = httpx.get(f"{second.url}/v1/jobs/{video['id']}/events")
        assert events.status_code == 410

        assert httpx.delete(f"{second.url}/v1/videos/{video['id']}").status_code == 200
        assert not (tmp_path / "records" / f"{video['id']}.msgpack").exists()
        assert not (tmp_path / "jobs" / f"{video['id']}.mp4").exists()
        # the server runs jobs as before
        again = httpx.post(f"{second.url}/v1/videos", json={"prompt": "a red ball",
                                                            "seconds": "1"}).json()  # fmt: skip
        wait_for(f"{second.url}/v1/videos/{again['id']}", lambda s: s["status"] == "completed")
    finally:
        second.stop()
