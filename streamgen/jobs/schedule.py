"""The worker's scheduling policy, as pure functions over what it knows (no I/O, no clock of
its own): which jobs' next segments to generate together, what a batch will cost, and
whether one more live stream fits.

- **Cost.** `CostModel` keeps a running mean (EWMA) of the wall seconds one batch of `n`
  windows of one `WorkKey` (size, window length, steps, guidance on/off) takes here, and
  estimates sizes and shapes it has not seen yet: from the same shape's other batch sizes
  (linearly), with one size seen from another shape's batching gain (cost(k) / cost(n)),
  else from another shape scaled by work (pixels x frames x steps x passes).
- **Which batch.** Jobs come in three tiers: live streams (a viewer plays them as they come),
  watched offline jobs (someone follows a `/v1/jobs` job), unwatched offline jobs. A live
  job's deadline is when its viewer's buffer runs out: its start + the video seconds
  delivered - `startup_buffer_s`. The head of the next batch is the live job with the
  earliest deadline (then the watched one), unless every one of them is more than `lead_s`
  ahead of its deadline and offline work waits, which then goes first (priority, then
  least video made: fair shares, so an unbounded job cannot starve the others). The batch
  takes every other ready job with the head's batch key, live first, up to `max_batch`
  (only other due ones when the head is a stream already late: a joining stream's first
  segment is not slowed by a batch of work that could wait). An offline job that has waited
  too long heads the batch whatever is due, so a stream slower than real time cannot
  starve the rest.
- **Admission.** A live stream is admitted when, with it, the live streams need at most
  `utilization` of this worker's time (each stream needs one segment per segment of
  video; streams of one shape are counted batched together, at the batched cost), and
  fewer than `max_live` run: at a cap of 1.0 no admitted stream falls behind its deadlines
  for it. A stream alone is always admitted (it may run slower than real time: `/health`
  shows it), and so is one while nothing was measured.
- **Cost estimates** hold from the first second: the worker measures the default request
  at batch sizes 1 and `max_batch` before it takes jobs (`CostModel.source` says so), so a
  second stream of one shape is costed with the measured batching gain, not as twice one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Tier = Literal["live", "watched", "offline"]


@dataclass(frozen=True)
class WorkKey:
    """The shape of a request's windows, which decides what one costs to denoise."""

    width: int
    height: int
    segment_frames: int  # window length
    num_inference_steps: int
    guided: bool

    @property
    def work(self) -> float:
        """Relative cost of one window: pixels x frames x steps x model passes."""
        passes = 2 if self.guided else 1
        return self.width * self.height * self.segment_frames * self.num_inference_steps * passes


@dataclass(frozen=True)
class Candidate:
    """A job ready for its next window, as the policy sees it (times in seconds, on one
    monotonic clock)."""

    job_id: str
    tier: Tier
    batch_key: Hashable | None  # the backend's: None never batches
    work_key: WorkKey
    deadline: float  # live and watched jobs: when the viewer's buffer runs out
    priority: int = 0
    video_seconds: float = 0.0  # made so far (fair shares among offline jobs)
    order: int = 0  # arrival on this worker (FIFO)
    waited_s: float = 0.0  # since a window of it last went into a batch


CostSource = Literal["none", "startup calibration", "measured"]


@dataclass
class CostModel:
    """Seconds one batch takes, by shape and size: seeded by a calibration before the worker
    takes jobs, corrected by every batch run here."""

    smoothing: float = 0.3  # weight of the newest observation
    _seconds: dict[tuple[WorkKey, int], float] = field(default_factory=dict)
    _ran: int = 0  # batches of jobs observed (not calibration)

    def observe(
        self, key: WorkKey, size: int, seconds: float, *, calibration: bool = False
    ) -> None:
        """A batch of `size` windows of shape `key` took `seconds` (`calibration`: one run to
        measure, not a job's)."""
        old = self._seconds.get((key, size))
        new = seconds if old is None else old + self.smoothing * (seconds - old)
        self._seconds[(key, size)] = new
        if not calibration:
            self._ran += 1

    @property
    def known(self) -> bool:
        return bool(self._seconds)

    @property
    def source(self) -> CostSource:
        """Where the estimates come from: nothing yet, only the startup calibration, or
        batches of jobs run here as well."""
        if not self._seconds:
            return "none"
        return "measured" if self._ran else "startup calibration"

    def estimate(self, key: WorkKey, size: int) -> float | None:
        """Seconds for a batch of `size` windows of `key`; None before anything was run.

        A size not seen on this shape follows this shape's own sizes when it has two;
        with one, the batching gain measured on another shape (cost(k) / cost(n)) scales
        it; a shape never seen is the best-measured shape's cost scaled by work."""
        exact = self._seconds.get((key, size))
        if exact is not None:
            return exact
        curves = self._curves()
        if not curves:
            return None
        own = curves.pop(key, None)
        if own is not None and len(own) >= 2:
            return _along(own, size)
        if own is not None:  # one size here: the batching gain of a shape with more sizes
            n, seconds = own[0]
            curved = [points for points in curves.values() if len(points) >= 2]
            gain = _gain(max(curved, key=len), size, n) if curved else max(1.0, size / n)
            return seconds * gain
        other, points = max(
            curves.items(), key=lambda item: (len(item[1]), -abs(item[0].work - key.work))
        )
        return _along(points, size) * key.work / other.work

    def _curves(self) -> dict[WorkKey, list[tuple[int, float]]]:
        curves: dict[WorkKey, list[tuple[int, float]]] = {}
        for (key, size), seconds in sorted(self._seconds.items(), key=lambda item: item[0][1]):
            curves.setdefault(key, []).append((size, seconds))
        return curves


def _gain(points: list[tuple[int, float]], size: int, base: int) -> float:
    """cost(size) / cost(base) along `points` (two sizes or more): what batching saves."""
    return _along(points, size) / max(1e-9, _along(points, base))


def _along(points: list[tuple[int, float]], size: int) -> float:
    """Linear through the two observed sizes nearest `size` (one point: proportional above
    it, the same below: never cheaper than what was seen)."""
    if len(points) == 1:
        n, seconds = points[0]
        return seconds * max(1.0, size / n)
    below = [p for p in points if p[0] < size]
    above = [p for p in points if p[0] > size]
    if below and above:
        (n0, s0), (n1, s1) = below[-1], above[0]
    elif below:
        (n0, s0), (n1, s1) = points[-2], points[-1]
    else:
        (n0, s0), (n1, s1) = points[0], points[1]
    slope = max(0.0, (s1 - s0) / (n1 - n0))
    return max(min(s0, s1), s0 + slope * (size - n0))


def choose_batch(
    ready: Sequence[Candidate],
    now: float,
    *,
    max_batch: int,
    lead_s: float,
    starving_s: float = math.inf,
) -> list[Candidate]:
    """The jobs whose next windows to generate together (see the module docstring). An
    offline job that has waited `starving_s` seconds goes first whatever is due: a stream
    slower than real time cannot hold every other job back."""
    if not ready:
        return []
    timed = [
        *sorted((c for c in ready if c.tier == "live"), key=_by_deadline),
        *sorted((c for c in ready if c.tier == "watched"), key=_by_deadline),
    ]
    offline = sorted((c for c in ready if c.tier == "offline"), key=_by_share)
    urgent = [c for c in timed if c.deadline - now <= lead_s]
    starving = [c for c in offline if c.waited_s >= starving_s]
    if starving:
        head = max(starving, key=lambda c: c.waited_s)
    else:
        head = urgent[0] if urgent else (offline[0] if offline else timed[0])
    batch = [head]
    if head.batch_key is None:
        return batch
    # A stream already late (one waiting for its first segment) takes only others that are
    # due too: a bigger batch would make it later still.
    late = head.tier != "offline" and head.deadline < now
    company = urgent if late else [*timed, *offline]
    for candidate in company:
        if len(batch) >= max_batch:
            break
        if candidate is not head and candidate.batch_key == head.batch_key:
            batch.append(candidate)
    return batch


def _by_deadline(candidate: Candidate) -> tuple[float, int]:
    return (candidate.deadline, candidate.order)


def _by_share(candidate: Candidate) -> tuple[int, float, int]:
    return (-candidate.priority, candidate.video_seconds, candidate.order)


@dataclass(frozen=True)
class LiveLoad:
    """One live stream's demand: its shape and the seconds of video each segment adds."""

    work_key: WorkKey
    segment_seconds: float


def utilization(streams: Iterable[LiveLoad], cost: CostModel, max_batch: int) -> float | None:
    """The fraction of this worker's time `streams` need to stay at real time (None when
    nothing was measured yet). Streams of one shape are counted as batched together, in
    batches of at most `max_batch`."""
    groups: dict[WorkKey, list[LiveLoad]] = {}
    for stream in streams:
        groups.setdefault(stream.work_key, []).append(stream)
    total = 0.0
    for key, members in groups.items():
        full, rest = divmod(len(members), max_batch)
        seconds = 0.0
        for size, count in ((max_batch, full), (rest, 1 if rest else 0)):
            if count:
                estimate = cost.estimate(key, size)
                if estimate is None:
                    return None
                seconds += count * estimate
        # Every member needs one segment per segment of video (the shortest sets the pace).
        total += seconds / min(m.segment_seconds for m in members)
    return total


def admits(
    running: Sequence[LiveLoad],
    new: LiveLoad,
    cost: CostModel,
    *,
    max_live: int,
    max_batch: int,
    utilization_cap: float,
) -> bool:
    """Whether a worker running the live streams `running` can take `new` as well."""
    if len(running) + 1 > max_live:
        return False
    if not running:
        return True
    needed = utilization([*running, new], cost, max_batch)
    # Nothing measured (calibration off, no batch run yet): no evidence it would not fit.
    return needed is None or needed <= utilization_cap


def seconds_until_done(
    remaining_segments: int | None, batch_seconds: float | None, unbounded_left_s: float
) -> float:
    """A job's time to finish: its remaining segments at the current batch time (an
    unbounded job: until its maximum duration); `math.inf` when unknown."""
    if batch_seconds is None:
        return math.inf
    if remaining_segments is None:
        return unbounded_left_s
    return remaining_segments * batch_seconds
