"""The worker's scheduling: `schedule`'s pure policy applied to the jobs it holds, with the
state the policy needs kept from one decision to the next (the `CostModel` it learns from
the batches run here; whether a live stream was just refused).

`Scheduler` is the one place the worker's loops ask: the claim loop what to take
(`accepts`, `admits`; `refused` when a stream did not fit), the run loop which jobs can go
next (`ready`, `choose`) and what one batch cost (`observe`), the reports what the load is
(`load`). It does no I/O and changes no job (except when a job last got a window), so a
different admission or cost model replaces this class and `schedule`, not the loops.

Admission: a live stream is taken from the queue only when, with it, the worker's live
streams still need at most `live_utilization` of its time at the batched cost (and fewer
than `max_live_streams` run); otherwise the stream waits in the queue for a worker with
room. The cost model is seeded before the worker takes jobs (`calibrate`), so this holds
from the first stream on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from segment_pipeline import ResolvedRequest, SegmentedGenerator

from ..config import Settings
from .active import ActiveJob
from .load import StreamLoad, WorkerLoad
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
from .store import Accept

MAX_ENCODING = 2  # segments of one job waiting for its encoder before it skips a batch
REFUSAL_RETRY_S = 5.0  # after refusing a stream, look at waiting streams again this often
STARVING_S = 10.0  # an offline job that waited this long for a window goes first


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


class Scheduler:
    """The scheduling decisions of the worker `name` (see the module docstring). Times are
    `time.monotonic()` seconds unless named Unix."""

    def __init__(self, settings: Settings, generator: SegmentedGenerator, name: str) -> None:
        self.settings = settings
        self.generator = generator
        self.name = name
        self.concurrency = settings.max_concurrent_jobs
        if self.concurrency < 1:
            raise ValueError(f"max_concurrent_jobs must be >= 1 (jobs), got {self.concurrency}")
        self.cost = CostModel()
        self._live_refused = False  # a live stream did not fit: take none until a change
        self._refused_at = 0.0

    # What to take -----------------------------------------------------------------------------
    def accepts(self, jobs: Iterable[ActiveJob], *, stopping: bool) -> Accept:
        """What the worker holding `jobs` would take now. `max_live_streams` of its
        `max_concurrent_jobs` slots stay for live streams when it has more than that, so
        long offline jobs cannot keep every stream waiting."""
        if self._live_refused and time.monotonic() - self._refused_at > REFUSAL_RETRY_S:
            self._live_refused = False  # estimates move: look at waiting streams again
        held = list(jobs)
        room = len(held) < self.concurrency and not stopping
        live = sum(1 for a in held if a.job.spec.live)
        # Kept for streams only where that leaves offline jobs a slot (a small worker, like
        # `--concurrency 2`, takes whatever comes).
        spare = self.concurrency - self.settings.max_live_streams
        offline_slots = spare if spare > 0 else self.concurrency
        return Accept(
            live=room and not self._live_refused and live < self.settings.max_live_streams,
            offline=room and len(held) - live < offline_slots,
        )

    def admits(self, jobs: Iterable[ActiveJob], request: ResolvedRequest) -> bool:
        """Whether a live stream of `request` fits beside the live streams among `jobs`."""
        running = [live_load(a.job.spec.request) for a in jobs if a.job.spec.live]
        return admits(
            running,
            live_load(request),
            self.cost,
            max_live=self.settings.max_live_streams,
            max_batch=self.settings.max_batch_size,
            utilization_cap=self.settings.live_utilization,
        )

    def refused(self) -> None:
        """A live stream did not fit: take no stream until a job leaves or `REFUSAL_RETRY_S`
        pass."""
        self._live_refused, self._refused_at = True, time.monotonic()

    def job_left(self) -> None:
        """A job ended here: there may be room for a waiting stream."""
        self._live_refused = False

    def observe(
        self, request: ResolvedRequest, size: int, seconds: float, *, calibration: bool = False
    ) -> None:
        """A batch of `size` windows of `request`'s shape took `seconds` (`calibration`: a
        run to measure, not a job's)."""
        self.cost.observe(work_key(request), size, seconds, calibration=calibration)

    # What to run ------------------------------------------------------------------------------
    def ready(self, jobs: Iterable[ActiveJob]) -> tuple[list[ActiveJob], float | None]:
        """The jobs whose next window can be made now, and (when none can) the seconds
        until a live stream far enough ahead of its viewer is due again (None: no such)."""
        now = time.monotonic()
        buffer_s, ahead_s = (
            self.settings.startup_buffer_seconds,
            self.settings.live_max_ahead_seconds,
        )
        ready: list[ActiveJob] = []
        resume: list[float] = []
        for active in jobs:
            if not active.ready(MAX_ENCODING):
                continue
            slack = active.deadline(buffer_s) - now
            if active.job.spec.live and slack > ahead_s and not active.catching_up:
                resume.append(slack - ahead_s)
            else:
                ready.append(active)
        return ready, (min(resume) if resume and not ready else None)

    def choose(self, ready: list[ActiveJob]) -> list[ActiveJob]:
        """The batch to generate next, from `ready` (not empty); each chosen job's
        `last_window` becomes now."""
        now = time.monotonic()
        by_id = {a.job.id: a for a in ready}
        buffer_s = self.settings.startup_buffer_seconds
        candidates = [
            Candidate(
                job_id=a.job.id,
                tier="live" if a.job.spec.live else ("watched" if a.job.watched else "offline"),
                batch_key=a.batch_key(),
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

    # What to report ---------------------------------------------------------------------------
    def load(self, jobs: Iterable[ActiveJob], *, stopping: bool) -> WorkerLoad:
        """The load of the worker holding `jobs`, now (see `WorkerLoad`)."""
        wall = time.time()
        held = list(jobs)
        live = [a for a in held if a.job.spec.live]
        accept = self.accepts(held, stopping=stopping)
        finishes = [self._seconds_left(a, held) for a in held]
        next_free = min(finishes, default=math.inf)
        return WorkerLoad(
            worker=self.name,
            at=wall,
            live_streams=len(live),
            max_live_streams=self.settings.max_live_streams,
            jobs=len(held),
            max_jobs=self.concurrency,
            accepts_live=accept.live,
            accepts_offline=accept.offline,
            next_free_at=wall + next_free if math.isfinite(next_free) else None,
            cost_source=self.cost.source,
            utilization=utilization(
                [live_load(a.job.spec.request) for a in live],
                self.cost,
                self.settings.max_batch_size,
            ),
            streams=tuple(_stream_load(a) for a in held),
        )

    def _seconds_left(self, active: ActiveJob, held: list[ActiveJob]) -> float:
        request = active.job.spec.request
        total = request.total_segments
        remaining = None if total is None else total - active.cursor.index
        group = sum(1 for a in held if work_key(a.job.spec.request) == work_key(request))
        batch_s = self.cost.estimate(work_key(request), min(group, self.settings.max_batch_size))
        limit_s = active.job.spec.charge.cap_seconds or self.settings.max_unbounded_seconds
        if remaining is None and limit_s <= 0:
            return math.inf  # unbounded, with no cap
        left_s = max(0.0, limit_s - active.cursor.seconds_emitted)
        rate = active.realtime_factor() or 1.0
        done_s = seconds_until_done(remaining, batch_s, left_s / rate)
        if active.generating and math.isfinite(done_s):  # part of its window is made
            done_s = max(0.0, done_s - (time.monotonic() - active.last_window))
        if active.job.spec.live and request.total_segments is not None:
            # A stream far ahead of its viewer waits: it ends no sooner than its video
            # plays out, less the lead it may keep.
            video_s = request.total_segments * live_load(request).segment_seconds
            paced_at = active.started + video_s - self.settings.live_max_ahead_seconds
            done_s = max(done_s, paced_at - self.settings.startup_buffer_seconds - time.monotonic())
        return done_s


def _stream_load(active: ActiveJob) -> StreamLoad:
    viewer = active.viewer
    live = active.job.spec.live
    return StreamLoad(
        active.job.id,
        live,
        active.realtime_factor(),
        active.cursor.seconds_emitted,
        first_segment_seconds=viewer.first_segment_s if live else None,
        deadline_miss_rate=viewer.miss_rate if live else None,
        jitter_seconds=viewer.jitter_s if live else None,
    )
