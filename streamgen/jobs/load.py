"""What a worker reports of its load, through the job store, to whoever asks: API replicas
(estimated start times, `Retry-After`) and `/health` (running streams, their real-time
factors). One report per worker, replaced every heartbeat; a report older than
`worker_dead_after_seconds` is ignored. `LoadReporter` is how a worker sends its reports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..background import TaskSet
from .schedule import CostSource

REPORT_EVERY_S = 0.25  # load reports after batches, at most this often


@dataclass(frozen=True)
class StreamLoad:
    """One running job. `realtime_factor` is video seconds made / wall seconds running
    (None before its first segment); a live stream's viewer: its first-segment time, the
    share of its segments that missed their deadline, its arrival jitter (seconds)."""

    job_id: str
    live: bool
    realtime_factor: float | None
    video_seconds: float
    # A live stream's viewer (`pace.ViewerClock`; None: not live, or no segment yet)
    first_segment_seconds: float | None = None
    deadline_miss_rate: float | None = None
    jitter_seconds: float | None = None


@dataclass(frozen=True)
class WorkerLoad:
    """A worker's load at `at` (Unix seconds). `accepts_live` / `accepts_offline`: whether
    it would take another job of that kind now; `next_free_at`: when its earliest running
    job should end (Unix seconds; None when unknown). `utilization` is the share of its time
    its live streams need (None before anything was measured); `cost_source` where the
    batch costs behind it come from ("none", "startup calibration", "measured")."""

    worker: str
    at: float
    live_streams: int
    max_live_streams: int
    jobs: int
    max_jobs: int
    accepts_live: bool
    accepts_offline: bool
    next_free_at: float | None
    utilization: float | None
    streams: tuple[StreamLoad, ...] = ()
    cost_source: CostSource = "none"  # where its batch costs come from (`CostModel.source`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> WorkerLoad:
        streams = tuple(StreamLoad(**stream) for stream in fields.get("streams", ()))
        return cls(**{**fields, "streams": streams})


def estimated_start(
    loads: list[WorkerLoad], *, live: bool, position: int, now: float
) -> float | None:
    """When a job of this kind that has `position` jobs waiting before it should start
    (Unix seconds): the `position`-th earliest time a worker has room; None when no worker
    reports (or none ever frees up)."""
    slots: list[float] = []
    for load in loads:
        if load.accepts_live if live else load.accepts_offline:
            slots.append(now)
        elif load.next_free_at is not None:
            slots.append(max(now, load.next_free_at))
    if not slots:
        return None
    slots.sort()
    return slots[min(position, len(slots) - 1)]


class LoadReporter:
    """Sends a worker's load (`measure()`) with `send` (the store's `report_load`): every
    `period_s` seconds (`loop`, the heartbeat), at once when a job joins or leaves
    (`report`, `report_soon`), and after batches at most every `REPORT_EVERY_S`
    (`after_batch`). Best effort: a report that fails is replaced by the next one."""

    def __init__(
        self,
        measure: Callable[[], WorkerLoad],
        send: Callable[[WorkerLoad], Awaitable[None]],
        tasks: TaskSet,
        period_s: float,
    ) -> None:
        self._measure = measure
        self._send = send
        self._tasks = tasks
        self._period_s = period_s
        self._reported_at = 0.0  # time.monotonic()

    async def report(self) -> None:
        self._reported_at = time.monotonic()
        with contextlib.suppress(Exception):  # best effort: the next report comes soon
            await self._send(self._measure())

    def report_soon(self) -> None:
        """Report in the background (on the running loop)."""
        self._tasks.spawn(self.report())

    def after_batch(self) -> None:
        if time.monotonic() - self._reported_at >= REPORT_EVERY_S:
            self.report_soon()

    async def loop(self) -> None:
        while True:
            await self.report()
            await asyncio.sleep(self._period_s)  # the report's period
