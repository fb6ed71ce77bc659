"""Running the jobs a worker holds: one device thread denoises one batch at a time; after
each the `Scheduler` chooses the next, so jobs join and leave between segments. Each job's
windows become segments that its own encoder thread encodes while the next batch is
denoised; its own publisher (`active`) publishes them.

Cancel: a job's `CancelEvent` ends it at once (`finish`; its generated segments published
first) without waiting for the batch it is in, whose other windows go on. A batch whose
every job was cancelled stops within one denoising step.

Calibration: before the worker takes jobs (`calibrate_at_start`) the runner measures the
default request at batch sizes 1 and `max_batch_size`, after one unrecorded warm-up window,
so admission knows what a stream costs and what batching buys from the first stream on;
while no job is held it measures the sizes between (`calibrate_when_idle`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from segment_pipeline import (
    GenerationCancelled,
    GenerationRequest,
    PipelineError,
    SegmentCursor,
    SegmentedGenerator,
    SegmentPipeline,
    Window,
    WindowTask,
)

from .. import tracing
from ..background import TaskSet, woken
from ..config import Settings
from ..errors import GenerationFailed, ServiceError, from_pipeline_error
from ..events import ProgressPayload
from .active import ActiveJob, ActiveJobs
from .load import LoadReporter
from .record import JobStatus
from .scheduler import Scheduler

log = logging.getLogger(__name__)

RETRY_TURN_S = 1.0  # after a run-loop turn failed, the next one comes this much later


class Runner:
    """Runs batches of `jobs` as `scheduler` chooses them (`loop`), and ends jobs (`finish`)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: SegmentPipeline,
        jobs: ActiveJobs,
        scheduler: Scheduler,
        reports: LoadReporter,
        tasks: TaskSet,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.jobs = jobs
        self.scheduler = scheduler
        self.reports = reports
        self._tasks = tasks
        self._device = ThreadPoolExecutor(1, thread_name_prefix="generator")
        # Batch sizes of the default request to measure (size 0: a first, unrecorded run
        # that pays for allocations): the ends of the curve first, at start; the rest idle.
        most = settings.max_batch_size if _batches(pipeline.generator) else 1
        self._at_start = sorted({0, 1, most}) if settings.calibrate_at_start else []
        rest = [n for n in range(most + 1) if n not in self._at_start]
        self._uncalibrated = rest if settings.calibrate_when_idle else []

    async def loop(self) -> None:
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad turn stop every job on this worker
                log.exception("the worker's run loop failed a turn")
                await asyncio.sleep(RETRY_TURN_S)  # backoff, not a sync wait

    async def calibrate(self) -> None:
        """Measure the batch sizes due at start (before any job is taken; seconds: one
        warm-up window and a batch of 1 and of `max_batch_size`)."""
        try:
            while self._at_start:
                await self._calibrate(self._at_start.pop(0), self._at_start)
        except Exception:  # the worker still runs jobs; admission learns from them instead
            log.exception("the startup calibration failed")

    def close(self) -> None:
        """Let the device thread go (after the loop ended)."""
        self._device.shutdown(wait=True)

    async def _run_once(self) -> None:
        self.jobs.run_wake.clear()
        for active in self.jobs:
            failed = active.encode_error()
            if failed is not None:
                self.finish(active, "failed", failed)  # no segment after the failed one
        ready, resume_in = self.scheduler.ready(self.jobs)
        if ready:
            await self._run_batch(self.scheduler.choose(ready))
        elif not self.jobs and self._uncalibrated:
            await self._calibrate(self._uncalibrated.pop(0), self._uncalibrated)
        else:
            await woken(self.jobs.run_wake, resume_in)

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
            pass  # every job in it was cancelled; each ends through its cancel callback
        except ServiceError as exc:
            error = exc
        except PipelineError as exc:
            error = from_pipeline_error(exc)
        except Exception as exc:
            log.exception("batch of %s failed", [a.job.id for a in batch])
            error = unexpected(exc)
        finally:
            for active in batch:
                active.generating = False
            for span in spans:  # here, so that a cancelled batch ends them too
                tracing.end(span, error=None if error is None else error.code)
        seconds = time.perf_counter() - started
        if windows is not None:
            self.scheduler.observe(batch[0].job.spec.request, len(batch), seconds)
        made: list[Window | None] = list(windows) if windows else [None] * len(batch)
        for active, window, span in zip(batch, made, spans, strict=True):
            if active.ending:
                continue  # cancelled while its window was made: the window is dropped
            if window is None:
                if error is not None:
                    self.finish(active, "failed", error)
                continue
            try:
                self._advance(active, window, seconds, span)
            except Exception as exc:  # a backend's window that cannot be a segment
                log.exception("job %s: segment %d failed", active.job.id, active.cursor.index)
                self.finish(active, "failed", unexpected(exc))
        self.jobs.changed()
        self.reports.after_batch()

    async def _calibrate(self, size: int, todo: list[int]) -> None:
        """Measure one batch of `size` windows of the default request (nothing published;
        size 0: one window, not recorded). A job arriving meanwhile goes first: the size
        goes back to `todo`; a failure clears `todo`."""
        generator = self.pipeline.generator
        record, size = size > 0, max(1, size)
        try:
            requests = [
                generator.resolve(GenerationRequest(prompt="calibration", seed=seed))
                for seed in range(size)
            ]
        except PipelineError as exc:
            log.info("no calibration: the default request does not resolve: %s", exc)
            todo.clear()
            return
        tasks = [SegmentCursor(request).next_task() for request in requests]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        def give_way(item: int, step: int, total_steps: int) -> None:
            if self.jobs:  # a job arrived: it goes first; measure later
                raise GenerationCancelled()

        try:
            await loop.run_in_executor(self._device, generator.run_batch, tasks, give_way)
        except GenerationCancelled:
            todo.insert(0, size if record else 0)
            return
        except PipelineError as exc:
            log.warning("calibration batch of %d failed: %s", size, exc)
            todo.clear()
            return
        if record:
            seconds = time.perf_counter() - started
            self.scheduler.observe(requests[0], size, seconds, calibration=True)

    def _generate(self, batch: list[ActiveJob], tasks: list[WindowTask]) -> list[Window]:
        """Runs on the device thread: one batch, progress posted per job."""

        def on_step(item: int, step: int, total_steps: int) -> None:
            active, task = batch[item], tasks[item]
            if task.index >= active.skip and not active.ending:
                total = task.request.total_segments
                active.post(ProgressPayload(task.index, step, total_steps, total))
            if item == len(batch) - 1 and all(a.job.cancel.is_set() for a in batch):
                raise GenerationCancelled()

        # One batch is of one model (its batch key says so): it runs on that model's generator.
        return batch[0].pipeline_job.generator.run_batch(tasks, on_step)

    def _advance(
        self, active: ActiveJob, window: Window, seconds: float, span: tracing.Span = None
    ) -> None:
        segment = active.cursor.advance(window, seconds)
        active.encode(segment, self.jobs.changed, span)
        active.job.state.realtime_factor = active.realtime_factor()
        request = active.job.spec.request
        limit_s = active.job.spec.charge.cap_seconds or self.settings.max_unbounded_seconds
        endless = request.total_segments is None
        if active.cursor.done or (endless and 0 < limit_s <= active.cursor.seconds_emitted):
            self.finish(active, "completed", None)
        elif 0 < (deadline_s := self.settings.max_job_seconds) <= time.monotonic() - active.started:
            message = f"the job ran over its deadline of {deadline_s:g} s (max_job_seconds)"
            self.finish(active, "failed", GenerationFailed(message, code="deadline_exceeded"))

    def finish(self, active: ActiveJob, status: JobStatus, error: ServiceError | None) -> None:
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
            self.jobs.remove(active)
            self.scheduler.job_left()
            self.jobs.changed()
            self.jobs.claim_wake.set()  # room for one more: a waiting claim looks again
            await self.reports.report()


def _batches(generator: SegmentedGenerator) -> bool:
    """Whether `generator` denoises windows together (its default request's have a key)."""
    try:
        task = SegmentCursor(generator.resolve(GenerationRequest(prompt="calibration"))).next_task()
    except PipelineError:
        return False
    return generator.batch_key(task) is not None


def unexpected(exc: Exception) -> ServiceError:
    """An exception no layer mapped, as the job's error."""
    return GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
