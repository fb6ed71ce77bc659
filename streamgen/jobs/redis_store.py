"""The Redis job store: every API replica and every `streamgen worker` on one Redis, so any
replica answers for any job and workers anywhere run them (see `RedisJobStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from pathlib import Path

from ..background import TaskSet
from ..broker.base import Broker, BrokerClosed, BrokerUnavailable
from ..broker.redis_ops import REDIS_DOWN, RetryingRedis
from ..broker.redis_ops import SCHEMES as REDIS_SCHEMES
from ..config import Settings
from ..events import Terminal
from .load import WorkerLoad
from .record import Job
from .redis_api import ApiSide
from .redis_control import ControlChannel
from .redis_reaper import Reaper
from .redis_schema import SCRIPTS, RedisKeys, StoreContext
from .redis_worker import WorkerSide
from .store import ANY, Accept, CancelOutcome, JobPage, JobStore

log = logging.getLogger(__name__)


class RedisJobStore(JobStore):
    """Jobs in Redis, shared by every API replica and worker (single Redis, not Cluster).

    Keys and scripts are in `redis_schema`; every state change is one Lua script. A worker
    takes a job with `claim` (pop + mark running + put in `active`, atomically), heartbeats
    it (pushing its `active` deadline `worker_dead_after_seconds` ahead) and fences every
    write on (worker, attempt), so a worker that lost the job cannot overwrite it. Any
    process's keeper (every
    `worker_heartbeat_seconds`) reaps `active` jobs whose deadline passed (`Reaper`).

    Cancel: a queued job is cancelled in place; for a running one a `cancel` field is set
    and "cancel <job>" published on the control channel, which the owning worker's
    listener turns into the job's `CancelEvent` (within one denoising step); heartbeats also
    read the field, in case the message was lost.

    The parts, by who calls them: `ApiSide` (replicas: create, get, page, cancel, leases),
    `WorkerSide` (workers: claim, record, finish, give back, heartbeat, loads) and
    `ControlChannel` (the control channel's subscription and the keeper); this class holds
    them and is the `JobStore` the runtime builds.

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
        if not settings.broker.startswith(REDIS_SCHEMES):
            raise ValueError(f"RedisJobStore needs a Redis broker URL, got {settings.broker!r}")
        if settings.worker_dead_after_seconds <= settings.worker_heartbeat_seconds:
            raise ValueError(
                "worker_dead_after_seconds must be more than worker_heartbeat_seconds, got "
                f"{settings.worker_dead_after_seconds} <= {settings.worker_heartbeat_seconds}"
            )
        self.settings = settings
        self.broker = broker
        self.op_timeout_s = op_timeout_s
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.keys = RedisKeys(key_prefix)
        self.redis = RetryingRedis(
            settings.broker, op_timeout_s, where="Redis (job store)", scripts=SCRIPTS
        )
        self._tasks = TaskSet(log, "job store")
        dead_ms = max(1, round(settings.worker_dead_after_seconds * 1000))
        context = StoreContext(
            settings=settings,
            broker=broker,
            redis=self.redis,
            keys=self.keys,
            identity=self.identity,
            tasks=self._tasks,
            dead_ms=dead_ms,
            # A replica's lease outlives it this long: its clients' time to resume elsewhere.
            lease_ms=max(dead_ms, round(settings.resume_grace_seconds * 1000)),
            finished_ttl_ms=max(1, round(settings.backlog_ttl_seconds * 1000)),
            poll_s=poll_s,
        )
        self.api = ApiSide(context)
        self.worker = WorkerSide(context)
        self.reaper = Reaper(self, self.redis, self.keys, broker, dead_ms)
        self.control = ControlChannel(context, self.api, self.worker, self.reaper)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and subscribe to the control channel; `BrokerUnavailable` if Redis cannot
        be reached within `op_timeout_s`."""
        self.control.start()
        try:
            await asyncio.wait_for(self.control.connected.wait(), self.op_timeout_s)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailable(
                f"could not reach Redis for the job store within {self.op_timeout_s} s"
            ) from None
        self.control.start_keeper()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = self.redis.closed = True
        self.worker.stop_claiming()
        await self.control.close()
        tasks = list(self._tasks)
        while tasks:  # cancel again if a library swallowed the first cancellation
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
            tasks = [task for task in tasks if not task.done()]
        with contextlib.suppress(BrokerClosed, *REDIS_DOWN):
            await self.redis.client.zrem(self.keys.workers, self.identity)
            await self.redis.client.hdel(self.keys.load, self.identity)
        await self.redis.aclose()
        for path in self.api.files.values():
            path.unlink(missing_ok=True)

    # -- the API side (`ApiSide`) -----------------------------------------------------------
    async def create(self, job: Job) -> None:
        await self.api.create(job)

    async def discard(self, job: Job) -> None:
        await self.api.discard(job)

    async def delete(self, job: Job) -> None:
        await self.api.delete(job)

    async def page(self, after: str | None, limit: int, newest_first: bool) -> JobPage:
        return await self.api.page(after, limit, newest_first)

    async def enqueue(self, job: Job) -> None:
        await self.api.enqueue(job)

    async def get(self, job_id: str) -> Job:
        return await self.api.get(job_id)

    async def counts(self) -> tuple[int, int]:
        return await self.api.counts()

    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        return await self.api.cancel(job, code, message)

    def lease_held(self, job: Job) -> None:
        self.api.lease_held(job)

    def lease_dropped(self, job: Job, grace_s: float) -> None:
        self.api.lease_dropped(job, grace_s)

    async def held_elsewhere(self, job: Job) -> bool:
        return await self.api.held_elsewhere(job)

    def remember_file(self, job_id: str, path: Path) -> None:
        self.api.remember_file(job_id, path)

    async def _settle(self, job: Job) -> None:
        self.worker.running.pop(job.id, None)
        self.worker.records.pop(job.id, None)
        await self.api.settle(job)

    # -- the worker side (`WorkerSide`) -----------------------------------------------------
    async def claim(
        self,
        accept: Accept = ANY,
        timeout_s: float | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> Job | None:
        return await self.worker.claim(accept, timeout_s, interrupt)

    def stop_claiming(self) -> None:
        self.worker.stop_claiming()

    async def record(self, job: Job) -> bool:
        return await self.worker.record(job)

    async def finish(self, job: Job, terminal: Terminal) -> bool:
        return await self.worker.finish(job, terminal)

    async def give_back(self, job: Job) -> bool:
        return await self.worker.give_back(job)

    async def report_load(self, load: WorkerLoad) -> None:
        await self.worker.report_load(load)

    async def loads(self) -> list[WorkerLoad]:
        return await self.worker.loads()
