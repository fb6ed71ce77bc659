"""Job records kept on disk for a single-process server with a data directory, so that a
restart (a crash or ``kill -9`` included) keeps finished jobs: their state, their place in
`/v1/videos` lists and their MP4 files, until their retention ends (`max_finished_jobs`,
`max_jobs_dir_bytes`, or a delete).

One small msgpack file per job, ``<data_dir>/records/<job id>.msgpack``, written whole and
renamed into place when the job is accepted and again when it ends (not fsynced: a killed
process loses nothing, a machine that loses power may lose the last records). A job the previous
process had not finished comes back failed (``server_restarted``) and without its partial
file: whatever that process was writing may be cut mid-fragment. The request's pictures
and sound are not kept (a restored job cannot be remixed with them), nor is its event
log: its events answer 410, its video is its file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import msgpack

from ..errors import GenerationFailed
from .codec import pack_error, pack_request, unpack_error, unpack_request
from .record import Job

log = logging.getLogger(__name__)

RESTARTED = "server_restarted"


class JobArchive:
    """The records directory of a data directory."""

    def __init__(self, directory: Path, videos_dir: Path) -> None:
        self.directory = directory
        self.videos_dir = videos_dir
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.msgpack"

    def save(self, job: Job) -> None:
        """Write `job`'s record (replacing the one before, never half-written)."""
        path = self._path(job.id)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(msgpack.packb(_record(job), use_bin_type=True))
            os.replace(temporary, path)
        except Exception as exc:  # a full disk must not fail the job itself
            temporary.unlink(missing_ok=True)
            log.error("job %s: cannot keep its record in %s: %s", job.id, self.directory, exc)

    def remove(self, job_id: str) -> None:
        self._path(job_id).unlink(missing_ok=True)

    def load(self) -> list[Job]:
        """Every kept job, oldest first; unfinished ones come back failed, and their
        partial files are removed."""
        for left in self.directory.glob(".*.tmp"):  # a write cut by a crash
            left.unlink(missing_ok=True)
        jobs: list[Job] = []
        for path in self.directory.glob("*.msgpack"):
            try:
                job = _job(msgpack.unpackb(path.read_bytes(), raw=False), self.videos_dir)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("skipping the unreadable job record %s: %s", path, exc)
                continue
            if not job.finished:
                _fail_restarted(job)
                self.save(job)
            job.done.set()
            jobs.append(job)
        jobs.sort(key=lambda job: job.created_at)
        if jobs:
            log.info("restored %d job record(s) from %s", len(jobs), self.directory)
        return jobs


def _fail_restarted(job: Job) -> None:
    job.status = "failed"
    job.error = GenerationFailed(
        "the server stopped before the job finished (it was restarted)", code=RESTARTED
    )
    job.finished_at = job.finished_at or job.started_at or job.created_at
    if job.video_path is not None:
        job.video_path.unlink(missing_ok=True)
    job.segments_done = job.frames_done = 0


def _record(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "request": pack_request(job.request, arrays=False),
        "model": job.model,
        "priority": job.priority,
        "request_scoped": job.request_scoped,
        "live": job.live,
        "remixed_from": job.remixed_from,
        "listed": job.listed,
        "key_id": job.key_id,
        "charged_seconds": job.charged_seconds,
        "charged_day": job.charged_day,
        "cap_seconds": job.cap_seconds,
        "created_at": job.created_at,
        "status": job.status,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "segments_done": job.segments_done,
        "frames_done": job.frames_done,
        "next_seq": job.next_seq,
        "error": pack_error(job.error),
        "realtime_factor": job.realtime_factor,
    }


def _job(record: dict[str, Any], videos_dir: Path) -> Job:
    job = Job(
        id=str(record["id"]),
        request=unpack_request(record["request"]),
        model=str(record["model"]),
        priority=int(record["priority"]),
        request_scoped=bool(record["request_scoped"]),
        live=bool(record["live"]),
        remixed_from=record["remixed_from"],
        listed=bool(record["listed"]),
        key_id=record["key_id"],
        charged_seconds=float(record["charged_seconds"]),
        charged_day=int(record.get("charged_day", 0)),
        cap_seconds=float(record["cap_seconds"]),
        video_path=videos_dir / f"{record['id']}.mp4",
        created_at=float(record["created_at"]),
        status=record["status"],
    )
    job.started_at, job.finished_at = record["started_at"], record["finished_at"]
    job.segments_done, job.frames_done = int(record["segments_done"]), int(record["frames_done"])
    job.next_seq = int(record["next_seq"])
    job.error = unpack_error(record["error"])
    job.realtime_factor = record["realtime_factor"]
    return job
