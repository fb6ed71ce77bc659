"""Limits on what jobs may hold: wall time (`max_job_seconds`), the disk their files take
(`max_jobs_dir_bytes`), and files a killed process left in `jobs_dir`."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server import running_server
from tests.streamgen.stream_reading import SMALL

UNBOUNDED = {"prompt": "a red ball drifting left", "size": "64x64", "unbounded": True,
             "num_steps": 1}  # fmt: skip


def _events_until_end(url: str, job_id: str) -> bytes:
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=60) as events:
        return b"".join(events.iter_bytes())


def test_a_job_over_its_deadline_fails() -> None:
    with running_server({"max_job_seconds": 1.0}) as url:
        job = httpx.post(f"{url}/v1/jobs", json=UNBOUNDED).json()
        body = _events_until_end(url, job["id"])  # ends: an unbounded job would run an hour
        assert b'"code":"deadline_exceeded"' in body.replace(b" ", b"")
        state = httpx.get(f"{url}/v1/jobs/{job['id']}").json()
        assert state["status"] == "failed" and state["error"]["code"] == "deadline_exceeded"
        assert state["segments_done"] >= 1  # what it made before stays playable
        assert httpx.get(f"{url}/v1/jobs/{job['id']}/video.mp4").status_code == 200


def test_finished_files_beyond_the_disk_cap_are_forgotten(tmp_path: Path) -> None:
    with running_server({"jobs_dir": str(tmp_path), "max_jobs_dir_bytes": 1}) as url:
        first = httpx.post(f"{url}/v1/jobs", json=SMALL).json()
        _events_until_end(url, first["id"])
        assert (tmp_path / f"{first['id']}.mp4").stat().st_size > 1
        second = httpx.post(f"{url}/v1/jobs", json=SMALL).json()  # over the cap: first goes
        assert httpx.get(f"{url}/v1/jobs/{first['id']}").status_code == 404
        assert not (tmp_path / f"{first['id']}.mp4").exists()
        _events_until_end(url, second["id"])
        assert httpx.get(f"{url}/v1/jobs/{second['id']}/video.mp4").status_code == 200


def test_a_restarted_server_removes_files_a_killed_one_left(tmp_path: Path) -> None:
    orphan = tmp_path / "job_0123456789abcdef0123.mp4"
    partial = tmp_path / "job_0123456789abcdef0123.1a2b3c4d.part"
    mine = tmp_path / "notes.txt"  # not a job file: left alone
    for path in (orphan, partial, mine):
        path.write_bytes(b"x")
    with running_server({"jobs_dir": str(tmp_path)}) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert not orphan.exists() and not partial.exists()
        assert mine.exists()
