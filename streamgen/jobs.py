"""Jobs: state, the priority queue, and the in-process worker that runs `SegmentPipeline`.

A job's events form one ordered log in the broker: `start` is published when the job is
accepted (the init segment and codec are known before any frame is generated), then
`progress` after every denoising step and `segment` as each segment leaves the encoder,
then one terminal `complete` or `error`. Generation runs on a worker thread; the thread
hands events to the event loop with ``loop.call_soon_threadsafe`` and never waits for
subscribers. Sequence numbers are given on the loop, under a per-job lock, in the order the
events arrive.

Request-scoped jobs (`/generate-stream`, `/generate`, a WebSocket request) hold leases, one
per subscriber; when the last lease goes the job is cancelled, within one denoising step.
Jobs made with `/v1/jobs` run on without subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segment_pipeline import (
    CancelEvent,
    EncodedSegment,
    GenerationCancelled,
    PipelineError,
    PipelineJob,
    SegmentPipeline,
)

from .broker.base import Broker, BrokerError, Event
from .config import Settings
from .errors import (
    Conflict,
    GenerationFailed,
    InvalidParameter,
    JobNotFound,
    QueueFull,
    ServiceError,
    ServiceUnavailable,
    from_pipeline_error,
)
from .protocol import GenerationParams, to_generation_request

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
Post = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class Job:
    """One generation job and what is known of its progress (mutated on the event loop only)."""

    id: str
    pipeline_job: PipelineJob = field(repr=False)
    model: str
    priority: int
    request_scoped: bool
    video_path: Path
    created_at: float = field(default_factory=time.time)
    status: JobStatus = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    segments_done: int = 0
    frames_done: int = 0
    progress: dict[str, Any] | None = None
    error: ServiceError | None = None
    leases: int = 0
    next_seq: int = 0
    cancel: CancelEvent = field(default_factory=CancelEvent, repr=False)
    cancel_code: str = "cancelled"
    cancel_message: str = "the job was cancelled"
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    orphan_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def request(self) -> Any:
        return self.pipeline_job.request

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1


class JobManager:
    """Accepts jobs, queues them (priority, then FIFO), runs them and publishes their events."""

    def __init__(self, settings: Settings, pipeline: SegmentPipeline, broker: Broker) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.broker = broker
        self.model_name = pipeline.generator.name
        self.jobs: dict[str, Job] = {}
        self.accepting = False
        self._queue: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._workers: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(
            settings.max_concurrent_jobs, thread_name_prefix="generator"
        )
        self._own_dir = settings.jobs_dir is None
        self.videos_dir = Path(settings.jobs_dir or tempfile.mkdtemp(prefix="streamgen-jobs-"))
        self.videos_dir.mkdir(parents=True, exist_ok=True)

    # Lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker tasks (on the running loop)."""
        self.accepting = True
        for index in range(self.settings.max_concurrent_jobs):
            self._workers.append(asyncio.create_task(self._work(), name=f"job-worker-{index}"))

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; queued jobs get an `error` event at once, running ones `grace_s`
        seconds to finish before they are cancelled with code ``shutting_down``."""
        self.accepting = False
        for job in [j for j in self.jobs.values() if j.status == "queued"]:
            await self._cancel_queued(job, "shutting_down", "the server is shutting down")
        running = [j for j in self.jobs.values() if j.status == "running"]
        if running:
            await asyncio.wait(
                [asyncio.create_task(j.done.wait()) for j in running], timeout=grace_s
            )
        for job in running:
            if not job.finished:
                self._cancel_running(job, "shutting_down", "the server is shutting down")
        if running:
            await asyncio.wait([asyncio.create_task(j.done.wait()) for j in running])
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._executor.shutdown(wait=True)
        if self._own_dir:
            shutil.rmtree(self.videos_dir, ignore_errors=True)

    # Queries ------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    @property
    def queue_depth(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status == "queued")

    @property
    def running(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status == "running")

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
        self._check_queue()
        try:
            request = await asyncio.to_thread(to_generation_request, params)
            pipeline_job = await asyncio.to_thread(self.pipeline.open, request)
        except PipelineError as exc:
            raise from_pipeline_error(exc) from exc
        self._check_accepting()
        self._check_queue()
        job_id = "job_" + secrets.token_hex(10)
        job = Job(
            id=job_id,
            pipeline_job=pipeline_job,
            model=self.model_name,
            priority=params.priority,
            request_scoped=request_scoped,
            video_path=self.videos_dir / f"{job_id}.mp4",
            leases=1 if request_scoped else 0,
        )
        self.jobs[job_id] = job
        self._forget_old()
        try:
            await self._emit(job, "start", self._start_data(job))
        except BrokerError as exc:
            del self.jobs[job_id]
            raise ServiceUnavailable(f"the broker is unavailable: {exc}") from exc
        self._queue.put_nowait((-job.priority, next(self._order), job_id))
        return job

    async def cancel(self, job: Job, code: str = "cancelled", message: str | None = None) -> None:
        """Cancel `job` (409 `Conflict` when it already finished)."""
        message = message or "the job was cancelled"
        if job.finished:
            raise Conflict(f"job {job.id} already {job.status}", param="job_id")
        if job.status == "queued":
            await self._cancel_queued(job, code, message)
        else:
            self._cancel_running(job, code, message)

    def acquire(self, job: Job) -> None:
        """One more subscriber holds `job` (request-scoped jobs only run while one does)."""
        job.leases += 1
        if job.orphan_timer is not None:
            job.orphan_timer.cancel()
            job.orphan_timer = None

    def release(self, job: Job, grace_s: float = 0.0) -> None:
        """A subscriber let go; the last one of a request-scoped job cancels it, at once or
        after `grace_s` seconds in which a new subscriber may resume it."""
        job.leases = max(0, job.leases - 1)
        if job.leases or not job.request_scoped or job.finished:
            return
        if grace_s > 0:
            loop = asyncio.get_running_loop()
            job.orphan_timer = loop.call_later(grace_s, self._orphaned, job)
        else:
            self._orphaned(job)

    def _orphaned(self, job: Job) -> None:
        job.orphan_timer = None
        if job.leases == 0 and not job.finished:
            task = asyncio.ensure_future(
                self.cancel(job, "cancelled", "the last subscriber disconnected")
            )
            task.add_done_callback(_log_failure)

    async def _cancel_queued(self, job: Job, code: str, message: str) -> None:
        job.status = "cancelled"
        job.error = cancel_error(code, message)
        job.finished_at = time.time()
        await self._terminal(job, "error", {"code": code, "message": message, "param": None})

    def _cancel_running(self, job: Job, code: str, message: str) -> None:
        job.cancel_code, job.cancel_message = code, message
        job.cancel.set()

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ServiceUnavailable("the server is shutting down", code="shutting_down")

    def _check_queue(self) -> None:
        if self.queue_depth >= self.settings.max_queued_jobs:
            raise QueueFull(
                f"{self.queue_depth} jobs are queued, the limit is "
                f"{self.settings.max_queued_jobs}; retry later"
            )

    def _forget_old(self) -> None:
        finished = [job for job in self.jobs.values() if job.finished]
        for job in finished[: max(0, len(finished) - self.settings.max_finished_jobs)]:
            del self.jobs[job.id]
            job.video_path.unlink(missing_ok=True)
            task = asyncio.ensure_future(self.broker.drop(job.id))
            task.add_done_callback(_log_failure)

    # Publishing --------------------------------------------------------------------------
    async def _emit(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        async with job.publish_lock:
            data["time"] = time.time()
            await self.broker.publish(Event(job.id, job.next_seq, kind, data))
            job.next_seq += 1
        self._track(job, kind, data)

    async def _terminal(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        try:
            await self._emit(job, kind, data)
        finally:
            job.done.set()

    def _track(self, job: Job, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress":
            job.progress = {k: data[k] for k in ("segment_index", "step", "total_steps")}
        elif kind == "segment":
            job.segments_done += 1
            job.frames_done += data["num_frames"]

    def _start_data(self, job: Job) -> dict[str, Any]:
        request, pipeline_job = job.request, job.pipeline_job
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

    # The worker --------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            _, _, job_id = await self._queue.get()
            job = self.jobs.get(job_id)
            if job is None or job.status != "queued":
                continue  # cancelled while queued
            try:
                await self._run(job)
            except Exception:  # keep the worker alive; the job already got its error event
                log.exception("job %s: worker failure", job.id)

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        job.status, job.started_at = "running", time.time()

        def post(kind: str, data: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(outbox.put_nowait, (kind, data))

        publisher = asyncio.create_task(self._publish_all(job, outbox))
        status: JobStatus = "completed"
        error: ServiceError | None = None
        try:
            await loop.run_in_executor(self._executor, self._generate, job, post)
        except GenerationCancelled:
            status, error = "cancelled", cancel_error(job.cancel_code, job.cancel_message)
            if job.cancel_code == "broker_error":
                status = "failed"
        except PipelineError as exc:
            status, error = "failed", from_pipeline_error(exc)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            status = "failed"
            error = GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
        # After every event the threads posted (call_soon_threadsafe keeps their order).
        outbox.put_nowait(("end", (status, error)))
        await publisher

    async def _publish_all(self, job: Job, outbox: asyncio.Queue[tuple[str, Any]]) -> None:
        while True:
            kind, data = await outbox.get()
            if kind == "end":
                await self._end(job, *data)
                return
            try:
                await self._emit(job, kind, data)
            except BrokerError as exc:
                log.error("job %s: cannot publish %s: %s", job.id, kind, exc)
                self._cancel_running(job, "broker_error", f"the broker failed: {exc}")

    async def _end(self, job: Job, status: JobStatus, error: ServiceError | None) -> None:
        """Record the outcome, then publish the terminal event (state first, so whoever
        sees the event sees the final state)."""
        job.status, job.error, job.finished_at = status, error, time.time()
        if error is None:
            kind, data = "complete", self._complete_data(job)
        else:
            kind, data = "error", _error_data(error)
        try:
            await self._terminal(job, kind, data)
        except BrokerError as exc:
            log.error("job %s: cannot publish its %s event: %s", job.id, kind, exc)

    def _generate(self, job: Job, post: Post) -> None:
        """Runs on a worker thread: generate, encode, write the file and post events."""
        total = job.request.total_segments

        def on_progress(index: int, step: int, steps: int) -> None:
            post(
                "progress",
                {"segment_index": index, "step": step, "total_steps": steps,
                 "total_segments": total},
            )  # fmt: skip

        with job.video_path.open("wb") as video:
            video.write(job.pipeline_job.init_segment)

            def on_segment(encoded: EncodedSegment) -> None:
                video.write(encoded.fragment)
                video.flush()
                post("segment", _segment_data(encoded))

            job.pipeline_job.run(on_segment, progress=on_progress, cancel=job.cancel)

    def _complete_data(self, job: Job) -> dict[str, Any]:
        fps = job.request.fps
        return {
            "total_segments": job.segments_done,
            "total_frames": job.frames_done,
            "duration": job.frames_done / fps,
            "final": True,
        }


def _segment_data(encoded: EncodedSegment) -> dict[str, Any]:
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


def cancel_error(code: str, message: str) -> ServiceError:
    """The error a cancelled job ends with: 503 when the server shut down, else 409."""
    if code == "shutting_down":
        return ServiceUnavailable(message, code=code)
    return Conflict(message, code=code)


def _error_data(error: ServiceError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "param": error.param}


def _log_failure(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None and not isinstance(exc, Conflict):
            log.error("background job task failed: %r", exc)
