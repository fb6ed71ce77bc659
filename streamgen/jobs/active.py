"""One job a worker holds (`ActiveJob`): where its segment loop stands, its encoder thread,
the file it writes (memory store), its event publisher and its clock; and the set of them
(`ActiveJobs`) that the worker's claim and run loops share.

Threads hand it events with `post` (``loop.call_soon_threadsafe``): the generator thread
its progress, its encoder thread its segments, in the order they happen; its publisher task
gives them sequence numbers and publishes them on the loop, records what changed in the
store, and ends the log with the terminal event (or hands the job back to the queue).

With Redis, taking a job means adopting its log (`adopt`): the worker reads the job's
backlog (its `start` event, and on a retry what the first attempt published), checks that
its own encoder makes the same init segment, and continues the log where it stands. A
retried job regenerates from the start with the same seed (generators are deterministic
for a seed) and publishes only what was not published before (`skip`): progress and
segments of later segments, so the log has no gap and no double.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from typing import BinaryIO

from segment_pipeline import (
    EncodedSegment,
    GenerationCancelled,
    PipelineError,
    PipelineJob,
    Segment,
    SegmentCursor,
    SegmentPipeline,
)

from .. import tracing
from ..broker.base import Broker, BrokerError
from ..errors import GenerationFailed, ServiceError, from_pipeline_error
from ..events import ErrorPayload, Payload, SegmentPayload, StartPayload, Terminal, payload_of
from ..observability import live_segment
from .log import complete_payload, publish, publish_terminal, segment_payload
from .pace import ViewerClock
from .record import Job, JobStatus, cancel_error
from .store import JobStore

log = logging.getLogger(__name__)

HAND_BACK = "handed_back"  # cancel code: stop generating and requeue the job (shutdown)
End = tuple[JobStatus, ServiceError | None]


class ActiveJob:
    """A job running on this worker (see the module docstring). `order` is its arrival
    here; times are `time.monotonic()` seconds."""

    def __init__(
        self, job: Job, broker: Broker, store: JobStore, *, order: int, viewer_buffer_s: float
    ) -> None:
        self.job = job
        self.broker = broker
        self.store = store
        self.order = order
        self.cursor = SegmentCursor(job.spec.request)
        self.started = time.monotonic()
        self.skip = 0  # segments an earlier attempt published
        self.generating = False  # its next window is in the batch being denoised
        self.last_window = time.monotonic()  # when a window of it last went into a batch
        self.ending = False  # its end is decided; nothing more is generated
        self._loop = asyncio.get_running_loop()
        self._outbox: asyncio.Queue[Payload | End] = asyncio.Queue()
        self._publisher = asyncio.create_task(self._publish_all(), name=f"publish-{job.id}")
        self._video: BinaryIO | None = None
        self._encode_error: ServiceError | None = None  # set on the encoder thread, once
        self.on_cancel: Callable[[], None] | None = None  # its CancelEvent callback
        # A live stream's viewer, as its published segments treat it (deadline misses, jitter)
        self.viewer = ViewerClock(job.spec.created_at, viewer_buffer_s)
        attributes: tracing.Attributes = {
            "streamgen.job_id": job.id, "streamgen.attempt": job.state.attempt,
            "streamgen.live": job.spec.live,
        }  # fmt: skip
        self.span = tracing.start("job", job.spec.traceparent or None, attributes)

    @property
    def pipeline_job(self) -> PipelineJob:
        assert self.job.pipeline_job is not None, "opened at submit, or by adopt"
        return self.job.pipeline_job

    def batch_key(self) -> Hashable | None:
        """Its next window's batch key: its model's, with the model's id, so that windows
        of two models never share a batch (None: it is denoised alone)."""
        key = self.pipeline_job.generator.batch_key(self.cursor.next_task())
        return None if key is None else (self.job.spec.model, key)

    # Where it stands ------------------------------------------------------------------------
    def ready(self, max_encoding: int) -> bool:
        """Whether its next window can be generated now (taken over and opened, its encoder
        not too far behind)."""
        return (
            not self.ending
            and not self.generating
            and self.job.pipeline_job is not None  # a Redis job is opened by `adopt`
            and not self.cursor.done
            and not self.job.cancel.is_set()
            and self.pipeline_job.encoding < max_encoding
        )

    @property
    def catching_up(self) -> bool:
        """A retried job regenerating segments an earlier attempt already published."""
        return self.cursor.index < self.skip

    def deadline(self, startup_buffer_s: float) -> float:
        """When its viewer's buffer runs out, were the viewer to play from its start (a
        job catching up is due at once: its viewer waits for what comes after)."""
        if self.catching_up:
            return -math.inf
        return self.started + self.cursor.seconds_emitted - startup_buffer_s

    def realtime_factor(self) -> float | None:
        """Video seconds made / wall seconds since it started here."""
        if self.cursor.emitted == 0:
            return None
        return self.cursor.seconds_emitted / max(1e-6, time.monotonic() - self.started)

    def encode_error(self) -> ServiceError | None:
        """The error of the first encode that failed, if one did."""
        return self._encode_error

    # Taking it over (shared stores) --------------------------------------------------------
    async def adopt(self, pipeline: SegmentPipeline) -> None:
        """Take over the job's log: sets `skip` to the segments already published (by an
        earlier attempt), which this attempt must not publish again."""
        job = self.job
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
        later = [
            payload_of(e) for e in events if e.seq > job.state.last_seq and e.type == "segment"
        ]
        job.state.segments_done += len(later)
        job.state.frames_done += sum(p.num_frames for p in later if isinstance(p, SegmentPayload))
        job.state.next_seq = events[-1].seq + 1
        self.broker.adopt(events)  # it can now restore the job's backlog if Redis loses it
        try:
            job.pipeline_job = await asyncio.to_thread(pipeline.open, job.spec.request)
        except PipelineError as exc:
            raise from_pipeline_error(exc) from exc
        if job.pipeline_job.init_segment != start.init_segment:
            raise GenerationFailed(
                "this worker's encoder makes a different init segment than the replica that "
                "accepted the job: give replicas and workers the same encoder settings "
                "(encoder_preset, encoder_crf) and library versions",
                code="encoder_mismatch",
            )
        self.skip = job.state.segments_done

    def open_file(self) -> None:
        """Start the job's MP4 on this machine (memory store): the init segment."""
        if self.job.video_path is not None:
            self._video = self.job.video_path.open("wb")
            self._video.write(self.pipeline_job.init_segment)

    # Its events ----------------------------------------------------------------------------
    def post(self, payload: Payload) -> None:
        """Hand `payload` to the publisher (from any thread; order is kept)."""
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, payload)

    def encode(self, segment: Segment, done: Callable[[], None], span: tracing.Span = None) -> None:
        """Encode `segment` on the job's encoder thread, then write and publish it; `done`
        is called on the loop once it is. After a failed encode nothing more is published
        (the log has no gap): the worker ends the job with the error. `span`: the
        segment's, parent of the encode's."""
        encode_span = tracing.start("encode", span, {"streamgen.segment_index": segment.index})

        def on_encoded(encoded: EncodedSegment) -> None:
            if self._encode_error is not None:
                return
            if self._video is not None:
                self._video.write(encoded.fragment)
                self._video.flush()
            if encoded.index >= self.skip:
                self.post(segment_payload(encoded))

        def on_done(future: Future[None]) -> None:  # on the encoder thread, before the next
            exc = future.exception()
            if exc is not None and self._encode_error is None:
                self._encode_error = (
                    from_pipeline_error(exc)
                    if isinstance(exc, PipelineError)
                    else GenerationFailed(f"encoding failed: {type(exc).__name__}: {exc}")
                )
            tracing.end(encode_span, error=None if exc is None else str(exc))
            self._loop.call_soon_threadsafe(done)

        self.pipeline_job.encode(segment, on_encoded).add_done_callback(on_done)

    async def wind_up(self, status: JobStatus, error: ServiceError | None) -> None:
        """End the job: its segments already generated are encoded and published first,
        then its terminal event (or, handed back, nothing). Returns once published."""
        try:
            if self.job.pipeline_job is not None:
                await asyncio.to_thread(self.pipeline_job.close)
            failed = self.encode_error()
            if failed is not None and status != "failed":
                status, error = "failed", failed
            if self._video is not None:
                video, self._video = self._video, None
                video.close()
        except Exception as exc:  # the end must be published whatever went wrong here
            log.exception("job %s: winding up failed", self.job.id)
            status, error = "failed", GenerationFailed(f"winding up failed: {exc}")
        finally:
            # After every payload the threads posted (call_soon_threadsafe keeps order).
            self._outbox.put_nowait((status, error))
        await self._publisher
        self._release()

    def _release(self) -> None:
        """Let go of what a finished job no longer needs (kept with the job record)."""
        if self.on_cancel is not None:
            self.job.cancel.forget(self.on_cancel)
            self.on_cancel = None
        self.cursor.release()

    def cancelled_outcome(self) -> End:
        """How a cancelled job ends: a cancel is ``cancelled``; losing the broker or the job
        itself is ``failed``."""
        job = self.job
        error = cancel_error(job.cancel_code, job.cancel_message)
        if job.cancel_code in ("broker_error", "worker_lost"):
            return "failed", error
        return "cancelled", error

    async def _publish_all(self) -> None:
        job = self.job
        while True:
            payload = await self._outbox.get()
            if isinstance(payload, tuple):  # the end: (status, error)
                await self._end(*payload)
                return
            try:
                if isinstance(payload, SegmentPayload):
                    with tracing.current("publish", self.span, {"streamgen.event": "segment"}):
                        await publish(self.broker, job, payload)
                    if job.spec.live:
                        self._viewer_got(payload)
                else:
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

    def _viewer_got(self, payload: SegmentPayload) -> None:
        first = self.viewer.first_at is None
        timing = self.viewer.arrived(time.time(), payload.start_time, payload.end_time)
        live_segment(timing, self.viewer.first_segment_s if first else None)

    async def _end(self, status: JobStatus, error: ServiceError | None) -> None:
        """Record the outcome, then publish the terminal event (state first, so whoever
        sees the event sees the final state). The job's span ends whatever happens."""
        outcome: tracing.Attributes = {"streamgen.status": "interrupted"}
        try:
            outcome = await self._record_end(status, error)
        finally:
            code = None if error is None else error.code
            tracing.end(self.span, outcome, error=code if outcome.get("streamgen.status") not in
                        ("handed_back", "taken") else None)  # fmt: skip

    async def _record_end(
        self, status: JobStatus, error: ServiceError | None
    ) -> tracing.Attributes:
        job = self.job
        if job.cancel_code == HAND_BACK and status == "cancelled":
            await self.store.give_back(job)
            log.info("job %s: handed back to the queue for another worker", job.id)
            job.done.set()
            return {"streamgen.status": "handed_back"}
        job.state.status, job.state.error, job.state.finished_at = status, error, time.time()
        terminal: Terminal = complete_payload(job) if error is None else ErrorPayload.of(error)
        if not await self.store.finish(job, terminal):
            log.warning("job %s: not publishing its end: another worker or reaper owns it",
                        job.id)  # fmt: skip
            job.done.set()
            return {"streamgen.status": "taken"}
        with tracing.current("publish", self.span, {"streamgen.event": terminal.type}):
            await publish_terminal(self.broker, self.store, job, terminal)
        return {"streamgen.status": status, "streamgen.segments": job.state.segments_done}


class ActiveJobs:
    """The jobs a worker holds, by id, and the signals between the loops that share them:
    `run_wake` (a job joined, left or can go on: the run loop looks again) and `claim_wake`
    (room or admission changed: a waiting claim looks again). `stopping`: the worker takes
    no more jobs."""

    def __init__(self) -> None:
        self._by_id: dict[str, ActiveJob] = {}
        self._order = itertools.count()
        self.run_wake = asyncio.Event()
        self.claim_wake = asyncio.Event()
        self.stopping = False

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ActiveJob]:
        return iter(list(self._by_id.values()))  # a copy: jobs leave while it is walked

    @property
    def live(self) -> list[ActiveJob]:
        return [active for active in self if active.job.spec.live]

    def add(self, job: Job, broker: Broker, store: JobStore, viewer_buffer_s: float) -> ActiveJob:
        """Hold `job` (on the running loop), in the order jobs arrive here; a live stream's
        viewer starts playing `viewer_buffer_s` after its first segment."""
        order = next(self._order)
        active = ActiveJob(job, broker, store, order=order, viewer_buffer_s=viewer_buffer_s)
        self._by_id[job.id] = active
        return active

    def remove(self, active: ActiveJob) -> None:
        self._by_id.pop(active.job.id, None)

    def changed(self) -> None:
        """A job joined, left or can go on: the run loop looks again."""
        self.run_wake.set()
