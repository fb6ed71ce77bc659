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
import bisect
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..background import TaskSet
from ..broker.base import Broker
from ..config import Settings
from ..errors import JobNotFound
from ..events import Terminal
from .archive import JobArchive
from .load import WorkerLoad
from .record import Job, cancel_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accept:
    """Which queued jobs a worker would take now: live streams, offline jobs, or both;
    of the `models` it serves (None: any model)."""

    live: bool = True
    offline: bool = True
    models: frozenset[str] | None = None

    def takes(self, job: Job) -> bool:
        if self.models is not None and job.spec.model not in self.models:
            return False
        return self.live if job.spec.live else self.offline


ANY = Accept()


@dataclass(frozen=True)
class JobPage:
    """One page of jobs, and whether more follow it."""

    jobs: list[Job]
    has_more: bool


SettledHook = Callable[[Job], Awaitable[None]]

CancelOutcome = Literal["queued", "running", "finished"]
"""What `cancel` found: a queued job (now cancelled: publish its terminal event), a running
one (its worker was asked to stop), or a finished one (nothing done)."""


class JobStore(ABC):
    """Jobs' state, queue, cancel delivery and leases (see the module docstring)."""

    shared: bool = False
    """True when other processes see the same jobs (Redis)."""

    closed: bool = False

    @property
    def settled_hooks(self) -> list[SettledHook]:
        """Called with each job once it is settled, in the order they were added."""
        hooks: list[SettledHook] = self.__dict__.setdefault("_settled_hooks", [])
        return hooks

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

    @abstractmethod
    async def page(self, after: str | None, limit: int, newest_first: bool) -> JobPage:
        """Up to `limit` listed jobs (`Job.listed`) in creation order (newest first or
        oldest first), after job `after` (None: from the start); `JobNotFound` when `after`
        is not a listed job."""

    @abstractmethod
    async def delete(self, job: Job) -> None:
        """Forget a finished job: its record and its file (the caller drops its events)."""

    async def queued_here(self) -> list[Job]:
        """Jobs queued in this process (failed at shutdown); none for a shared store."""
        return []

    @abstractmethod
    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        """Cancel a queued job (its state becomes final) or ask a running one's worker to
        stop (it sets the job's `CancelEvent`, so generation stops within one step)."""

    async def settle(self, job: Job) -> None:
        """The job's terminal event is published: mark it done, then run the
        `settled_hooks` (an API key's quota and job count are given back there)."""
        await self._settle(job)
        for hook in self.settled_hooks:
            try:
                await hook(job)
            except Exception:  # a hook's failure must not undo the settling
                log.exception("job %s: a settled hook failed", job.id)

    @abstractmethod
    async def _settle(self, job: Job) -> None:
        """Mark the job done in the store."""

    def lease_held(self, job: Job) -> None:  # noqa: B027 (only shared stores count)
        """This process got its first subscriber of a request-scoped job."""

    def lease_dropped(self, job: Job, grace_s: float) -> None:  # noqa: B027
        """This process's last subscriber of a request-scoped job went (it may come back
        within `grace_s` seconds)."""

    async def held_elsewhere(self, job: Job) -> bool:
        """Whether a subscriber in another process still holds the job."""
        del job
        return False

    def kept_files(self) -> set[Path]:
        """Job files this store's jobs own from before this process (a data directory)."""
        return set()

    def remember_file(self, job_id: str, path: Path) -> None:  # noqa: B027
        """A video file made for `job_id` on this machine (deleted with the job's handle)."""

    # The worker side ----------------------------------------------------------------------
    @abstractmethod
    async def claim(
        self,
        accept: Accept = ANY,
        timeout_s: float | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> Job | None:
        """Wait for the next queued job that `accept` takes (highest priority, oldest
        first) and take it: it is now running here. None after `timeout_s` seconds without
        one, when `interrupt` is set while it waits, and once `stop_claiming` was called."""

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

    @abstractmethod
    async def give_back(self, job: Job) -> bool:
        """Put a job this worker took back in the queue where it was, unfinished (its
        attempt not counted): at shutdown, or when it does not fit after all. False when it
        cannot go back (it is no longer this worker's, or a cancel was asked for)."""

    # Load reports ---------------------------------------------------------------------------
    @abstractmethod
    async def report_load(self, load: WorkerLoad) -> None:
        """Publish this worker's load (replacing its previous report)."""

    @abstractmethod
    async def loads(self) -> list[WorkerLoad]:
        """The current reports of every live worker."""


class MemoryJobStore(JobStore):
    """Jobs of this process only: a dict, and a queue in priority order (FIFO within one).

    Finished jobs beyond `max_finished_jobs` are forgotten with their MP4 and backlog.
    """

    shared = False

    def __init__(self, settings: Settings, broker: Broker) -> None:
        """With a `data_dir`, jobs are kept there (`archive`) and those of the process before
        come back (finished ones as they were)."""
        self.settings = settings
        self.broker = broker
        self.jobs: dict[str, Job] = {}
        self._queue: list[tuple[int, int, str]] = []  # (-priority, arrival, job id), sorted
        self._places: dict[str, tuple[int, int, str]] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()  # the queue grew (or claiming stopped)
        self._stopping = False
        self._loads: dict[str, WorkerLoad] = {}
        self._tasks = TaskSet(log, "job store")
        self.archive: JobArchive | None = None
        if settings.data_dir and settings.videos_dir:
            records = Path(settings.data_dir) / "records"
            self.archive = JobArchive(records, Path(settings.videos_dir))
            self.jobs = {job.id: job for job in self.archive.load()}
            self._forget_old()  # the retention settings may have changed meanwhile

    async def create(self, job: Job) -> None:
        self.jobs[job.id] = job
        if self.archive is not None:
            self.archive.save(job)
        self._forget_old()

    async def discard(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if self.archive is not None:
            self.archive.remove(job.id)

    def kept_files(self) -> set[Path]:
        return {job.video_path for job in self.jobs.values() if job.video_path is not None}

    async def enqueue(self, job: Job) -> None:
        place = self._places.setdefault(job.id, (-job.spec.priority, next(self._order), job.id))
        bisect.insort(self._queue, place)
        self._changed.set()

    async def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def counts(self) -> tuple[int, int]:
        queued = sum(1 for job in self.jobs.values() if job.state.status == "queued")
        running = sum(1 for job in self.jobs.values() if job.state.status == "running")
        return queued, running

    async def queued_here(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.state.status == "queued"]

    async def page(self, after: str | None, limit: int, newest_first: bool) -> JobPage:
        ids = [job_id for job_id, job in self.jobs.items() if job.spec.listed]  # creation order
        if newest_first:
            ids.reverse()
        start = 0
        if after is not None:
            if after not in ids:
                raise JobNotFound(after)
            start = ids.index(after) + 1
        chosen = ids[start : start + limit]
        return JobPage([self.jobs[i] for i in chosen], start + limit < len(ids))

    async def delete(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        self._places.pop(job.id, None)
        if self.archive is not None:
            self.archive.remove(job.id)
        if job.video_path is not None:
            job.video_path.unlink(missing_ok=True)

    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        if job.state.finished:
            return "finished"
        if job.state.status == "queued":
            job.state.status = "cancelled"
            job.state.error = cancel_error(code, message)
            job.state.finished_at = time.time()
            return "queued"
        job.cancel_code, job.cancel_message = code, message
        job.cancel.set()
        return "running"

    async def _settle(self, job: Job) -> None:
        if self.archive is not None:
            self.archive.save(job)
        job.done.set()

    async def claim(
        self,
        accept: Accept = ANY,
        timeout_s: float | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> Job | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while not self._stopping:
            job = self._take(accept)
            if job is not None:
                return job
            self._changed.clear()
            wait_s = None if deadline is None else deadline - loop.time()
            if (wait_s is not None and wait_s <= 0) or (interrupt and interrupt.is_set()):
                return None
            await wait_any([self._changed, *([interrupt] if interrupt else [])], wait_s)
        return None

    def _take(self, accept: Accept) -> Job | None:
        for place in list(self._queue):
            job = self.jobs.get(place[2])
            if job is None or job.state.status != "queued":
                self._queue.remove(place)  # cancelled (or forgotten) while queued
                continue
            if accept.takes(job):
                self._queue.remove(place)
                job.state.status, job.state.started_at = "running", time.time()
                job.state.attempt += 1
                return job
        return None

    def stop_claiming(self) -> None:
        self._stopping = True
        self._changed.set()  # wakes every waiting claim

    async def give_back(self, job: Job) -> bool:
        if job.state.status != "running" or job.cancel.is_set():
            return False
        job.state.status, job.state.started_at = "queued", None
        job.state.attempt -= 1
        await self.enqueue(job)
        return True

    async def report_load(self, load: WorkerLoad) -> None:
        self._loads[load.worker] = load

    async def loads(self) -> list[WorkerLoad]:
        return list(self._loads.values())

    def _forget_old(self) -> None:
        """Forget the oldest finished jobs beyond `max_finished_jobs`, and beyond
        `max_jobs_dir_bytes` of video files."""
        finished = [job for job in self.jobs.values() if job.state.finished]
        excess = max(0, len(finished) - self.settings.max_finished_jobs)
        cap = self.settings.max_jobs_dir_bytes
        if cap > 0:
            dropped = {job.id for job in finished[:excess]}
            kept = (job for job in self.jobs.values() if job.id not in dropped)
            over = sum(_size(job.video_path) for job in kept) - cap
            for job in finished[excess:]:
                if over <= 0:
                    break
                over -= _size(job.video_path)
                excess += 1
        for job in finished[:excess]:
            del self.jobs[job.id]
            self._places.pop(job.id, None)
            if self.archive is not None:
                self.archive.remove(job.id)
            if job.video_path is not None:
                job.video_path.unlink(missing_ok=True)
            self._tasks.spawn(self.broker.drop(job.id))


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


async def wait_any(events: list[asyncio.Event], timeout_s: float | None) -> None:
    """Until one of `events` is set, or `timeout_s` seconds (None: no limit)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
