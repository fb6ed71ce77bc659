"""`JobManager`: the API side of jobs. It accepts a job (checks it, opens its pipeline job,
publishes its `start` event, queues it in the store), looks jobs up, cancels them, counts
the subscribers of request-scoped jobs and serves finished videos.

Request-scoped jobs (`/generate-stream`, `/generate`, a WebSocket request) hold leases, one
per subscriber; when the last lease goes the job is cancelled, within one denoising step.
With Redis, leases are counted across replicas. Jobs made with `/v1/jobs` run on without
subscribers. Jobs are run by a `Worker` (`worker`), in this process or another one; the
manager never sees it: both meet in the `JobStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from segment_pipeline import PipelineError, ResolvedRequest

from .. import tracing
from ..background import TaskSet
from ..broker.base import Broker, BrokerError
from ..config import Settings
from ..errors import (
    Conflict,
    JobNotFound,
    NotFound,
    QueueFull,
    ServiceUnavailable,
    from_pipeline_error,
    unavailable,
)
from ..events import ErrorPayload, QueuedPayload
from ..models import ModelSet
from ..observability import JOB_ID
from .load import WorkerLoad, estimated_start
from .log import assemble_video, log_tail, publish, publish_terminal, start_payload
from .record import Job, JobSpec, KeyCharge, new_job_id
from .store import JobPage, JobStore

log = logging.getLogger(__name__)

QUEUE_NOTICE_S = 0.5  # a job expected to wait at least this long gets a `queued` event
_JOB_FILE = re.compile(r"job_[0-9a-f]{20}(\.[0-9a-f]{8}\.part|\.mp4)")
DELETE_WAIT_S = 30.0  # a deleted job that is running gets this long to stop
OWNER_SCAN = 100  # jobs read a store page when one key's jobs are listed


@dataclass(frozen=True)
class Submission:
    """What a caller decides of a job besides its request (`JobManager.submit`)."""

    request_scoped: bool  # it runs only while a subscriber holds it (leases)
    priority: int = 0
    live: bool = False  # a viewer plays it as it comes (scheduled by deadline, admitted
    # only where it keeps real time)
    remixed_from: str | None = None
    listed: bool = False  # /v1/videos lists it
    job_id: str | None = None  # None: a fresh one
    charge: KeyCharge = field(default_factory=KeyCharge)
    model: str | None = None  # the model it runs on (an id `admit` let in); None: the default


class JobManager:
    """Accepts jobs, queues them (priority, then FIFO) in its store, looks them up and
    cancels them. Running them is a `Worker`'s, here or in another process."""

    def __init__(
        self, settings: Settings, models: ModelSet, broker: Broker, store: JobStore
    ) -> None:
        self.settings = settings
        self.models = models
        self.broker = broker
        self.accepting = False
        self._own_dir = settings.videos_dir is None
        self.videos_dir = Path(settings.videos_dir or tempfile.mkdtemp(prefix="streamgen-jobs-"))
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self.store = store
        if not self._own_dir and not store.shared:
            self._remove_orphans()
        self._tasks = TaskSet(log, "job manager", quiet=(Conflict,))

    def _remove_orphans(self) -> None:
        """Job files a process before this one left in `jobs_dir` (it was killed, say) that
        no job of this process's store (restored from a data directory) can reach."""
        kept = self.store.kept_files()
        orphans = [
            p for p in self.videos_dir.iterdir() if _JOB_FILE.fullmatch(p.name) and p not in kept
        ]
        for path in orphans:
            path.unlink(missing_ok=True)
        if orphans:
            log.info("removed %d orphaned job file(s) from %s", len(orphans), self.videos_dir)

    # Lifecycle (driven by `streamgen.runtime`) ---------------------------------------------
    async def stop_accepting(self) -> None:
        """Refuse new jobs (503 ``shutting_down``). Jobs queued in this process get an
        `error` event at once; jobs queued in Redis stay there for other workers."""
        self.accepting = False
        if not self.store.shared:
            for job in await self.store.queued_here():
                with contextlib.suppress(Conflict):
                    await self.cancel(job, "shutting_down", "the server is shutting down")

    async def finish_tasks(self, grace_s: float) -> None:
        """Wait up to `grace_s` seconds for background cancels, then drop a temporary
        videos directory."""
        await self._tasks.wait(grace_s)
        if self._own_dir:
            shutil.rmtree(self.videos_dir, ignore_errors=True)

    # Queries ------------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        """The job (its state as fresh as the store has it); `JobNotFound` (404) if unknown."""
        job = await self.store.get(job_id)
        JOB_ID.set(job.id)  # the rest of the request logs with it
        return job

    async def counts(self) -> tuple[int, int]:
        """(queued, running) jobs: this process's, or the whole cluster's with Redis."""
        with unavailable("job store"):
            return await self.store.counts()

    async def video_file(self, job: Job) -> Path:
        """The finished job's MP4 on this machine (init + every fragment).

        With a shared store the file is rebuilt from the job's backlog on first use and
        kept in `videos_dir`; raises `NotFound` when the job produced no video and
        `BacklogGone` (410) when its segments rolled out of (or expired from) the backlog.
        """
        if job.video_path is not None:
            if not job.video_path.exists():
                raise NotFound(
                    f"job {job.id} ended ({job.state.status}) before producing video",
                    param="job_id",
                )
            return job.video_path
        path = self.videos_dir / f"{job.id}.mp4"
        if path.exists():
            return path
        with unavailable("broker"):
            events = await self.broker.backlog(job.id, 0)
        data = assemble_video(job, events)
        partial = path.with_suffix(f".{secrets.token_hex(4)}.part")
        await asyncio.to_thread(partial.write_bytes, data)
        partial.replace(path)
        self.store.remember_file(job.id, path)
        return path

    # Submitting and cancelling ----------------------------------------------------------------
    async def admit(self, model: str | None, *, live: bool = False) -> str:
        """Whether a job for `model` (None: the default one) would be taken now, and the
        id of the model it runs on; cheap (nothing loads), so callers check it before
        decoding a request's media. Raises `InvalidParameter` (422, a model not served),
        `QueueFull` (429, with `Retry-After`) or `ServiceUnavailable` (503)."""
        self._check_accepting()
        served = self.models.check(model)
        await self._check_queue(live)
        return served

    async def submit(self, request: ResolvedRequest, submission: Submission) -> Job:
        """Queue a job for `request`, which `admit` let in, as `submission` says, and
        publish its `start` event (and, when no worker has room for it now, a `queued`
        event with its estimated start).

        A request-scoped job comes back holding one lease, which the caller must
        `release`. Raises `QueueFull` (429) or `ServiceUnavailable` (503).
        """
        live = submission.live
        model = self.models.check(submission.model)
        try:
            pipeline = await asyncio.to_thread(self.models.pipeline, model)
            pipeline_job = await asyncio.to_thread(pipeline.open, request)
        except PipelineError as exc:
            raise from_pipeline_error(exc) from exc
        # While the encoder was prepared the server may have stopped accepting, or other
        # requests filled the queue: a race guard, not a second admission.
        self._check_accepting()
        queued = await self._check_queue(live)
        job_id = submission.job_id or new_job_id()
        spec = JobSpec(
            id=job_id,
            request=pipeline_job.request,
            model=model,
            priority=submission.priority,
            request_scoped=submission.request_scoped,
            live=live,
            remixed_from=submission.remixed_from,
            listed=submission.listed,
            charge=submission.charge,
            traceparent=tracing.traceparent(),
            max_attempts=2 if self.settings.worker_retry_failed_jobs else 1,
        )
        job = Job(
            spec,
            pipeline_job=pipeline_job,
            video_path=None if self.store.shared else self.videos_dir / f"{job_id}.mp4",
            leases=1 if submission.request_scoped else 0,
        )
        JOB_ID.set(job_id)
        notice = await self._queue_notice(live, queued)
        job.state.estimated_start_at = None if notice is None else notice.estimated_start_at
        with unavailable("broker"):
            await self.store.create(job)
            try:
                await publish(self.broker, job, start_payload(job))
                if notice is not None:
                    await publish(self.broker, job, notice)
            except BaseException:  # no job is left behind that nobody could end
                await self.store.discard(job)
                raise
            await self.store.enqueue(job)
        return job

    async def is_active(self, job_id: str) -> bool:
        """Whether job `job_id` exists and has not finished."""
        try:
            return not (await self.store.get(job_id)).state.finished
        except JobNotFound:
            return False

    async def cancel(self, job: Job, code: str = "cancelled", message: str | None = None) -> None:
        """Cancel `job` (409 `Conflict` when it already finished). A queued job ends at
        once; a running one is stopped by its worker within one denoising step."""
        message = message or "the job was cancelled"
        with unavailable("job store"):
            outcome = await self.store.cancel(job, code, message)
        if outcome == "finished":
            raise Conflict(f"job {job.id} already {job.state.status}", param="job_id")
        if outcome == "queued":
            terminal = ErrorPayload(code=code, message=message, param=None)
            await publish_terminal(self.broker, self.store, job, terminal)

    async def page(
        self, after: str | None, limit: int, newest_first: bool, *, owner: str | None = None
    ) -> JobPage:
        """A page of jobs in creation order (see `JobStore.page`); with `owner`, only the
        jobs of that API key (the store's pages are read on until the page is full)."""
        with unavailable("job store"):
            if owner is None:
                return await self.store.page(after, limit, newest_first)
            mine: list[Job] = []
            while True:
                page = await self.store.page(after, max(limit, OWNER_SCAN), newest_first)
                mine += [job for job in page.jobs if job.spec.charge.key_id == owner]
                if len(mine) > limit or not page.has_more or not page.jobs:
                    return JobPage(mine[:limit], len(mine) > limit or page.has_more)
                after = page.jobs[-1].id

    async def delete(self, job: Job, wait_s: float = DELETE_WAIT_S) -> None:
        """Forget `job`: its record, its file and its events. One that has not ended is
        cancelled first (it stops within one denoising step) and deleted once it has;
        `Conflict` (409) when it has not stopped within `wait_s` seconds."""
        with unavailable("job store"):
            if not job.state.finished:
                with contextlib.suppress(Conflict):  # it ended meanwhile
                    await self.cancel(job, "cancelled", "the job was deleted")
                await self._until_ended(job, wait_s)
            await self.store.delete(job)
            await self.broker.drop(job.id)

    async def _until_ended(self, job: Job, wait_s: float) -> None:
        """Until `job`'s terminal event is published (its state is final by then). The
        log is read from its last known event on, which may be the terminal one itself
        (a queued job's cancel publishes it at once)."""
        next_seq, ended = await log_tail(self.broker, job.id, job.state.last_seq - 1)
        if ended:
            return
        try:
            async with asyncio.timeout(wait_s):
                async with self.broker.subscribe(job.id, next_seq, max_pending=1024) as events:
                    async for event in events:
                        if event.terminal:
                            return
            return  # the subscription ended: so had the log
        except TimeoutError:
            raise Conflict(
                f"job {job.id} is still stopping; delete it again shortly", param="job_id"
            ) from None

    def acquire(self, job: Job) -> None:
        """One more subscriber holds `job` (request-scoped jobs only run while one does;
        any job is "watched" while one does, which its worker's scheduler sees)."""
        job.leases += 1
        if job.orphan_timer is not None:
            job.orphan_timer.cancel()
            job.orphan_timer = None
        if job.leases == 1 and not job.state.finished:
            self.store.lease_held(job)

    def release(self, job: Job, grace_s: float = 0.0) -> None:
        """A subscriber let go; the last one of a request-scoped job (in the whole cluster,
        with Redis) cancels it, at once or after `grace_s` seconds in which a new
        subscriber may resume it."""
        job.leases = max(0, job.leases - 1)
        if job.leases or job.state.finished:
            return
        if not job.spec.request_scoped:
            self.store.lease_dropped(job, 0.0)  # no longer watched from here
            return
        self.store.lease_dropped(job, grace_s)
        if grace_s > 0:
            loop = asyncio.get_running_loop()
            job.orphan_timer = loop.call_later(grace_s, self._orphaned, job)
        else:
            self._orphaned(job)

    def _orphaned(self, job: Job) -> None:
        job.orphan_timer = None
        if job.leases == 0 and not job.state.finished:
            self._tasks.spawn(self._cancel_orphan(job))

    async def _cancel_orphan(self, job: Job) -> None:
        try:
            if await self.store.held_elsewhere(job) or job.leases:
                if job.leases:
                    self.store.lease_held(job)
                return  # a subscriber on another replica (or a new one here) holds it
            with contextlib.suppress(Conflict):  # it finished meanwhile
                await self.cancel(job, "cancelled", "the last subscriber disconnected")
        except (BrokerError, ServiceUnavailable) as exc:
            # The store is closed (shutting down) or Redis is away: the job's lease lapses
            # and any replica's reaper cancels it unless a client resumes it elsewhere.
            log.info("job %s: not cancelled here (%s); its lease will lapse", job.id, exc)

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ServiceUnavailable("the server is shutting down", code="shutting_down")

    async def _check_queue(self, live: bool) -> int:
        """The number of queued jobs; `QueueFull` when there is no room for one more."""
        queued, _ = await self.counts()
        if queued >= self.settings.max_queued_jobs:
            now = time.time()
            start = estimated_start(await self._loads(), live=live, position=0, now=now)
            raise QueueFull(
                f"{queued} jobs are queued, the limit is "
                f"{self.settings.max_queued_jobs}; retry later",
                retry_after_s=1 if start is None else math.ceil(start - now),
            )
        return queued

    async def _queue_notice(self, live: bool, queued: int) -> QueuedPayload | None:
        """The `queued` event of a job that `queued` jobs wait before, when the workers'
        reports say it will wait (None when one has room, or none reports yet)."""
        loads = await self._loads()
        if not loads:
            return None
        now = time.time()
        start = estimated_start(loads, live=live, position=queued, now=now)
        if start is not None and start - now < QUEUE_NOTICE_S:
            return None
        wait_s = None if start is None else round(start - now, 3)
        return QueuedPayload(
            position=queued, estimated_start_at=start, estimated_wait_seconds=wait_s
        )

    async def _loads(self) -> list[WorkerLoad]:
        try:
            return await self.store.loads()
        except BrokerError as exc:
            log.info("cannot read the workers' loads: %s", exc)
            return []

    async def loads(self) -> list[WorkerLoad]:
        """Every worker's current load report (empty when the store cannot be read)."""
        return await self._loads()
