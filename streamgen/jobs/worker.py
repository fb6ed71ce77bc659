"""The worker: takes jobs from a `JobStore` and runs them side by side, segment by segment.

It holds a set of active jobs (at most `max_concurrent_jobs`). One device thread denoises
one batch at a time; at every segment boundary the scheduling policy (`schedule`) chooses
the next batch: live streams by deadline, offline jobs with what is left, windows of one
shape together in one forward pass. A batch is formed again after each one ends, so jobs
join and leave between segments. Each job's segments are encoded on its own encoder thread
while the next batch is denoised, and published by its own publisher (`active`): no job
and no subscriber waits for another.

Admission: the worker measures what batches cost (`CostModel`) and takes a live stream from
the queue only when, with it, its live streams still need at most `live_utilization` of its
time (and fewer than `max_live_streams` run); otherwise the stream waits in the queue for a
worker with room. It reports its load through the store every `worker_heartbeat_seconds`,
which API replicas turn into estimated start times and `/health` shows.

Cancel: a job's `CancelEvent` tells the worker at once; the job ends (its generated
segments published first) without waiting for the batch it is in, whose other windows go
on. A batch whose every job was cancelled stops within one denoising step.

The same class runs embedded in `streamgen serve` (memory or Redis store) and in
`streamgen worker` processes (Redis store).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

from segment_pipeline import (
    GenerationCancelled,
    GenerationRequest,
    PipelineError,
    ResolvedRequest,
    SegmentCursor,
    SegmentedGenerator,
    SegmentPipeline,
    Window,
    WindowTask,
)

from .. import tracing
from ..background import TaskSet
from ..broker.base import Broker, BrokerError
from ..config import Settings
from ..errors import GenerationFailed, ServiceError, from_pipeline_error
from ..events import ProgressPayload, QueuedPayload
from .active import HAND_BACK, ActiveJob
from .load import StreamLoad, WorkerLoad, estimated_start
from .log import log_tail, publish
from .record import Job, JobStatus
from .schedule import (
    Candidate,
    CostModel,
    LiveLoad,
    WorkKey,
    admits,
    choose_batch,
    seconds_until_done,
    utilization,
)
from .store import Accept, JobStore

log = logging.getLogger(__name__)

MAX_ENCODING = 2  # segments of one job waiting for its encoder before it skips a batch
CLAIM_POLL_S = 1.0  # a waiting claim looks again this often (admission may have changed)
REFUSAL_RETRY_S = 5.0  # after refusing a stream, look at waiting streams again this often
STARVING_S = 10.0  # an offline job that waited this long for a window goes first
REPORT_EVERY_S = 0.25  # load reports after batches, at most this often
QUEUE_NOTICE_MOVE_S = 2.0  # a waiting stream hears again when its estimate moves this much


def work_key(request: ResolvedRequest) -> WorkKey:
    return WorkKey(
        width=request.width,
        height=request.height,
        segment_frames=request.segment_frames,
        num_inference_steps=request.num_inference_steps,
        guided=request.guidance_scale > 1.0,
    )


def live_load(request: ResolvedRequest) -> LiveLoad:
    """What a live stream of `request` needs: one window per segment of new video."""
    new_frames = request.segment_frames
    if request.total_segments != 1:
        new_frames -= request.overlap_frames
    return LiveLoad(work_key(request), max(1, new_frames) / request.fps)


class Worker:
    """Runs jobs from `store`: `start()` on a loop, `await stop(grace_s)` to end."""

    def __init__(
        self,
        settings: Settings,
        pipeline: SegmentPipeline,
        broker: Broker,
        store: JobStore,
        *,
        name: str = "embedded",
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.broker = broker
        self.store = store
        self.name = name
        self.concurrency = settings.max_concurrent_jobs
        if self.concurrency < 1:
            raise ValueError(f"max_concurrent_jobs must be >= 1 (jobs), got {self.concurrency}")
        self.active: dict[str, ActiveJob] = {}
        self.cost = CostModel()
        self.jobs_run = 0
        self._device = ThreadPoolExecutor(1, thread_name_prefix="generator")
        self._order = itertools.count()
        # Set when a job joins, leaves or can go on: one event for each loop that waits.
        self._run_wake = asyncio.Event()
        self._claim_wake = asyncio.Event()
        self._live_refused = False  # a live stream did not fit: take none until a change
        self._refused_at = 0.0
        self._refused_blind = False  # ...and that was before any batch was measured
        self._stopping = False
        self._reported_at = 0.0
        # Batch sizes of the default request to measure while idle, so admission knows what
        # batching buys (size 0: a first, unrecorded run that pays for allocations).
        calibrate = settings.calibrate_when_idle
        self._uncalibrated = list(range(settings.max_batch_size + 1)) if calibrate else []
        if self._uncalibrated and not _batches(pipeline.generator):
            self._uncalibrated = [0, 1]  # no batches to measure: one window is enough
        self._loops: list[asyncio.Task[None]] = []
        self._tasks = TaskSet(log, "worker")

    # Lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start taking and running jobs (on the running loop)."""
        for name, loop in (("claim", self._claim_loop), ("run", self._run_loop),
                           ("report", self._report_loop)):  # fmt: skip
            self._loops.append(asyncio.create_task(loop(), name=f"worker-{name}"))

    async def stop_taking(self) -> None:
        """Take no more jobs (a claim in flight finishes taking its job first)."""
        self._stopping = True
        self.store.stop_claiming()
        if self._loops:
            await asyncio.wait([self._loops[0]], timeout=CLAIM_POLL_S + 5.0)

    async def stop(self, grace_s: float) -> None:
        """Take no more jobs; running ones get `grace_s` seconds to finish. Then, with a
        shared store, they go back to the queue (another worker takes them over and
        continues their logs); with the memory store they are cancelled with an `error`
        event (code ``shutting_down``)."""
        await self.stop_taking()
        running = [a.job for a in self.active.values()]
        if running:
            await asyncio.wait(
                [asyncio.create_task(j.done.wait()) for j in running], timeout=grace_s
            )
        for job in running:
            if not job.state.finished:
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
        await self._tasks.wait(grace_s)
        self._device.shutdown(wait=True)

    # Taking jobs ------------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        backoff_s = CLAIM_POLL_S
        while not self._stopping:
            try:
                await self._claim_once()
                backoff_s = CLAIM_POLL_S
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away past its timeout: keep the worker taking jobs
                log.exception("taking a job failed; trying again in %g s", backoff_s)
                await asyncio.sleep(backoff_s)  # backoff, not a sync wait
                backoff_s = min(2 * backoff_s, 30.0)

    async def _claim_once(self) -> None:
        self._claim_wake.clear()  # what it accepts changes: a waiting claim looks again
        accept = self._accepts()
        if not (accept.live or accept.offline):
            await _wait(self._claim_wake, CLAIM_POLL_S)
            return
        job = await self.store.claim(accept, CLAIM_POLL_S, interrupt=self._claim_wake)
        if job is None:
            return
        fits = not job.spec.live or self._admits(job.spec.request)
        if not fits and not self._stopping and not job.cancel.is_set():
            self._live_refused, self._refused_at = True, time.monotonic()
            self._refused_blind = not self.cost.known
            await self._announce_wait(job)
            # Cancelled meanwhile: not back to the queue; it ends here, at once.
            if not job.cancel.is_set() and await self.store.give_back(job):
                self._tasks.spawn(self._report())
                return
        await self._activate(job)

    def _accepts(self) -> Accept:
        """What this worker would take now. `max_live_streams` of its `max_concurrent_jobs`
        slots stay for live streams when it has more than that, so long offline jobs cannot
        keep every stream waiting."""
        if self._live_refused and time.monotonic() - self._refused_at > REFUSAL_RETRY_S:
            self._live_refused = False  # estimates move: look at waiting streams again
        room = len(self.active) < self.concurrency and not self._stopping
        live = sum(1 for a in self.active.values() if a.job.spec.live)
        # Kept for streams only where that leaves offline jobs a slot (a small worker, like
        # `--concurrency 2`, takes whatever comes).
        spare = self.concurrency - self.settings.max_live_streams
        offline_slots = spare if spare > 0 else self.concurrency
        return Accept(
            live=room and not self._live_refused and live < self.settings.max_live_streams,
            offline=room and len(self.active) - live < offline_slots,
        )

    def _admits(self, request: ResolvedRequest) -> bool:
        running = [live_load(a.job.spec.request) for a in self.active.values() if a.job.spec.live]
        return admits(
            running,
            live_load(request),
            self.cost,
            max_live=self.settings.max_live_streams,
            max_batch=self.settings.max_batch_size,
            utilization_cap=self.settings.live_utilization,
        )

    async def _announce_wait(self, job: Job) -> None:
        """Publish a `queued` event for a live stream this worker has no room for (it holds
        the job's log for now), unless its estimated start barely moved."""
        now = time.time()
        loads = [load for load in await self._loads() if load.worker != self.name]
        start = estimated_start([*loads, self.load()], live=True, position=0, now=now)
        known = job.state.estimated_start_at
        if start is not None and known is not None and abs(start - known) < QUEUE_NOTICE_MOVE_S:
            return
        job.state.estimated_start_at = start
        wait_s = None if start is None else round(start - now, 3)
        try:
            if self.store.shared:
                job.state.next_seq, ended = await log_tail(self.broker, job.id, job.state.last_seq)
                if ended:
                    return
            await publish(self.broker, job, QueuedPayload(0, start, wait_s))
            self.broker.disown(job.id)  # whoever takes it next publishes (and restores) it
            await self.store.record(job)
        except BrokerError as exc:
            log.info("job %s: cannot announce its wait: %s", job.id, exc)

    async def _loads(self) -> list[WorkerLoad]:
        try:
            return await self.store.loads()
        except BrokerError:
            return []

    async def _activate(self, job: Job) -> None:
        active = ActiveJob(job, self.broker, self.store, order=next(self._order))
        self.active[job.id] = active
        self.jobs_run += 1
        loop = asyncio.get_running_loop()
        try:
            if self.store.shared:
                await active.adopt(self.pipeline)
                if active.skip:
                    log.info("job %s: attempt %d resumes after segment %d", job.id,
                             job.state.attempt, active.skip - 1)  # fmt: skip
            active.open_file()
        except GenerationCancelled:
            self._finish(active, *active.cancelled_outcome())
        except ServiceError as exc:
            self._finish(active, "failed", exc)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self._finish(active, "failed", _unexpected(exc))
        else:
            active.on_cancel = lambda: self._cancelled_from_any_thread(loop, active)
            job.cancel.on_set(active.on_cancel)
        self._changed()
        self._tasks.spawn(self._report())

    def _cancelled_from_any_thread(
        self, loop: asyncio.AbstractEventLoop, active: ActiveJob
    ) -> None:
        loop.call_soon_threadsafe(self._on_cancel, active)

    def _on_cancel(self, active: ActiveJob) -> None:
        self._finish(active, *active.cancelled_outcome())

    # Running them -------------------------------------------------------------------------------
    async def _run_loop(self) -> None:
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad turn stop every job on this worker
                log.exception("the worker's run loop failed a turn")
                await asyncio.sleep(CLAIM_POLL_S)  # backoff, not a sync wait

    async def _run_once(self) -> None:
        self._run_wake.clear()
        ready, resume_in = self._ready()
        if ready:
            await self._run_batch(self._choose(ready))
        elif not self.active and self._uncalibrated:
            await self._calibrate(self._uncalibrated.pop(0))
        else:
            await _wait(self._run_wake, resume_in)

    def _ready(self) -> tuple[list[ActiveJob], float | None]:
        """The jobs whose next window can be made now, and (when none can) the seconds
        until a live stream far enough ahead of its viewer is due again (None: no such)."""
        now = time.monotonic()
        buffer_s, ahead_s = (
            self.settings.startup_buffer_seconds,
            self.settings.live_max_ahead_seconds,
        )
        ready: list[ActiveJob] = []
        resume: list[float] = []
        for active in list(self.active.values()):
            failed = active.encode_error()
            if failed is not None:
                self._finish(active, "failed", failed)  # no segment after the failed one
                continue
            if not active.ready(MAX_ENCODING):
                continue
            slack = active.deadline(buffer_s) - now
            if active.job.spec.live and slack > ahead_s and not active.catching_up:
                resume.append(slack - ahead_s)
            else:
                ready.append(active)
        return ready, (min(resume) if resume and not ready else None)

    def _choose(self, ready: list[ActiveJob]) -> list[ActiveJob]:
        now = time.monotonic()
        by_id = {a.job.id: a for a in ready}
        buffer_s = self.settings.startup_buffer_seconds
        candidates = [
            Candidate(
                job_id=a.job.id,
                tier="live" if a.job.spec.live else ("watched" if a.job.watched else "offline"),
                batch_key=self.pipeline.generator.batch_key(a.cursor.next_task()),
                work_key=work_key(a.job.spec.request),
                deadline=a.deadline(buffer_s),
                priority=a.job.spec.priority,
                video_seconds=a.cursor.seconds_emitted,
                order=a.order,
                waited_s=now - a.last_window,
            )
            for a in ready
        ]
        batch = choose_batch(
            candidates,
            now,
            max_batch=self.settings.max_batch_size,
            lead_s=self.settings.live_lead_seconds,
            starving_s=STARVING_S,
        )
        for candidate in batch:
            by_id[candidate.job_id].last_window = now
        return [by_id[c.job_id] for c in batch]

    async def _run_batch(self, batch: list[ActiveJob]) -> None:
        tasks = [a.cursor.next_task() for a in batch]
        for active in batch:
            active.generating = True
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        windows: list[Window] | None = None
        error: ServiceError | None = None
        spans = [
            tracing.start("segment", a.span, {"streamgen.segment_index": a.cursor.index,
                                              "streamgen.batch_size": len(batch)})
            for a in batch
        ]  # fmt: skip
        try:
            windows = await loop.run_in_executor(self._device, self._generate, batch, tasks)
        except GenerationCancelled:
            pass  # every job in it was cancelled; each ends through `_on_cancel`
        except ServiceError as exc:
            error = exc
        except PipelineError as exc:
            error = from_pipeline_error(exc)
        except Exception as exc:
            log.exception("batch of %s failed", [a.job.id for a in batch])
            error = _unexpected(exc)
        finally:
            for active in batch:
                active.generating = False
            for span in spans:  # here, so that a cancelled batch ends them too
                tracing.end(span, error=None if error is None else error.code)
        seconds = time.perf_counter() - started
        if windows is not None:
            self.cost.observe(work_key(batch[0].job.spec.request), len(batch), seconds)
            if self._refused_blind:  # refused before anything was measured: look again
                self._live_refused = self._refused_blind = False
                self._claim_wake.set()
        made: list[Window | None] = list(windows) if windows else [None] * len(batch)
        for active, window, span in zip(batch, made, spans, strict=True):
            if active.ending:
                continue  # cancelled while its window was made: the window is dropped
            if window is None:
                if error is not None:
                    self._finish(active, "failed", error)
                continue
            try:
                self._advance(active, window, seconds, span)
            except Exception as exc:  # a backend's window that cannot be a segment
                log.exception("job %s: segment %d failed", active.job.id, active.cursor.index)
                self._finish(active, "failed", _unexpected(exc))
        self._changed()
        if time.monotonic() - self._reported_at >= REPORT_EVERY_S:
            self._tasks.spawn(self._report())

    async def _calibrate(self, size: int) -> None:
        """Measure one batch of `size` windows of the default request (nothing published;
        size 0: one window, not recorded)."""
        generator = self.pipeline.generator
        record, size = size > 0, max(1, size)
        try:
            requests = [
                generator.resolve(GenerationRequest(prompt="calibration", seed=seed))
                for seed in range(size)
            ]
        except PipelineError as exc:
            log.info("no calibration: the default request does not resolve: %s", exc)
            self._uncalibrated.clear()
            return
        tasks = [SegmentCursor(request).next_task() for request in requests]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        def give_way(item: int, step: int, total_steps: int) -> None:
            if self.active:  # a job arrived: it goes first; measure later
                raise GenerationCancelled()

        try:
            await loop.run_in_executor(self._device, generator.run_batch, tasks, give_way)
        except GenerationCancelled:
            self._uncalibrated.insert(0, size if record else 0)
            return
        except PipelineError as exc:
            log.warning("calibration batch of %d failed: %s", size, exc)
            self._uncalibrated.clear()
            return
        if record:
            self.cost.observe(work_key(requests[0]), size, time.perf_counter() - started)

    def _generate(self, batch: list[ActiveJob], tasks: list[WindowTask]) -> list[Window]:
        """Runs on the device thread: one batch, progress posted per job."""

        def on_step(item: int, step: int, total_steps: int) -> None:
            active, task = batch[item], tasks[item]
            if task.index >= active.skip and not active.ending:
                total = task.request.total_segments
                active.post(ProgressPayload(task.index, step, total_steps, total))
            if item == len(batch) - 1 and all(a.job.cancel.is_set() for a in batch):
                raise GenerationCancelled()

        return self.pipeline.generator.run_batch(tasks, on_step)

    def _advance(
        self, active: ActiveJob, window: Window, seconds: float, span: tracing.Span = None
    ) -> None:
        segment = active.cursor.advance(window, seconds)
        active.encode(segment, self._changed, span)
        active.job.state.realtime_factor = active.realtime_factor()
        request = active.job.spec.request
        limit_s = active.job.spec.charge.cap_seconds or self.settings.max_unbounded_seconds
        endless = request.total_segments is None
        if active.cursor.done or (endless and 0 < limit_s <= active.cursor.seconds_emitted):
            self._finish(active, "completed", None)
        elif 0 < (deadline_s := self.settings.max_job_seconds) <= time.monotonic() - active.started:
            message = f"the job ran over its deadline of {deadline_s:g} s (max_job_seconds)"
            self._finish(active, "failed", GenerationFailed(message, code="deadline_exceeded"))

    def _finish(self, active: ActiveJob, status: JobStatus, error: ServiceError | None) -> None:
        """End `active` (once): it takes no more batches; its log ends after its segments."""
        if active.ending:
            return
        active.ending = True
        self._tasks.spawn(self._wind_up(active, status, error))

    async def _wind_up(
        self, active: ActiveJob, status: JobStatus, error: ServiceError | None
    ) -> None:
        try:
            await active.wind_up(status, error)
        finally:
            self.active.pop(active.job.id, None)
            self._live_refused = False
            self._changed()
            self._claim_wake.set()  # room for one more: a waiting claim looks again
            await self._report()

    def _changed(self) -> None:
        """A job joined, left or can go on: the run loop looks again."""
        self._run_wake.set()

    # Load reports -------------------------------------------------------------------------------
    async def _report_loop(self) -> None:
        while True:
            await self._report()
            await asyncio.sleep(self.settings.worker_heartbeat_seconds)  # the report's period

    async def _report(self) -> None:
        self._reported_at = time.monotonic()
        with contextlib.suppress(Exception):  # best effort: the next report comes soon
            await self.store.report_load(self.load())

    def load(self) -> WorkerLoad:
        """This worker's load now (see `WorkerLoad`)."""
        wall = time.time()
        live = [a for a in self.active.values() if a.job.spec.live]
        accept = self._accepts()
        finishes = [self._seconds_left(a) for a in self.active.values()]
        next_free = min(finishes, default=math.inf)
        return WorkerLoad(
            worker=self.name,
            at=wall,
            live_streams=len(live),
            max_live_streams=self.settings.max_live_streams,
            jobs=len(self.active),
            max_jobs=self.concurrency,
            accepts_live=accept.live,
            accepts_offline=accept.offline,
            next_free_at=wall + next_free if math.isfinite(next_free) else None,
            utilization=utilization(
                [live_load(a.job.spec.request) for a in live],
                self.cost,
                self.settings.max_batch_size,
            ),
            streams=tuple(
                StreamLoad(a.job.id, a.job.spec.live, a.realtime_factor(), a.cursor.seconds_emitted)
                for a in self.active.values()
            ),
        )

    def _seconds_left(self, active: ActiveJob) -> float:
        request = active.job.spec.request
        total = request.total_segments
        remaining = None if total is None else total - active.cursor.index
        group = sum(
            1 for a in self.active.values() if work_key(a.job.spec.request) == work_key(request)
        )
        batch_s = self.cost.estimate(work_key(request), min(group, self.settings.max_batch_size))
        limit_s = active.job.spec.charge.cap_seconds or self.settings.max_unbounded_seconds
        if remaining is None and limit_s <= 0:
            return math.inf  # unbounded, with no cap
        left_s = max(0.0, limit_s - active.cursor.seconds_emitted)
        rate = active.realtime_factor() or 1.0
        return seconds_until_done(remaining, batch_s, left_s / rate)


def _batches(generator: SegmentedGenerator) -> bool:
    """Whether `generator` denoises windows together (its default request's have a key)."""
    try:
        task = SegmentCursor(generator.resolve(GenerationRequest(prompt="calibration"))).next_task()
    except PipelineError:
        return False
    return generator.batch_key(task) is not None


async def _wait(event: asyncio.Event, timeout_s: float | None) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


def _unexpected(exc: Exception) -> ServiceError:
    return GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
