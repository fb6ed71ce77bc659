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
from .codec import record_fields, spec_from_fields, state_from_fields
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
            temporary.write_bytes(
                msgpack.packb(record_fields(job, inputs=False), use_bin_type=True)
            )
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
            if not job.state.finished:
                _fail_restarted(job)
                self.save(job)
            job.done.set()
            jobs.append(job)
        jobs.sort(key=lambda job: job.spec.created_at)
        if jobs:
            log.info("restored %d job record(s) from %s", len(jobs), self.directory)
        return jobs


def _fail_restarted(job: Job) -> None:
    state = job.state
    state.status = "failed"
    state.error = GenerationFailed(
        "the server stopped before the job finished (it was restarted)", code=RESTARTED
    )
    state.finished_at = state.finished_at or state.started_at or job.spec.created_at
    if job.video_path is not None:
        job.video_path.unlink(missing_ok=True)
    state.segments_done = state.frames_done = 0


def _job(record: dict[str, Any], videos_dir: Path) -> Job:
    if "next_seq" in record:  # written before the one codec: the seq to come, not the last
        record.setdefault("last_seq", record.pop("next_seq") - 1)
    spec = spec_from_fields(record)
    return Job(spec, state_from_fields(record), video_path=videos_dir / f"{spec.id}.mp4")
