"""What a worker reports of its load, through the job store, to whoever asks: API replicas
(estimated start times, `Retry-After`) and `/health` (running streams, their real-time
factors). One report per worker, replaced every heartbeat; a report older than
`worker_dead_after_seconds` is ignored."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StreamLoad:
    """One running job. `realtime_factor` is video seconds made / wall seconds running
    (None before its first segment)."""

    job_id: str
    live: bool
    realtime_factor: float | None
    video_seconds: float


@dataclass(frozen=True)
class WorkerLoad:
    """A worker's load at `at` (Unix seconds). `accepts_live` / `accepts_offline`: whether
    it would take another job of that kind now; `next_free_at`: when its earliest running
    job should end (Unix seconds; None when unknown). `utilization` is the share of its time
    its live streams need (None before anything was measured)."""

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
