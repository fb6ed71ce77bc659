"""The worker: takes jobs from a `JobStore`, runs `SegmentPipeline` and publishes events.

One worker runs `concurrency` jobs at a time (`max_concurrent_jobs`), each on its own
generator thread; the thread hands events to the event loop with
``loop.call_soon_threadsafe`` and never waits for subscribers. Sequence numbers are given
on the loop, under the job's lock, in the order the events arrive; after each event the
store records what changed (progress, segments, last seq).

The same class runs embedded in `streamgen serve` (memory or Redis store) and in
`streamgen worker` processes (Redis store). With Redis, taking a job means adopting its log:
the worker reads the job's backlog (its `start` event, and on a retry what the first attempt
published), checks that its own encoder makes the same init segment, and continues the log
where it stands. A retried job regenerates from the start with the same seed (generators
are deterministic for a seed) and publishes only what was not published before: progress
and segments of later segments, so the log has no gap and no double.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from segment_pipeline import (
    EncodedSegment,
    GenerationCancelled,
    PipelineError,
    SegmentPipeline,
)

from ..broker.base import Broker, BrokerError
from ..config import Settings
from ..errors import GenerationFailed, ServiceError, from_pipeline_error
from ..events import (
    ErrorPayload,
    Payload,
    ProgressPayload,
    SegmentPayload,
    StartPayload,
    Terminal,
    payload_of,
)
from .log import complete_payload, publish, publish_terminal, segment_payload
from .record import Job, JobStatus, cancel_error
from .store import JobStore

log = logging.getLogger(__name__)

HAND_BACK = "handed_back"  # cancel code: stop generating and requeue the job (shutdown)
Post = Callable[[Payload], None]
"""Hands an event's payload from a generator thread to the event loop."""


class Worker:
    """Runs jobs from `store`: `start()` on a loop, `await stop(grace_s)` to end."""

    def __init__(
        self,
        settings: Settings,
        pipeline: SegmentPipeline,
        broker: Broker,
        store: JobStore,
        *,
        concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.broker = broker
        self.store = store
        self.concurrency = concurrency or settings.max_concurrent_jobs
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 (jobs), got {self.concurrency}")
        self.running: dict[str, Job] = {}
        self.jobs_run = 0
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="generator")
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start taking jobs (on the running loop)."""
        for index in range(self.concurrency):
            self._loops.append(asyncio.create_task(self._work(), name=f"job-worker-{index}"))

    async def stop(self, grace_s: float) -> None:
        """Take no more jobs; running ones get `grace_s` seconds to finish. Then, with a
        shared store, they go back to the queue (another worker takes them over and
        continues their logs); with the memory store they are cancelled with an `error`
        event (code ``shutting_down``)."""
        self.store.stop_claiming()
        running = list(self.running.values())
        if running:
            await asyncio.wait(
                [asyncio.create_task(j.done.wait()) for j in running], timeout=grace_s
            )
        for job in running:
            if not job.finished:
                # Shared store: hand the job back to the queue (another worker continues its
                # log); in one process there is no other worker, so it ends.
                job.cancel_code = HAND_BACK if self.store.shared else "shutting_down"
                job.cancel_message = "the server is shutting down"
                job.cancel.set()
        if running:
            await asyncio.wait([asyncio.create_task(j.done.wait()) for j in running])
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        while True:
            job = await self.store.claim()
            if job is None:
                return
            try:
                await self._run(job)
            except Exception:  # keep the worker alive; the job already got its error event
                log.exception("job %s: worker failure", job.id)

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[Payload | tuple[JobStatus, ServiceError | None]] = asyncio.Queue()
        self.running[job.id] = job
        self.jobs_run += 1

        def post(payload: Payload) -> None:
            loop.call_soon_threadsafe(outbox.put_nowait, payload)

        publisher = asyncio.create_task(self._publish_all(job, outbox))
        status: JobStatus = "completed"
        error: ServiceError | None = None
        try:
            skip = await self._adopt(job) if self.store.shared else 0
            if skip:
                log.info("job %s: attempt %d resumes after segment %d", job.id, job.attempt,
                         skip - 1)  # fmt: skip
            await loop.run_in_executor(self._executor, self._generate, job, post, skip)
        except GenerationCancelled:
            status, error = "cancelled", cancel_error(job.cancel_code, job.cancel_message)
            if job.cancel_code in ("broker_error", "worker_lost"):
                status = "failed"
        except ServiceError as exc:
            status, error = "failed", exc
        except PipelineError as exc:
            status, error = "failed", from_pipeline_error(exc)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            status = "failed"
            error = GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
        except BaseException:
            publisher.cancel()
            self.running.pop(job.id, None)
            raise
        # After every event the threads posted (call_soon_threadsafe keeps their order).
        outbox.put_nowait((status, error))
        try:
            await publisher
        finally:
            self.running.pop(job.id, None)

    async def _adopt(self, job: Job) -> int:
        """Take over a job's log (shared store): returns how many segments were already
        published (by an earlier attempt), which this attempt must not publish again."""
        try:
            events = await self.broker.backlog(job.id, 0)
        except BrokerError as exc:
            raise GenerationFailed(
                f"cannot read the job's log: {exc}", code="broker_error"
            ) from exc
        start = next((payload_of(e) for e in events if e.type == "start"), None)
        if not isinstance(start, StartPayload):
            raise GenerationFailed(
                f"the log of job {job.id} is gone (its start event expired or was lost)",
                code="backlog_lost",
            )
        if events[-1].terminal:
            job.cancel_code, job.cancel_message = "worker_lost", "the job's log already ended"
            job.cancel.set()
            raise GenerationCancelled("the job's log already ended")
        later = [payload_of(e) for e in events if e.seq > job.last_seq and e.type == "segment"]
        job.segments_done += len(later)
        job.frames_done += sum(p.num_frames for p in later if isinstance(p, SegmentPayload))
        job.next_seq = events[-1].seq + 1
        self.broker.adopt(events)  # it can now restore the job's backlog if Redis loses it
        try:
            job.pipeline_job = await asyncio.to_thread(self.pipeline.open, job.request)
        except PipelineError as exc:
            raise from_pipeline_error(exc) from exc
        if job.pipeline_job.init_segment != start.init_segment:
            raise GenerationFailed(
                "this worker's encoder makes a different init segment than the replica that "
                "accepted the job: give replicas and workers the same encoder settings "
                "(encoder_preset, encoder_crf) and library versions",
                code="encoder_mismatch",
            )
        return job.segments_done

    async def _publish_all(
        self, job: Job, outbox: asyncio.Queue[Payload | tuple[JobStatus, ServiceError | None]]
    ) -> None:
        while True:
            payload = await outbox.get()
            if isinstance(payload, tuple):  # the end: (status, error)
                await self._end(job, *payload)
                return
            try:
                await publish(self.broker, job, payload)
            except BrokerError as exc:
                log.error("job %s: cannot publish %s: %s", job.id, payload.type, exc)
                job.stop("broker_error", f"the broker failed: {exc}")
                continue
            try:
                ours = await self.store.record(job)
            except BrokerError as exc:  # state lags; the next event's record catches up
                log.warning("job %s: cannot record its state: %s", job.id, exc)
                continue
            if not ours:
                job.stop("worker_lost", "the job was taken from this worker")

    async def _end(self, job: Job, status: JobStatus, error: ServiceError | None) -> None:
        """Record the outcome, then publish the terminal event (state first, so whoever
        sees the event sees the final state)."""
        if job.cancel_code == HAND_BACK and status == "cancelled":
            await self.store.give_back(job)
            log.info("job %s: handed back to the queue for another worker", job.id)
            job.done.set()
            return
        job.status, job.error, job.finished_at = status, error, time.time()
        terminal: Terminal = complete_payload(job) if error is None else ErrorPayload.of(error)
        if not await self.store.finish(job, terminal):
            log.warning("job %s: not publishing its end: another worker or reaper owns it",
                        job.id)  # fmt: skip
            job.done.set()
            return
        await publish_terminal(self.broker, self.store, job, terminal)

    def _generate(self, job: Job, post: Post, skip: int) -> None:
        """Runs on a worker thread: generate, encode, write the file (memory store) and
        post events (none for the first `skip` segments: an earlier attempt sent them)."""
        assert job.pipeline_job is not None
        total = job.request.total_segments

        def on_progress(index: int, step: int, steps: int) -> None:
            if index >= skip:
                post(ProgressPayload(index, step, steps, total))

        if job.video_path is None:

            def on_segment(encoded: EncodedSegment) -> None:
                if encoded.index >= skip:
                    post(segment_payload(encoded))

            job.pipeline_job.run(on_segment, progress=on_progress, cancel=job.cancel)
            return

        with job.video_path.open("wb") as video:
            video.write(job.pipeline_job.init_segment)

            def write_segment(encoded: EncodedSegment) -> None:
                video.write(encoded.fragment)
                video.flush()
                post(segment_payload(encoded))

            job.pipeline_job.run(write_segment, progress=on_progress, cancel=job.cancel)
