"""Where jobs live: their state, the queue, cancel delivery and subscriber leases.

`JobStore` is the seam between `JobManager` (accept, look up, cancel) / `Worker` (run) and
the place jobs are kept:

- `MemoryJobStore`: one process (the embedded default). Jobs are `Job` objects in a dict,
  the queue an `asyncio.PriorityQueue`; exactly the single-process behaviour.
- `RedisJobStore`: every API replica and every `streamgen worker` on one Redis, so any
  replica answers for any job and workers anywhere run them. See its docstring.

The order of writes is the same in both: a job's state is final before its terminal event
is published ("whoever sees the event sees the final state"), and a job is settled (its
`done` set, in Redis: no longer anyone's to publish) after.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgpack
import numpy as np
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from segment_pipeline import ResolvedRequest

from .broker import make_broker
from .broker.base import Broker, BrokerClosed, BrokerUnavailable, Event, OutOfOrderEvent
from .config import Settings
from .errors import (
    Conflict,
    GenerationFailed,
    InvalidParameter,
    JobNotFound,
    ServiceError,
    ServiceUnavailable,
)
from .jobs import FINISHED, Job, cancel_error, error_data, publish_terminal, start_data

log = logging.getLogger(__name__)

CancelOutcome = Literal["queued", "running", "finished"]
"""What `cancel` found: a queued job (now cancelled: publish its terminal event), a running
one (its worker was asked to stop), or a finished one (nothing done)."""

T = TypeVar("T")
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class JobStore(ABC):
    """Jobs' state, queue, cancel delivery and leases (see the module docstring)."""

    shared: bool = False
    """True when other processes see the same jobs (Redis)."""

    closed: bool = False

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Connect (called once before use)."""

    async def close(self) -> None:
        self.closed = True

    # The API side -------------------------------------------------------------------------
    @abstractmethod
    async def create(self, job: Job) -> None:
        """Record a new queued job (not yet takeable: `enqueue` after its `start` event)."""

    @abstractmethod
    async def discard(self, job: Job) -> None:
        """Forget a job whose `start` event could not be published."""

    @abstractmethod
    async def enqueue(self, job: Job) -> None:
        """Make the job takeable by workers (priority, then FIFO)."""

    @abstractmethod
    async def get(self, job_id: str) -> Job:
        """The job, its state refreshed; `JobNotFound` when unknown (or expired)."""

    @abstractmethod
    async def counts(self) -> tuple[int, int]:
        """(queued, running) jobs."""

    async def queued_here(self) -> list[Job]:
        """Jobs queued in this process (failed at shutdown); none for a shared store."""
        return []

    @abstractmethod
    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        """Cancel a queued job (its state becomes final) or ask a running one's worker to
        stop (it sets the job's `CancelEvent`, so generation stops within one step)."""

    @abstractmethod
    async def settle(self, job: Job) -> None:
        """The job's terminal event is published: mark it done."""

    def lease_held(self, job: Job) -> None:  # noqa: B027 (only shared stores count)
        """This process got its first subscriber of a request-scoped job."""

    def lease_dropped(self, job: Job, grace_s: float) -> None:  # noqa: B027
        """This process's last subscriber of a request-scoped job went (it may come back
        within `grace_s` seconds)."""

    async def held_elsewhere(self, job: Job) -> bool:
        """Whether a subscriber in another process still holds the job."""
        del job
        return False

    def remember_file(self, job_id: str, path: Path) -> None:  # noqa: B027
        """A video file made for `job_id` on this machine (deleted with the job's handle)."""

    # The worker side ----------------------------------------------------------------------
    @abstractmethod
    async def claim(self) -> Job | None:
        """Wait for the next queued job (highest priority, oldest first) and take it: it
        is now running here. None once `stop_claiming` was called."""

    @abstractmethod
    def stop_claiming(self) -> None:
        """Make waiting and later `claim` calls return None."""

    async def record(self, job: Job, kind: str, data: Mapping[str, Any]) -> bool:
        """Store what the event `kind` (just published) changed; False when the job is no
        longer this worker's (it was given to another one: stop running it)."""
        del job, kind, data
        return True

    async def finish(self, job: Job, kind: str, data: Mapping[str, Any]) -> bool:
        """Make the running job's final state (already set on `job`) the stored one, before
        its terminal event `kind` is published; False when it is no longer this worker's."""
        del job, kind, data
        return True

    async def give_back(self, job: Job) -> None:
        """Put a job this worker took back in the queue, unfinished (shared stores)."""
        raise NotImplementedError(f"{type(self).__name__} has no other worker to give to")


class MemoryJobStore(JobStore):
    """Jobs of this process only: a dict, and a priority queue (FIFO within a priority).

    Finished jobs beyond `max_finished_jobs` are forgotten with their MP4 and backlog.
    """

    shared = False

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.jobs: dict[str, Job] = {}
        self._queue: asyncio.PriorityQueue[tuple[float, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._stopping = False
        self._tasks: set[asyncio.Future[Any]] = set()

    async def create(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._forget_old()

    async def discard(self, job: Job) -> None:
        self.jobs.pop(job.id, None)

    async def enqueue(self, job: Job) -> None:
        self._queue.put_nowait((-job.priority, next(self._order), job.id))

    async def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def counts(self) -> tuple[int, int]:
        queued = sum(1 for job in self.jobs.values() if job.status == "queued")
        running = sum(1 for job in self.jobs.values() if job.status == "running")
        return queued, running

    async def queued_here(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.status == "queued"]

    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        if job.finished:
            return "finished"
        if job.status == "queued":
            job.status = "cancelled"
            job.error = cancel_error(code, message)
            job.finished_at = time.time()
            return "queued"
        job.cancel_code, job.cancel_message = code, message
        job.cancel.set()
        return "running"

    async def settle(self, job: Job) -> None:
        job.done.set()

    async def claim(self) -> Job | None:
        while not self._stopping:
            _, _, job_id = await self._queue.get()
            job = self.jobs.get(job_id)
            if job is None or job.status != "queued":
                continue  # cancelled while queued (or the stop marker)
            job.status, job.started_at = "running", time.time()
            job.attempt += 1
            return job
        return None

    def stop_claiming(self) -> None:
        self._stopping = True
        for _ in range(max(1, self.settings.max_concurrent_jobs)):
            self._queue.put_nowait((float("-inf"), -1, ""))  # wakes a waiting claim

    def _forget_old(self) -> None:
        finished = [job for job in self.jobs.values() if job.finished]
        for job in finished[: max(0, len(finished) - self.settings.max_finished_jobs)]:
            del self.jobs[job.id]
            if job.video_path is not None:
                job.video_path.unlink(missing_ok=True)
            task = asyncio.ensure_future(self.broker.drop(job.id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_log_failure)


# --- Redis ---------------------------------------------------------------------------------
_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_CREATE_LUA = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
local now = now_ms()
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1]) end
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3]) end
return 1
"""
)
# KEYS: job, leases, active. ARGV: lease member ('' none), lease ms, active member ('' none),
# active ms, field/value pairs. Writes only when the job is missing (create, restore).

_ENQUEUE_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'score', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
# KEYS: job, queue. ARGV: job id, queue score, control channel, message.

_CLAIM_LUA = (
    _NOW
    + """
for _ = 1, 32 do
  local top = redis.call('ZPOPMIN', KEYS[1])
  if #top == 0 then return false end
  local id = top[1]
  local key = ARGV[1] .. ':{' .. id .. '}:job'
  if redis.call('HGET', key, 'status') == 'queued' then
    local attempt = tonumber(redis.call('HGET', key, 'attempt') or '0') + 1
    redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2], 'attempt', attempt,
               'heartbeat_at', ARGV[3])
    local started = redis.call('HGET', key, 'started_at')
    if not started or started == '' then redis.call('HSET', key, 'started_at', ARGV[3]) end
    redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), id)
    return redis.call('HGETALL', key)
  end
end
return false
"""
)
# KEYS: queue, active. ARGV: key prefix, worker id, now (Unix s), dead-after ms. Pops the best
# queued job and marks it running here; returns its fields (flat), or nil when none.

_HEARTBEAT_LUA = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt', 'cancel')
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return {'lost', ''} end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[5])
return {'ok', h[4] or ''}
"""
)
# KEYS: job, active. ARGV: job id, worker, attempt, dead-after ms, now (Unix s).

_RECORD_LUA = """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if not h[1] then return -1 end
if h[1] ~= 'running' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""
# KEYS: job. ARGV: worker, attempt, field/value pairs. -1 missing, 0 not ours, 1 stored.

_FINISH_LUA = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if not h[1] then return -1 end
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'cancel')
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), ARGV[1])
return 1
"""
)
# KEYS: job, active. ARGV: job id, worker, attempt, dead-after ms, field/value pairs. The job
# stays in `active` (ours to publish its terminal event) until `settle`.

_SETTLE_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
  if tonumber(ARGV[5]) > last then redis.call('HSET', KEYS[1], 'last_seq', ARGV[5]) end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
# KEYS: job, active, leases. ARGV: job id, finished-job TTL ms, control channel, message,
# the seq of the terminal event.

_CANCEL_LUA = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[3], 'error', ARGV[4],
             'terminal', ARGV[5])
  redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[6]), ARGV[1])
  return 'queued'
end
if status == 'running' then
  if not redis.call('HGET', KEYS[1], 'cancel') then
    redis.call('HSET', KEYS[1], 'cancel', ARGV[2])
  end
  redis.call('PUBLISH', ARGV[7], ARGV[8])
  return 'running'
end
return 'finished'
"""
)
# KEYS: job, queue, active. ARGV: job id, cancel request, now (Unix s), error, terminal,
# dead-after ms, control channel, message.

_DUE_LUA = (
    _NOW
    + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
local lease = now + tonumber(ARGV[1])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], lease, id)
  table.insert(out, id)
end
return {lease, out}
"""
)
# KEYS: active. ARGV: dead-after ms, limit. Jobs whose heartbeat (or publish lease) lapsed,
# each leased to the caller for dead-after ms (so one reaper handles each).

_LAPSE_LUA = """
if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1])) ~= tonumber(ARGV[2]) then return 0 end
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'score')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
if ARGV[4] == 'requeue' then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], h[3], ARGV[1])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return 1
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'cancel')
return 1
"""
# KEYS: job, active, queue. ARGV: job id, the reaper's lease score (no heartbeat since),
# attempt, 'requeue' (then channel, message) or 'end' (then field/value pairs).

_ORPHANS_LUA = (
    _NOW
    + """
local now = now_ms()
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. ':{' .. id .. '}:job'
  local h = redis.call('HMGET', key, 'status', 'request_scoped', 'cancel')
  if h[1] == 'running' and h[2] == '1' and not h[3] then
    local leases = ARGV[1] .. ':{' .. id .. '}:leases'
    if redis.call('ZCOUNT', leases, now, '+inf') == 0 then
      redis.call('HSET', key, 'cancel', ARGV[2])
      redis.call('PUBLISH', ARGV[3], 'cancel ' .. id)
      table.insert(out, id)
    end
  end
end
return out
"""
)
# KEYS: active. ARGV: key prefix, cancel request, control channel. Request-scoped running
# jobs with no live lease anywhere (their replicas died): ask their workers to stop.

_LEASE_LUA = (
    _NOW
    + """
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""
)
# KEYS: leases. ARGV: holder, ms it holds for ('' to let go), key TTL ms.

_HELD_ELSEWHERE_LUA = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZCOUNT', KEYS[1], now_ms(), '+inf')
"""
)
# KEYS: leases. ARGV: this holder. Let go, then count live holders.

_GIVE_BACK_LUA = """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt', 'score')
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '', 'attempt', tonumber(h[3]) - 1)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], h[4], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
# KEYS: job, active, queue. ARGV: job id, worker, attempt, channel, message.

# Fields a replica reads to show a job (`inputs`, the worker's arrays, is left out).
_VIEW_FIELDS = (
    "status", "model", "priority", "request_scoped", "created_at", "request", "max_attempts",
    "worker", "attempt", "started_at", "finished_at", "segments_done", "frames_done",
    "last_seq", "progress", "error",
)  # fmt: skip
_SCORE_BASE = 10**12  # queue score: (100 - priority) * base + FIFO counter (< 2**53)


class RedisJobStore(JobStore):
    """Jobs in Redis, shared by every API replica and worker (single Redis, not Cluster).

    Keys (`prefix` as the broker's; one hash tag per job, as the broker's backlog)::

        {prefix}:{<job>}:job      hash: the job's state and its resolved request
        {prefix}:{<job>}:leases   zset: replicas holding a request-scoped job -> expiry (ms)
        {prefix}:jobs:queue       zset: queued job ids, score (100 - priority) * 1e12 + n
        {prefix}:jobs:order       counter n (FIFO within a priority)
        {prefix}:jobs:active      zset: jobs someone must finish -> deadline (ms, Redis time)
        {prefix}:jobs:workers     zset: live workers -> expiry (ms)
        {prefix}:jobs:control     pub/sub: "queued", "cancel <job>", "finished <job>"

    Every state change is one Lua script. A worker takes a job with `claim` (pop + mark
    running + put in `active`, atomically), heartbeats it (pushing its `active` deadline
    `worker_dead_after_seconds` ahead) and fences every write on (worker, attempt), so a
    worker that lost the job cannot overwrite it. Any process's keeper (every
    `worker_heartbeat_seconds`) reaps `active` jobs whose deadline passed: a running one is
    requeued if the job has attempts left (`worker_retry_failed_jobs` at submission) or
    failed with code ``worker_lost``; one whose final state was stored but whose terminal
    event was not (its publisher died in between) gets that event published.

    Cancel: a queued job is cancelled in place; for a running one a `cancel` field is set
    and "cancel <job>" published on the control channel, which the owning worker's
    listener turns into the job's `CancelEvent` (within one denoising step); heartbeats also
    read the field, in case the message was lost.

    Redis restarted empty: the listener's reconnection (and any write that finds the job
    missing) restores what this process owns: a worker its running jobs' state, a replica
    the queued jobs it submitted (with their `start` event). Reapers wait
    `worker_dead_after_seconds` after (re)connecting, so workers heartbeat first.
    """

    shared = True

    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        *,
        key_prefix: str = "streamgen",
        identity: str | None = None,
        op_timeout_s: float = 30.0,
        poll_s: float = 1.0,
    ) -> None:
        if not settings.broker.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"RedisJobStore needs a Redis broker URL, got {settings.broker!r}")
        self.settings = settings
        self.broker = broker
        self.url = settings.broker
        self.prefix = key_prefix
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.heartbeat_s = settings.worker_heartbeat_seconds
        if settings.worker_dead_after_seconds <= settings.worker_heartbeat_seconds:
            raise ValueError(
                "worker_dead_after_seconds must be more than worker_heartbeat_seconds, got "
                f"{settings.worker_dead_after_seconds} <= {settings.worker_heartbeat_seconds}"
            )
        self.dead_ms = max(1, round(settings.worker_dead_after_seconds * 1000))
        # A replica's lease outlives it this long: its clients' time to resume elsewhere.
        self.lease_ms = max(self.dead_ms, round(settings.resume_grace_seconds * 1000))
        self.finished_ttl_ms = max(1, round(settings.backlog_ttl_seconds * 1000))
        self.op_timeout_s = op_timeout_s
        self.poll_s = poll_s
        self.channel = f"{key_prefix}:jobs:control"
        self._queue_key = f"{key_prefix}:jobs:queue"
        self._order_key = f"{key_prefix}:jobs:order"
        self._active_key = f"{key_prefix}:jobs:active"
        self._workers_key = f"{key_prefix}:jobs:workers"
        self._redis: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connected_at = 0.0  # loop time of the last (re)connection
        self._wake = asyncio.Event()
        self._stopping = False
        self.is_worker = False  # set by `claim`: this process runs jobs (heartbeats itself)
        # Handles of jobs this process has looked at (replica side), oldest first.
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._files: dict[str, Path] = {}
        # What this process owns, kept to restore it if Redis loses it.
        self._queued_here: dict[str, dict[str, Any]] = {}
        self._running: dict[str, Job] = {}
        self._records: dict[str, dict[str, Any]] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and subscribe to the control channel; `BrokerUnavailable` if Redis cannot
        be reached within `op_timeout_s`."""
        no_retry = Retry(NoBackoff(), 0)  # this store retries itself, with a deadline
        self._redis = Redis.from_url(
            self.url, retry=no_retry, socket_connect_timeout=2.0, socket_timeout=10.0
        )
        lua = {
            "create": _CREATE_LUA, "enqueue": _ENQUEUE_LUA, "claim": _CLAIM_LUA,
            "heartbeat": _HEARTBEAT_LUA, "record": _RECORD_LUA, "finish": _FINISH_LUA,
            "settle": _SETTLE_LUA, "cancel": _CANCEL_LUA, "due": _DUE_LUA, "lapse": _LAPSE_LUA,
            "orphans": _ORPHANS_LUA, "lease": _LEASE_LUA, "held": _HELD_ELSEWHERE_LUA,
            "give_back": _GIVE_BACK_LUA,
        }  # fmt: skip
        self._scripts = {name: self._redis.register_script(src) for name, src in lua.items()}
        self._listener = asyncio.create_task(self._listen(), name="jobstore-listener")
        try:
            await asyncio.wait_for(self._connected.wait(), self.op_timeout_s)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailable(
                f"could not reach Redis for the job store within {self.op_timeout_s} s"
            ) from None
        self._keeper = asyncio.create_task(self._keep(), name="jobstore-keeper")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stopping = True
        self._wake.set()
        tasks = [t for t in (self._listener, self._keeper, *self._tasks) if t is not None]
        while tasks:  # cancel again if a library swallowed the first cancellation
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
            tasks = [task for task in tasks if not task.done()]
        if self._redis is not None:
            with contextlib.suppress(*REDIS_DOWN):
                await self._redis.zrem(self._workers_key, self.identity)
            await self._redis.aclose()
        for path in self._files.values():
            path.unlink(missing_ok=True)

    # -- the API side ---------------------------------------------------------------------
    async def create(self, job: Job) -> None:
        record = {
            "id": job.id,
            "request": pack_request(job.request, arrays=False),
            "inputs": pack_arrays(job.request),
            "model": job.model,
            "priority": job.priority,
            "request_scoped": "1" if job.request_scoped else "0",
            "created_at": repr(job.created_at),
            "max_attempts": job.max_attempts,
            "status": "queued",
            "attempt": 0,
            "worker": "",
            "started_at": "",
            "finished_at": "",
            "segments_done": 0,
            "frames_done": 0,
            "last_seq": 0,
            "progress": b"",
            "error": b"",
        }
        lease = self.identity if job.request_scoped else ""
        created = await self._script(
            "create",
            f"record job {job.id}",
            [self._job_key(job.id), self._leases_key(job.id), self._active_key],
            [lease, self.lease_ms, "", 0, *_pairs(record)],
        )
        if not created:
            raise ServiceError(f"job id {job.id} is already taken")
        self._queued_here[job.id] = record
        self._remember(job)

    async def discard(self, job: Job) -> None:
        self._queued_here.pop(job.id, None)
        self._jobs.pop(job.id, None)
        redis = self._client()
        await self._retrying(
            f"discard job {job.id}",
            lambda: redis.delete(self._job_key(job.id), self._leases_key(job.id)),
        )

    async def enqueue(self, job: Job) -> None:
        if hasattr(self.broker, "disown"):
            self.broker.disown(job.id)  # the worker that takes it publishes from now on
        redis = self._client()
        order = await self._retrying("number a job", lambda: redis.incr(self._order_key))
        score = str((100 - job.priority) * _SCORE_BASE + int(order))
        self._queued_here[job.id]["score"] = score
        await self._script(
            "enqueue",
            f"queue job {job.id}",
            [self._job_key(job.id), self._queue_key],
            [job.id, score, self.channel, "queued"],
        )

    async def get(self, job_id: str) -> Job:
        values = await self._view(job_id)
        if values is None:
            self._jobs.pop(job_id, None)
            raise JobNotFound(job_id)
        job = self._jobs.get(job_id)
        if job is None:
            job = self._handle(job_id, values)
            self._remember(job)
        self._apply(job, values)
        return job

    async def counts(self) -> tuple[int, int]:
        redis = self._client()

        async def both() -> tuple[int, int]:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard(self._queue_key)
                pipe.zcard(self._active_key)
                queued, active = await pipe.execute()
            return int(queued), int(active)

        return await self._retrying("count jobs", both)

    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        error = cancel_error(code, message)
        now = time.time()
        outcome = await self._script(
            "cancel",
            f"cancel job {job.id}",
            [self._job_key(job.id), self._queue_key, self._active_key],
            [
                job.id,
                _pack({"code": code, "message": message}),
                repr(now),
                pack_error(error),
                _pack({"type": "error", "data": error_data(error)}),
                self.dead_ms,
                self.channel,
                f"cancel {job.id}",
            ],
        )
        outcome = _text(outcome)
        if outcome == "missing":
            raise JobNotFound(job.id)
        if outcome == "queued":
            self._queued_here.pop(job.id, None)
            job.status, job.error, job.finished_at = "cancelled", error, now
        elif outcome == "finished":
            await self.get(job.id)  # so the caller reports the real final state
        return outcome  # type: ignore[return-value]

    async def settle(self, job: Job) -> None:
        self._running.pop(job.id, None)
        self._records.pop(job.id, None)
        self._queued_here.pop(job.id, None)
        try:
            await self._script(
                "settle",
                f"settle job {job.id}",
                [self._job_key(job.id), self._active_key, self._leases_key(job.id)],
                [job.id, self.finished_ttl_ms, self.channel, f"finished {job.id}", job.last_seq],
            )
        finally:
            job.done.set()
            handle = self._jobs.get(job.id)
            if handle is not None and handle is not job:
                self._spawn(self._refresh([handle]))

    def lease_held(self, job: Job) -> None:
        self._spawn(self._lease(job.id, self.lease_ms))

    def lease_dropped(self, job: Job, grace_s: float) -> None:
        self._spawn(self._lease(job.id, round(grace_s * 1000) if grace_s > 0 else None))

    async def held_elsewhere(self, job: Job) -> bool:
        count = await self._script(
            "held", f"count holders of job {job.id}", [self._leases_key(job.id)], [self.identity]
        )
        return int(count) > 0

    def remember_file(self, job_id: str, path: Path) -> None:
        self._files[job_id] = path

    # -- the worker side ------------------------------------------------------------------
    async def claim(self) -> Job | None:
        self.is_worker = True
        while not self._stopping:
            wake = self._wake
            try:
                reply = await self._script(
                    "claim",
                    "take a job",
                    [self._queue_key, self._active_key],
                    [self.prefix, self.identity, repr(time.time()), self.dead_ms],
                )
            except BrokerUnavailable as exc:
                log.warning("cannot take jobs: %s; retrying", exc)
                reply = None
            if reply:
                fields = _fields(reply)
                job = self._worker_handle(fields)
                self._running[job.id] = job
                self._records[job.id] = fields
                if self._stopping:  # stopped while taking it: give it back
                    await self.give_back(job)
                    return None
                await self._check_cancel(job)
                return job
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll_s)  # or a poll, if one was lost
        return None

    def stop_claiming(self) -> None:
        self._stopping = True
        self._notify_claimers()

    async def record(self, job: Job, kind: str, data: Mapping[str, Any]) -> bool:
        return await self._fenced("record", job, self._progress_fields(job))

    async def finish(self, job: Job, kind: str, data: Mapping[str, Any]) -> bool:
        self._running.pop(job.id, None)  # no more heartbeats: `active` now holds the deadline
        changes = {
            **self._progress_fields(job),
            "status": job.status,
            "finished_at": repr(job.finished_at or time.time()),
            "error": pack_error(job.error),
            "terminal": _pack({"type": kind, "data": dict(data)}),
        }
        try:
            return await self._fenced("finish", job, changes, active=True)
        except BrokerUnavailable as exc:
            log.error("job %s: cannot store its final state: %s", job.id, exc)
            return False

    def _progress_fields(self, job: Job) -> dict[str, Any]:
        return {
            "last_seq": job.last_seq,
            "segments_done": job.segments_done,
            "frames_done": job.frames_done,
            "progress": _pack(job.progress) if job.progress is not None else b"",
        }

    async def _fenced(
        self, script: str, job: Job, changes: dict[str, Any], *, active: bool = False
    ) -> bool:
        """Run `script` (record, finish) if the job is still this worker's attempt; restore
        the job first if Redis lost it."""
        if active:
            keys = [self._job_key(job.id), self._active_key]
            args: list[Any] = [job.id, job.worker or "", job.attempt, self.dead_ms]
        else:
            keys, args = [self._job_key(job.id)], [job.worker or "", job.attempt]
        record = self._records.get(job.id)
        if record is not None:
            record.update(changes)
        for _ in range(2):
            stored = int(
                await self._script(script, f"store job {job.id}", keys, [*args, *_pairs(changes)])
            )
            if stored >= 0:
                if stored == 0:
                    log.warning("job %s is no longer this worker's (attempt %d)", job.id,
                                job.attempt)  # fmt: skip
                return bool(stored)
            await self._restore_running(job)  # Redis lost it: put ours back, then again
        return False

    async def give_back(self, job: Job) -> None:
        """Requeue `job` where it was (its attempt not counted): another worker continues
        its log. Fenced: nothing happens if the job is no longer this worker's."""
        self._running.pop(job.id, None)
        self._records.pop(job.id, None)
        await self._script(
            "give_back",
            f"give back job {job.id}",
            [self._job_key(job.id), self._active_key, self._queue_key],
            [job.id, self.identity, job.attempt, self.channel, "queued"],
        )

    async def _check_cancel(self, job: Job) -> None:
        redis = self._client()
        request = await self._retrying(
            f"read job {job.id}", lambda: redis.hget(self._job_key(job.id), "cancel")
        )
        if request:
            self._apply_cancel(job, request)

    def _apply_cancel(self, job: Job, request: bytes | str) -> None:
        if job.cancel.is_set():
            return
        fields = msgpack.unpackb(request, raw=False)
        job.cancel_code = fields.get("code", "cancelled")
        job.cancel_message = fields.get("message", "the job was cancelled")
        job.cancel.set()

    # -- handles ----------------------------------------------------------------------------
    async def _view(self, job_id: str) -> list[Any] | None:
        redis = self._client()
        values = await self._retrying(
            f"read job {job_id}", lambda: redis.hmget(self._job_key(job_id), _VIEW_FIELDS)
        )
        return None if values[0] is None else list(values)

    def _handle(self, job_id: str, values: list[Any]) -> Job:
        view = dict(zip(_VIEW_FIELDS, values, strict=True))
        return Job(
            id=job_id,
            request=unpack_request(view["request"]),
            model=_text(view["model"]),
            priority=int(view["priority"]),
            request_scoped=view["request_scoped"] == b"1",
            created_at=float(view["created_at"]),
            max_attempts=int(view["max_attempts"] or 1),
        )

    def _apply(self, job: Job, values: list[Any]) -> None:
        view = dict(zip(_VIEW_FIELDS, values, strict=True))
        job.status = _text(view["status"])  # type: ignore[assignment]
        job.worker = _text(view["worker"]) or None
        job.attempt = int(view["attempt"] or 0)
        job.started_at = _float(view["started_at"])
        job.finished_at = _float(view["finished_at"])
        job.segments_done = int(view["segments_done"] or 0)
        job.frames_done = int(view["frames_done"] or 0)
        job.next_seq = max(job.next_seq, int(view["last_seq"] or 0) + 1)
        job.progress = msgpack.unpackb(view["progress"], raw=False) if view["progress"] else None
        job.error = unpack_error(view["error"])
        if job.finished:
            job.done.set()
            if job.orphan_timer is not None:
                job.orphan_timer.cancel()
                job.orphan_timer = None

    def _worker_handle(self, fields: dict[str, Any]) -> Job:
        job_id = _text(fields["id"]) if "id" in fields else None
        request = unpack_request(fields["request"], fields.get("inputs") or b"")
        job = Job(
            id=job_id or "",
            request=request,
            model=_text(fields["model"]),
            priority=int(fields["priority"]),
            request_scoped=fields["request_scoped"] in (b"1", "1"),
            created_at=float(fields["created_at"]),
            max_attempts=int(fields.get("max_attempts") or 1),
            status="running",
        )
        job.worker = _text(fields["worker"])
        job.attempt = int(fields["attempt"])
        job.started_at = _float(fields.get("started_at"))
        job.segments_done = int(fields.get("segments_done") or 0)
        job.frames_done = int(fields.get("frames_done") or 0)
        job.next_seq = int(fields.get("last_seq") or 0) + 1
        return job

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id)
        finished = [j for j in self._jobs.values() if j.finished and not j.leases]
        for old in finished[: max(0, len(finished) - self.settings.max_finished_jobs)]:
            self._jobs.pop(old.id, None)
            path = self._files.pop(old.id, None)
            if path is not None:
                path.unlink(missing_ok=True)

    async def _refresh(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        if not jobs:
            return
        redis = self._client()

        async def read() -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hmget(self._job_key(job.id), _VIEW_FIELDS)
                return list(await pipe.execute())

        for job, values in zip(jobs, await self._retrying("refresh jobs", read), strict=True):
            if values[0] is not None:
                self._apply(job, list(values))
                if job.status != "queued":
                    self._queued_here.pop(job.id, None)

    # -- leases -----------------------------------------------------------------------------
    async def _lease(self, job_id: str, hold_ms: int | None) -> None:
        await self._script(
            "lease",
            f"lease job {job_id}",
            [self._leases_key(job_id)],
            [self.identity, "" if hold_ms is None else hold_ms, self.finished_ttl_ms],
        )

    # -- the control channel ------------------------------------------------------------------
    async def _listen(self) -> None:
        """Follow the control channel; reconnect with backoff; reconcile after a drop."""
        backoff_s = 0.05
        connected_before = False
        loop = asyncio.get_running_loop()
        while not self.closed:
            pubsub: PubSub = self._client().pubsub()
            try:
                await pubsub.subscribe(self.channel)
                last_traffic = loop.time()
                pinged = False
                while True:
                    message = await pubsub.get_message(timeout=self.poll_s)
                    if message is None:
                        if loop.time() - last_traffic > 3 * self.poll_s:
                            raise RedisConnectionError("the control channel stopped answering")
                        if not pinged:
                            await pubsub.ping()
                            pinged = True
                        continue
                    last_traffic, pinged = loop.time(), False
                    if message["type"] == "subscribe":
                        self._connected_at = loop.time()
                        self._connected.set()
                        backoff_s = 0.05
                        if connected_before:
                            log.info("job store reconnected to Redis")
                            self._spawn(self._reconcile())
                        connected_before = True
                        self._notify_claimers()
                    elif message["type"] == "message":
                        self._on_control(_text(message["data"]))
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                if self._connected.is_set():
                    log.warning("job store lost Redis (%s); reconnecting", exc)
            except Exception:
                log.exception("job store listener failed; reconnecting")
            finally:
                self._connected.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if not self.closed:
                await asyncio.sleep(backoff_s)  # backoff before reconnecting
                backoff_s = min(backoff_s * 2, 2.0)

    def _on_control(self, message: str) -> None:
        op, _, job_id = message.partition(" ")
        if op == "queued":
            self._notify_claimers()
        elif op == "cancel":
            job = self._running.get(job_id)
            if job is not None:
                self._spawn(self._check_cancel(job))
        elif op == "finished":
            handle = self._jobs.get(job_id)
            if handle is not None and not handle.finished:
                self._spawn(self._refresh([handle]))

    def _notify_claimers(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    # -- the keeper -------------------------------------------------------------------------
    async def _keep(self) -> None:
        """Every `worker_heartbeat_seconds`: heartbeat running jobs and this worker, hold
        leases, refresh handles, reap lapsed jobs and orphaned request-scoped ones."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(self.heartbeat_s)  # the keeper's period, not a sync wait
            if not self._connected.is_set():
                continue
            for step in (self._heartbeat, self._hold_leases, self._refresh_open):
                try:
                    await step()
                except (BrokerUnavailable, *REDIS_DOWN) as exc:
                    log.debug("job store keeper: %s", exc)
                except Exception:
                    log.exception("job store keeper step %s failed", step.__name__)
            if loop.time() - self._connected_at < self.dead_ms / 1000:
                continue  # just (re)connected: workers get a full period to heartbeat first
            for step in (self._reap, self._reap_orphans):
                try:
                    await step()
                except (BrokerUnavailable, *REDIS_DOWN) as exc:
                    log.debug("job store reaper: %s", exc)
                except Exception:
                    log.exception("job store reaper step %s failed", step.__name__)

    async def _heartbeat(self) -> None:
        if self.is_worker and not self._stopping:
            redis = self._client()
            expiry = await self._retrying("read Redis time", redis.time)
            now_ms = int(expiry[0]) * 1000 + int(expiry[1]) // 1000
            await self._retrying(
                "register this worker",
                lambda: redis.zadd(self._workers_key, {self.identity: now_ms + self.dead_ms}),
            )
        for job in list(self._running.values()):
            reply = await self._script(
                "heartbeat",
                f"heartbeat job {job.id}",
                [self._job_key(job.id), self._active_key],
                [job.id, job.worker or "", job.attempt, self.dead_ms, repr(time.time())],
            )
            state, cancel = _text(reply[0]), reply[1]
            if state == "missing":
                await self._restore_running(job)
            elif state == "lost" and self._running.pop(job.id, None) is not None:
                log.warning("job %s was taken from this worker; stopping it", job.id)
                job.cancel_code = "worker_lost"
                job.cancel_message = "the job was taken from this worker"
                job.cancel.set()
            elif cancel:
                self._apply_cancel(job, cancel)

    async def _hold_leases(self) -> None:
        for job in list(self._jobs.values()):
            if job.leases and job.request_scoped and not job.finished:
                await self._lease(job.id, self.lease_ms)

    async def _refresh_open(self) -> None:
        await self._refresh([job for job in self._jobs.values() if not job.finished])

    async def _reap(self) -> None:
        reply = await self._script(
            "due", "find lapsed jobs", [self._active_key], [self.dead_ms, 16]
        )
        lease, due = int(reply[0]), [_text(item) for item in reply[1]]
        for job_id in due:
            try:
                await self._reap_one(job_id, lease)
            except (BrokerUnavailable, *REDIS_DOWN):
                raise
            except Exception:
                log.exception("reaping job %s failed", job_id)

    async def _reap_one(self, job_id: str, lease: int) -> None:
        redis = self._client()
        key = self._job_key(job_id)
        fields = ("status", "attempt", "max_attempts", "cancel", "terminal", "worker")
        values = await self._retrying(f"read job {job_id}", lambda: redis.hmget(key, fields))
        status, attempt, max_attempts, cancel, terminal, worker = values
        if status is None:
            await self._retrying("forget a gone job", lambda: redis.zrem(self._active_key, job_id))
            return
        job = await self.get(job_id)
        if status == b"running":
            if cancel is None and int(attempt or 1) < int(max_attempts or 1):
                done = await self._script(
                    "lapse",
                    f"requeue job {job_id}",
                    [key, self._active_key, self._queue_key],
                    [job_id, lease, _text(attempt), "requeue", self.channel, "queued"],
                )
                if done:
                    log.warning(
                        "job %s: worker %s stopped heartbeating; requeued (attempt %s of %s)",
                        job_id, _text(worker), _text(attempt), _text(max_attempts),
                    )  # fmt: skip
                    await self.get(job_id)
                return
            if cancel is not None:
                request = msgpack.unpackb(cancel, raw=False)
                error = cancel_error(request["code"], request["message"])
                status_text = "cancelled"
            else:
                error = GenerationFailed(
                    f"the worker running this job ({_text(worker)}) stopped heartbeating for "
                    f"{self.dead_ms / 1000:g} s",
                    code="worker_lost",
                )
                status_text = "failed"
            terminal_value: dict[str, Any] = {"type": "error", "data": error_data(error)}
            now = time.time()
            done = await self._script(
                "lapse",
                f"fail job {job_id}",
                [key, self._active_key, self._queue_key],
                [job_id, lease, _text(attempt), "end", *_pairs({
                    "status": status_text, "error": pack_error(error),
                    "terminal": _pack(terminal_value), "finished_at": repr(now),
                })],
            )  # fmt: skip
            if not done:
                return
            log.warning("job %s: %s", job_id, error.message)
            job.status, job.error, job.finished_at = status_text, error, now  # type: ignore[assignment]
        elif terminal is not None:
            terminal_value = msgpack.unpackb(terminal, raw=False)
        else:
            await self.settle(job)  # finished before `terminal` was stored
            return
        await publish_terminal(
            self.broker, self, job, terminal_value["type"], dict(terminal_value["data"])
        )

    async def _reap_orphans(self) -> None:
        request = _pack({"code": "cancelled", "message": "the last subscriber disconnected"})
        orphans = await self._script(
            "orphans",
            "find orphaned jobs",
            [self._active_key],
            [self.prefix, request, self.channel],
        )
        for job_id in orphans or ():
            log.info("job %s: no replica holds it any more; cancelling", _text(job_id))

    # -- restoring what Redis lost --------------------------------------------------------------
    async def _reconcile(self) -> None:
        """After a reconnection: restore running jobs (heartbeat) and queued ones we submitted,
        then refresh every open handle."""
        try:
            await self._heartbeat()
            for job_id, record in list(self._queued_here.items()):
                await self._restore_queued(job_id, record)
            await self._refresh_open()
        except (BrokerUnavailable, *REDIS_DOWN) as exc:
            log.warning("job store: reconciling after a reconnection failed: %s", exc)

    async def _restore_running(self, job: Job) -> None:
        record = self._records.get(job.id)
        if record is None:
            return
        restored = await self._script(
            "create",
            f"restore job {job.id}",
            [self._job_key(job.id), self._leases_key(job.id), self._active_key],
            ["", 0, job.id, self.dead_ms, *_pairs(record)],
        )
        if restored:
            log.info("restored the state of running job %s after Redis lost it", job.id)

    async def _restore_queued(self, job_id: str, record: dict[str, Any]) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.pipeline_job is None:
            return
        lease = self.identity if job.request_scoped else ""
        if "score" not in record:
            return  # not queued yet: its `submit` is still running and will queue it
        restored = await self._script(
            "create",
            f"restore job {job_id}",
            [self._job_key(job_id), self._leases_key(job_id), self._active_key],
            [lease, self.lease_ms, "", 0, *_pairs(record)],
        )
        if not restored:
            return
        data = start_data(job)
        data["time"] = time.time()
        with contextlib.suppress(OutOfOrderEvent):
            await self.broker.publish(Event(job_id, 0, "start", data))
        if hasattr(self.broker, "disown"):
            self.broker.disown(job_id)
        await self._script(
            "enqueue",
            f"queue job {job_id}",
            [self._job_key(job_id), self._queue_key],
            [job_id, record["score"], self.channel, "queued"],
        )
        log.info("restored queued job %s after Redis lost it", job_id)

    # -- helpers --------------------------------------------------------------------------------
    async def _script(self, name: str, what: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        return await self._retrying(what, lambda: script(keys=keys, args=args))

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until Redis answers, with backoff, for at most `op_timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.op_timeout_s
        backoff_s = 0.05
        while True:
            if self._redis is None:
                raise BrokerClosed(f"cannot {what}: the job store is not started")
            try:
                return await call()
            except REDIS_DOWN as exc:
                if self.closed:
                    raise BrokerClosed(f"cannot {what}: the job store is closed") from exc
                if loop.time() + backoff_s > deadline:
                    raise BrokerUnavailable(
                        f"cannot {what}: Redis unreachable for {self.op_timeout_s} s ({exc})"
                    ) from exc
            await asyncio.sleep(backoff_s)  # backoff between attempts, not a sync wait
            backoff_s = min(backoff_s * 2, 2.0)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    def _client(self) -> Redis:
        if self._redis is None:
            raise BrokerClosed("the job store is not started: call `await store.start()`")
        return self._redis

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:job"

    def _leases_key(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:leases"


def make_store(settings: Settings, broker: Broker) -> JobStore:
    """The store for `settings.broker`: in this process for ``memory``, else in Redis."""
    if settings.broker == "memory":
        return MemoryJobStore(settings, broker)
    return RedisJobStore(settings, broker, key_prefix=settings.redis_key_prefix)


def broker_for(settings: Settings) -> Broker:
    """The (unstarted) broker `settings` name, with their backlog limits and Redis prefix."""
    options: dict[str, Any] = {
        "backlog_ttl_s": settings.backlog_ttl_seconds,
        "max_backlog_bytes": settings.max_backlog_bytes,
    }
    if settings.broker != "memory":
        options["key_prefix"] = settings.redis_key_prefix
    return make_broker(settings.broker, **options)


# --- serialising a job for Redis ---------------------------------------------------------
_REQUEST_FIELDS = (
    "prompt", "negative_prompt", "seed", "width", "height", "fps", "total_frames",
    "num_inference_steps", "guidance_scale", "segment_frames", "overlap_frames",
)  # fmt: skip
_ARRAY_FIELDS = ("reference_image", "extend_video")


def pack_request(request: ResolvedRequest, *, arrays: bool = True) -> bytes:
    """msgpack of a resolved request (its arrays too, unless `arrays` is False)."""
    fields = {name: _plain(getattr(request, name)) for name in _REQUEST_FIELDS}
    if arrays:
        fields["inputs"] = pack_arrays(request)
    return _pack(fields)


def pack_arrays(request: ResolvedRequest) -> bytes:
    """msgpack of the request's pixel inputs (uint8 arrays with their shapes)."""
    out: dict[str, Any] = {}
    for name in _ARRAY_FIELDS:
        array = getattr(request, name)
        if array is not None:
            array = np.ascontiguousarray(array, dtype=np.uint8)
            out[name] = {"shape": list(array.shape), "data": array.tobytes()}
    return _pack(out)


def unpack_request(packed: bytes, inputs: bytes = b"") -> ResolvedRequest:
    """The `ResolvedRequest` of `pack_request` (with the arrays of `inputs`, if given)."""
    fields = msgpack.unpackb(packed, raw=False)
    arrays = fields.pop("inputs", None)
    if inputs:
        arrays = inputs
    values: dict[str, Any] = {name: fields[name] for name in _REQUEST_FIELDS}
    if arrays:
        for name, item in msgpack.unpackb(arrays, raw=False).items():
            values[name] = np.frombuffer(item["data"], dtype=np.uint8).reshape(item["shape"])
    return ResolvedRequest(**values)


_ERRORS: dict[int, type[ServiceError]] = {
    409: Conflict,
    422: InvalidParameter,
    500: GenerationFailed,
    503: ServiceUnavailable,
}


def pack_error(error: ServiceError | None) -> bytes:
    if error is None:
        return b""
    return _pack({"status": error.status, **error_data(error)})


def unpack_error(packed: bytes | None) -> ServiceError | None:
    if not packed:
        return None
    fields = msgpack.unpackb(packed, raw=False)
    cls = _ERRORS.get(int(fields.get("status", 500)), ServiceError)
    error = cls(fields["message"], param=fields.get("param"), code=fields["code"])
    if cls is ServiceError:
        error.status = int(fields.get("status", 500))
    return error


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number msgpack can pack."""
    return value.item() if isinstance(value, np.generic) else value


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _pairs(mapping: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key, value in mapping.items():
        out.extend((key, value))
    return out


def _fields(flat: list[Any]) -> dict[str, Any]:
    fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
    return fields


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _log_failure(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.error("job store background task failed: %r", exc)


__all__ = [
    "FINISHED",
    "CancelOutcome",
    "JobStore",
    "MemoryJobStore",
    "RedisJobStore",
    "make_store",
    "pack_request",
    "unpack_request",
]
