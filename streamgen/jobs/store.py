"""Where jobs live: their state, the queue, cancel delivery and subscriber leases.

`JobStore` is the seam between `JobManager` (accept, look up, cancel) / `Worker` (run) and
the place jobs are kept:

- `MemoryJobStore` (here): one process (the embedded default). Jobs are `Job` objects in a
  dict, the queue an `asyncio.PriorityQueue`.
- `RedisJobStore` (`redis_store`): every API replica and every `streamgen worker` on one
  Redis, so any replica answers for any job and workers anywhere run them.

The order of writes is the same in both: a job's state is final before its terminal event
is published ("whoever sees the event sees the final state"), and a job is settled (its
`done` set, in Redis: no longer anyone's to publish) after.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

from ..background import TaskSet
from ..broker.base import Broker
from ..config import Settings
from ..errors import JobNotFound
from ..events import Terminal
from .record import Job, cancel_error

log = logging.getLogger(__name__)

CancelOutcome = Literal["queued", "running", "finished"]
"""What `cancel` found: a queued job (now cancelled: publish its terminal event), a running
one (its worker was asked to stop), or a finished one (nothing done)."""


class JobStore(ABC):
    """Jobs' state, queue, cancel delivery and leases (see the module docstring)."""

    shared: bool = False
    """True when other processes see the same jobs (Redis)."""

    closed: bool = False

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Connect (called once before use)."""

    async def close(self) -> None:
        self.closed = True

    # The API side -------------------------------------------------------------------------
    @abstractmethod
    async def create(self, job: Job) -> None:
        """Record a new queued job (not yet takeable: `enqueue` after its `start` event)."""

    @abstractmethod
    async def discard(self, job: Job) -> None:
        """Forget a job whose `start` event could not be published."""

    @abstractmethod
    async def enqueue(self, job: Job) -> None:
        """Make the job takeable by workers (priority, then FIFO)."""

    @abstractmethod
    async def get(self, job_id: str) -> Job:
        """The job, its state refreshed; `JobNotFound` when unknown (or expired)."""

    @abstractmethod
    async def counts(self) -> tuple[int, int]:
        """(queued, running) jobs."""

    async def queued_here(self) -> list[Job]:
        """Jobs queued in this process (failed at shutdown); none for a shared store."""
        return []

    @abstractmethod
    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        """Cancel a queued job (its state becomes final) or ask a running one's worker to
        stop (it sets the job's `CancelEvent`, so generation stops within one step)."""

    @abstractmethod
    async def settle(self, job: Job) -> None:
        """The job's terminal event is published: mark it done."""

    def lease_held(self, job: Job) -> None:  # noqa: B027 (only shared stores count)
        """This process got its first subscriber of a request-scoped job."""

    def lease_dropped(self, job: Job, grace_s: float) -> None:  # noqa: B027
        """This process's last subscriber of a request-scoped job went (it may come back
        within `grace_s` seconds)."""

    async def held_elsewhere(self, job: Job) -> bool:
        """Whether a subscriber in another process still holds the job."""
        del job
        return False

    def remember_file(self, job_id: str, path: Path) -> None:  # noqa: B027
        """A video file made for `job_id` on this machine (deleted with the job's handle)."""

    # The worker side ----------------------------------------------------------------------
    @abstractmethod
    async def claim(self) -> Job | None:
        """Wait for the next queued job (highest priority, oldest first) and take it: it
        is now running here. None once `stop_claiming` was called."""

    @abstractmethod
    def stop_claiming(self) -> None:
        """Make waiting and later `claim` calls return None."""

    async def record(self, job: Job) -> bool:
        """Store what the event just published changed (progress, segments, last seq);
        False when the job is no longer this worker's (it was given to another one: stop
        running it)."""
        del job
        return True

    async def finish(self, job: Job, terminal: Terminal) -> bool:
        """Make the running job's final state (already set on `job`) the stored one, before
        its `terminal` event is published; False when it is no longer this worker's."""
        del job, terminal
        return True

    async def give_back(self, job: Job) -> None:
        """Put a job this worker took back in the queue, unfinished (shared stores)."""
        raise NotImplementedError(f"{type(self).__name__} has no other worker to give to")


class MemoryJobStore(JobStore):
    """Jobs of this process only: a dict, and a priority queue (FIFO within a priority).

    Finished jobs beyond `max_finished_jobs` are forgotten with their MP4 and backlog.
    """

    shared = False

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.jobs: dict[str, Job] = {}
        self._queue: asyncio.PriorityQueue[tuple[float, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._stopping = False
        self._tasks = TaskSet(log, "job store")

    async def create(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._forget_old()

    async def discard(self, job: Job) -> None:
        self.jobs.pop(job.id, None)

    async def enqueue(self, job: Job) -> None:
        self._queue.put_nowait((-job.priority, next(self._order), job.id))

    async def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def counts(self) -> tuple[int, int]:
        queued = sum(1 for job in self.jobs.values() if job.status == "queued")
        running = sum(1 for job in self.jobs.values() if job.status == "running")
        return queued, running

    async def queued_here(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.status == "queued"]

    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        if job.finished:
            return "finished"
        if job.status == "queued":
            job.status = "cancelled"
            job.error = cancel_error(code, message)
            job.finished_at = time.time()
            return "queued"
        job.cancel_code, job.cancel_message = code, message
        job.cancel.set()
        return "running"

    async def settle(self, job: Job) -> None:
        job.done.set()

    async def claim(self) -> Job | None:
        while not self._stopping:
            _, _, job_id = await self._queue.get()
            job = self.jobs.get(job_id)
            if job is None or job.status != "queued":
                continue  # cancelled while queued (or the stop marker)
            job.status, job.started_at = "running", time.time()
            job.attempt += 1
            return job
        return None

    def stop_claiming(self) -> None:
        self._stopping = True
        for _ in range(max(1, self.settings.max_concurrent_jobs)):
            self._queue.put_nowait((float("-inf"), -1, ""))  # wakes a waiting claim

    def _forget_old(self) -> None:
        finished = [job for job in self.jobs.values() if job.finished]
        for job in finished[: max(0, len(finished) - self.settings.max_finished_jobs)]:
            del self.jobs[job.id]
            if job.video_path is not None:
                job.video_path.unlink(missing_ok=True)
            self._tasks.spawn(self.broker.drop(job.id))
