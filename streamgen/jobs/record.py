"""The job record: what was asked for a job, what has happened to it since, and the
handles one process holds on it.

- `JobSpec` (frozen): what was asked and decided when the job was accepted.
- `JobState` (mutable): what has happened since — status, progress, who runs it.
- `Job`: the two, plus process-local handles (the pipeline job, cancel and done events,
  leases) that are never stored.

`codec` maps `JobSpec` and `JobState` to flat fields and back for every store. A leaf
module: everything in the jobs package (and the routes) reads `Job`; it imports nothing of
theirs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segment_pipeline import CancelEvent, PipelineJob, ResolvedRequest

from ..errors import Conflict, ServiceError, ServiceUnavailable

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class KeyCharge:
    """What the job took from the API key that asked for it (all zero in open mode)."""

    key_id: str | None = None  # the API key that asked for it (None: open mode)
    charged_seconds: float = 0.0  # video seconds taken from that key's daily quota...
    charged_day: int = 0  # ...of this UTC day (days since 1970-01-01)
    cap_seconds: float = 0.0  # an unbounded job completes after this much video (0: setting)


@dataclass(frozen=True)
class JobSpec:
    """What was asked for a job and decided when it was accepted; never changes."""

    id: str
    request: ResolvedRequest = field(repr=False)
    model: str
    priority: int
    request_scoped: bool
    live: bool = False  # a live stream: a viewer plays it as it comes (scheduled by deadline)
    remixed_from: str | None = None  # the job whose settings and seed it took (a remix)
    listed: bool = False  # made through /v1/videos: its list shows it (no other job)
    charge: KeyCharge = KeyCharge()
    traceparent: str = ""  # W3C trace context of the request that made it (`tracing`)
    created_at: float = field(default_factory=time.time)
    max_attempts: int = 1


@dataclass
class JobState:
    """What has happened to a job since it was accepted (mutated on the event loop only)."""

    status: JobStatus = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    segments_done: int = 0
    frames_done: int = 0
    progress: dict[str, Any] | None = None  # segment_index, step, total_steps
    error: ServiceError | None = None
    realtime_factor: float | None = None  # video seconds made / wall seconds running
    estimated_start_at: float | None = None  # while queued: when a worker should take it
    next_seq: int = 0  # the seq of the job's next event
    worker: str | None = None  # who runs it (shared store)
    attempt: int = 0  # runs started (a retried job has 2)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1


@dataclass(eq=False)
class Job:
    """One generation job: its `spec`, its `state`, and this process's handles on it.

    With a shared (Redis) store this is one process's view of the job, its `state`
    refreshed from Redis; `pipeline_job` is set only where the job was opened (the
    submitting replica for its `start` event, the worker that runs it).
    """

    spec: JobSpec
    state: JobState = field(default_factory=JobState)
    video_path: Path | None = None  # the file the worker writes (memory store only)
    pipeline_job: PipelineJob | None = field(default=None, repr=False)
    leases: int = 0  # subscribers in this process
    watchers_elsewhere: int = 0  # replicas with subscribers (Redis; seen by its worker)
    cancel: CancelEvent = field(default_factory=CancelEvent, repr=False)
    cancel_code: str = "cancelled"
    cancel_message: str = "the job was cancelled"
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    orphan_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def watched(self) -> bool:
        """Whether anyone follows the job's events (here or on another replica)."""
        return self.leases > 0 or self.watchers_elsewhere > 0

    def stop(self, code: str, message: str) -> None:
        """Ask the generator to stop within one denoising step; the job then ends with
        `code` (the first reason given wins)."""
        if not self.cancel.is_set():
            self.cancel_code, self.cancel_message = code, message
            self.cancel.set()


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return "job_" + secrets.token_hex(10)


def cancel_error(code: str, message: str) -> ServiceError:
    """The error a cancelled job ends with: 503 when the server shut down, else 409."""
    if code == "shutting_down":
        return ServiceUnavailable(message, code=code)
    return Conflict(message, code=code)
