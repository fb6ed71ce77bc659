"""Jobs: what a job is, and `JobManager`, which accepts, looks up and cancels them.

A job's events form one ordered log in the broker: `start` is published when the job is
accepted (the init segment and codec are known before any frame is generated), then
`progress` after every denoising step and `segment` as each segment leaves the encoder,
then one terminal `complete` or `error`.

Where jobs live is a `JobStore` (`streamgen.jobstore`): in this process (`MemoryJobStore`,
the single-process default) or in Redis (`RedisJobStore`: any replica answers for any job,
and `streamgen worker` processes take jobs from a shared queue). Jobs are run by a
`streamgen.worker.Worker`: embedded in the server, or in separate worker processes.

Request-scoped jobs (`/generate-stream`, `/generate`, a WebSocket request) hold leases, one
per subscriber; when the last lease goes the job is cancelled, within one denoising step.
With Redis, leases are counted across replicas. Jobs made with `/v1/jobs` run on without
subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from segment_pipeline import (
    CancelEvent,
    EncodedSegment,
    PipelineError,
    PipelineJob,
    ResolvedRequest,
    SegmentPipeline,
)

from .broker.base import Broker, BrokerError, Event
from .config import Settings
from .errors import (
    BacklogGone,
    Conflict,
    InvalidParameter,
    NotFound,
    QueueFull,
    ServiceError,
    ServiceUnavailable,
    from_pipeline_error,
)
from .protocol import GenerationParams, to_generation_request

if TYPE_CHECKING:
    from .jobstore import JobStore
    from .worker import Worker

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
Post = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class Job:
    """One generation job and what is known of its progress (mutated on the event loop only).

    With a shared (Redis) store this is one process's view of the job, refreshed from
    Redis; `pipeline_job` is set only where the job was opened (the submitting replica for
    its `start` event, the worker that runs it).
    """

    id: str
    request: ResolvedRequest = field(repr=False)
    model: str
    priority: int
    request_scoped: bool
    video_path: Path | None = None  # the file the worker writes (memory store only)
    pipeline_job: PipelineJob | None = field(default=None, repr=False)
    created_at: float = field(default_factory=time.time)
    status: JobStatus = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    segments_done: int = 0
    frames_done: int = 0
    progress: dict[str, Any] | None = None
    error: ServiceError | None = None
    leases: int = 0  # subscribers in this process
    next_seq: int = 0
    worker: str | None = None  # who runs it (shared store)
    attempt: int = 0  # runs started (a retried job has 2)
    max_attempts: int = 1
    cancel: CancelEvent = field(default_factory=CancelEvent, repr=False)
    cancel_code: str = "cancelled"
    cancel_message: str = "the job was cancelled"
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    orphan_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1


class JobManager:
    """Accepts jobs, queues them (priority, then FIFO) in its store, looks them up and
    cancels them; runs them too when it has an embedded worker."""

    def __init__(
        self,
        settings: Settings,
        pipeline: SegmentPipeline,
        broker: Broker,
        store: JobStore | None = None,
        *,
        embedded_worker: bool = True,
    ) -> None:
        from .jobstore import MemoryJobStore
        from .worker import Worker

        self.settings = settings
        self.pipeline = pipeline
        self.broker = broker
        self.model_name = pipeline.generator.name
        self.accepting = False
        self._own_dir = settings.jobs_dir is None
        self.videos_dir = Path(settings.jobs_dir or tempfile.mkdtemp(prefix="streamgen-jobs-"))
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self.store: JobStore = store or MemoryJobStore(settings, broker)
        if not self.store.shared and not embedded_worker:
            raise ValueError(
                "embedded_worker must be true with the memory broker: no other process "
                "can run this server's jobs (use a Redis broker for API-only replicas)"
            )
        self.worker: Worker | None = (
            Worker(settings, pipeline, broker, self.store) if embedded_worker else None
        )
        self._tasks: set[asyncio.Future[Any]] = set()

    # Lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store and start the embedded worker (on the running loop)."""
        await self.store.start()
        self.accepting = True
        if self.worker is not None:
            self.worker.start()

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting. Jobs queued in this process get an `error` event at once (jobs
        queued in Redis stay there for other workers); the embedded worker's running jobs
        get `grace_s` seconds to finish before they are cancelled with ``shutting_down``."""
        if not self.accepting and self.store.closed:
            return
        self.accepting = False
        if not self.store.shared:
            for job in await self.store.queued_here():
                with contextlib.suppress(Conflict):
                    await self.cancel(job, "shutting_down", "the server is shutting down")
        if self.worker is not None:
            await self.worker.stop(grace_s)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_s)
        await self.store.close()
        if self._own_dir:
            shutil.rmtree(self.videos_dir, ignore_errors=True)

    # Queries ------------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        """The job (its state as fresh as the store has it); `JobNotFound` (404) if unknown."""
        return await self.store.get(job_id)

    async def counts(self) -> tuple[int, int]:
        """(queued, running) jobs: this process's, or the whole cluster's with Redis."""
        try:
            return await self.store.counts()
        except BrokerError as exc:
            raise ServiceUnavailable(f"the job store is unavailable: {exc}") from exc

    async def video_file(self, job: Job) -> Path:
        """The finished job's MP4 on this machine (init + every fragment).

        With a shared store the file is rebuilt from the job's backlog on first use and
        kept in `videos_dir`; raises `NotFound` when the job produced no video and
        `BacklogGone` (410) when its segments rolled out of (or expired from) the backlog.
        """
        if job.video_path is not None:
            if not job.video_path.exists():
                raise NotFound(
                    f"job {job.id} ended ({job.status}) before producing video", param="job_id"
                )
            return job.video_path
        path = self.videos_dir / f"{job.id}.mp4"
        if path.exists():
            return path
        try:
            events = await self.broker.backlog(job.id, 0)
        except BrokerError as exc:
            raise ServiceUnavailable(f"the broker is unavailable: {exc}") from exc
        data = assemble_video(job, events)
        partial = path.with_suffix(f".{secrets.token_hex(4)}.part")
        await asyncio.to_thread(partial.write_bytes, data)
        partial.replace(path)
        self.store.remember_file(job.id, path)
        return path

    # Submitting and cancelling ----------------------------------------------------------------
    async def submit(self, params: GenerationParams, *, request_scoped: bool) -> Job:
        """Check `params`, queue a job and publish its `start` event.

        A request-scoped job comes back holding one lease, which the caller must `release`.
        Raises `InvalidParameter` (422), `QueueFull` (429) or `ServiceUnavailable` (503).
        """
        self._check_accepting()
        if params.model is not None and params.model != self.model_name:
            raise InvalidParameter(
                f"model {params.model!r} is not served here; this server runs {self.model_name!r}",
                param="model",
            )
        await self._check_queue()
        try:
            request = await asyncio.to_thread(to_generation_request, params)
            pipeline_job = await asyncio.to_thread(self.pipeline.open, request)
        except PipelineError as exc:
            raise from_pipeline_error(exc) from exc
        self._check_accepting()
        await self._check_queue()
        job_id = "job_" + secrets.token_hex(10)
        job = Job(
            id=job_id,
            request=pipeline_job.request,
            pipeline_job=pipeline_job,
            model=self.model_name,
            priority=params.priority,
            request_scoped=request_scoped,
            video_path=None if self.store.shared else self.videos_dir / f"{job_id}.mp4",
            leases=1 if request_scoped else 0,
            max_attempts=2 if self.settings.worker_retry_failed_jobs else 1,
        )
        try:
            await self.store.create(job)
            try:
                await publish(self.broker, job, "start", start_data(job))
            except BrokerError:
                await self.store.discard(job)
                raise
            await self.store.enqueue(job)
        except BrokerError as exc:
            raise ServiceUnavailable(f"the broker is unavailable: {exc}") from exc
        return job

    async def cancel(self, job: Job, code: str = "cancelled", message: str | None = None) -> None:
        """Cancel `job` (409 `Conflict` when it already finished). A queued job ends at
        once; a running one is stopped by its worker within one denoising step."""
        message = message or "the job was cancelled"
        try:
            outcome = await self.store.cancel(job, code, message)
        except BrokerError as exc:
            raise ServiceUnavailable(f"the job store is unavailable: {exc}") from exc
        if outcome == "finished":
            raise Conflict(f"job {job.id} already {job.status}", param="job_id")
        if outcome == "queued":
            await publish_terminal(
                self.broker, self.store, job, "error", {"code": code, "message": message,
                                                        "param": None}
            )  # fmt: skip

    def acquire(self, job: Job) -> None:
        """One more subscriber holds `job` (request-scoped jobs only run while one does)."""
        job.leases += 1
        if job.orphan_timer is not None:
            job.orphan_timer.cancel()
            job.orphan_timer = None
        if job.leases == 1 and job.request_scoped and not job.finished:
            self.store.lease_held(job)

    def release(self, job: Job, grace_s: float = 0.0) -> None:
        """A subscriber let go; the last one of a request-scoped job (in the whole cluster,
        with Redis) cancels it, at once or after `grace_s` seconds in which a new
        subscriber may resume it."""
        job.leases = max(0, job.leases - 1)
        if job.leases or not job.request_scoped or job.finished:
            return
        self.store.lease_dropped(job, grace_s)
        if grace_s > 0:
            loop = asyncio.get_running_loop()
            job.orphan_timer = loop.call_later(grace_s, self._orphaned, job)
        else:
            self._orphaned(job)

    def _orphaned(self, job: Job) -> None:
        job.orphan_timer = None
        if job.leases == 0 and not job.finished:
            self._spawn(self._cancel_orphan(job))

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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ServiceUnavailable("the server is shutting down", code="shutting_down")

    async def _check_queue(self) -> None:
        queued, _ = await self.counts()
        if queued >= self.settings.max_queued_jobs:
            raise QueueFull(
                f"{queued} jobs are queued, the limit is "
                f"{self.settings.max_queued_jobs}; retry later"
            )


# Publishing (shared by the manager, the worker and the Redis store's reaper) -------------------
async def publish(broker: Broker, job: Job, kind: str, data: dict[str, Any]) -> None:
    """Publish the job's next event (stamped with `time`, Unix seconds) and track it."""
    async with job.publish_lock:
        data["time"] = time.time()
        await broker.publish(Event(job.id, job.next_seq, kind, data))
        job.next_seq += 1
    track(job, kind, data)


async def publish_terminal(
    broker: Broker, store: JobStore, job: Job, kind: str, data: dict[str, Any]
) -> None:
    """Publish the job's terminal event (its state is already final), then settle it in
    the store. With a shared store the seq comes from the log's tail, and nothing is
    published when the log already ended (a publisher died between the two)."""
    try:
        if store.shared:
            next_seq, ended = await log_tail(broker, job.id, job.last_seq)
            job.next_seq = next_seq
            if ended:
                return
        await publish(broker, job, kind, data)
    except BrokerError as exc:
        log.error("job %s: cannot publish its %s event: %s", job.id, kind, exc)
    finally:
        await store.settle(job)


async def log_tail(broker: Broker, job_id: str, known_last_seq: int) -> tuple[int, bool]:
    """(next seq, ended) of a job's log, read from the backlog after `known_last_seq` (a
    seq known to be published; the newest events are always stored)."""
    events = await broker.backlog(job_id, max(0, known_last_seq + 1))
    if not events:
        return known_last_seq + 1, False
    return events[-1].seq + 1, events[-1].terminal


def track(job: Job, kind: str, data: dict[str, Any]) -> None:
    """Update what is known of `job` after its event `kind` was published."""
    if kind == "progress":
        job.progress = {k: data[k] for k in ("segment_index", "step", "total_steps")}
    elif kind == "segment":
        job.segments_done += 1
        job.frames_done += data["num_frames"]


def start_data(job: Job) -> dict[str, Any]:
    """The `start` event of `job` (opened here: it has its `pipeline_job`)."""
    request, pipeline_job = job.request, job.pipeline_job
    assert pipeline_job is not None, "start_data needs the opened pipeline job"
    return {
        "codec": pipeline_job.codec_string,
        "mime": f'video/mp4; codecs="{pipeline_job.codec_string}"',
        "init_segment": pipeline_job.init_segment,
        "width": request.width,
        "height": request.height,
        "fps": request.fps,
        "total_segments": request.total_segments,
        "total_frames": request.total_frames,
        "seed": request.seed,
        "model": job.model,
    }


def complete_data(job: Job) -> dict[str, Any]:
    fps = job.request.fps
    return {
        "total_segments": job.segments_done,
        "total_frames": job.frames_done,
        "duration": job.frames_done / fps,
        "final": True,
    }


def segment_data(encoded: EncodedSegment) -> dict[str, Any]:
    segment = encoded.segment
    return {
        "segment_index": segment.index,
        "total_segments": segment.total_segments,
        "is_final": segment.is_final,
        "start_frame": segment.start_frame,
        "num_frames": segment.num_frames,
        "start_time": segment.start_seconds,
        "end_time": segment.end_seconds,
        "fragment": encoded.fragment,
        "segment": encoded.standalone,
        "generate_seconds": segment.generate_seconds,
        "encode_seconds": encoded.encoded.encode_seconds,
    }


def assemble_video(job: Job, events: list[Event]) -> bytes:
    """init + every fragment of `job`'s backlog `events`, in order: its MP4.

    Raises `NotFound` when the job made no segment and `BacklogGone` when the start event or
    a segment is no longer stored.
    """
    start = next((e for e in events if e.type == "start"), None)
    segments = [e for e in events if e.type == "segment"]
    if start is None:
        raise BacklogGone(
            f"the events of job {job.id} expired from the backlog, and its video with them",
            resume_from=job.next_seq,
        )
    if not segments and job.segments_done == 0:
        raise NotFound(f"job {job.id} ended ({job.status}) before producing video", param="job_id")
    indices = [e.data["segment_index"] for e in segments]
    if indices != list(range(max(job.segments_done, len(indices)))):
        first = segments[0].seq if segments else job.next_seq
        raise BacklogGone(
            f"segments of job {job.id} rolled out of the backlog (max_backlog_bytes), so its "
            "video can no longer be rebuilt",
            resume_from=first,
        )
    parts = [bytes(start.data["init_segment"])]
    parts.extend(bytes(e.data["fragment"]) for e in segments)
    return b"".join(parts)


def cancel_error(code: str, message: str) -> ServiceError:
    """The error a cancelled job ends with: 503 when the server shut down, else 409."""
    if code == "shutting_down":
        return ServiceUnavailable(message, code=code)
    return Conflict(message, code=code)


def error_data(error: ServiceError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "param": error.param}


def _log_failure(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None and not isinstance(exc, Conflict):
            log.error("background job task failed: %r", exc)
