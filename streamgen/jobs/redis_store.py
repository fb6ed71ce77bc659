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
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import msgpack
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from ..background import TaskSet
from ..broker.base import Broker, BrokerClosed, BrokerUnavailable, Event, OutOfOrderEvent
from ..broker.redis_ops import REDIS_DOWN
from ..broker.redis_ops import SCHEMES as REDIS_SCHEMES
from ..config import Settings
from ..errors import JobNotFound, ServiceError
from ..events import ErrorPayload, Terminal, to_data
from .codec import (
    VIEW_FIELDS,
    apply_view,
    final_fields,
    hash_fields,
    job_from_claim,
    job_from_view,
    new_record,
    pack,
    pack_error,
    pack_terminal,
    pairs,
    progress_fields,
    text,
)
from .load import WorkerLoad
from .log import start_payload
from .record import Job, cancel_error
from .redis_reaper import Reaper
from .redis_schema import SCORE_BASE, JobsRedis, RedisKeys
from .store import ANY, Accept, CancelOutcome, JobPage, JobStore, wait_any

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        self.keys = RedisKeys(key_prefix)
        self.channel = self.keys.channel
        self.redis = JobsRedis(self.url, self.keys, op_timeout_s)
        self.reaper = Reaper(self, self.redis, broker, self.dead_ms)
        self._tasks = TaskSet(log, "job store")
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
        self.redis.open()
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
        self.closed = self.redis.closed = True
        self._stopping = True
        self._wake.set()
        tasks = [t for t in (self._listener, self._keeper, *self._tasks) if t is not None]
        while tasks:  # cancel again if a library swallowed the first cancellation
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
            tasks = [task for task in tasks if not task.done()]
        with contextlib.suppress(BrokerClosed, *REDIS_DOWN):
            await self.redis.client().zrem(self.keys.workers, self.identity)
            await self.redis.client().hdel(self.keys.load, self.identity)
        await self.redis.aclose()
        for path in self._files.values():
            path.unlink(missing_ok=True)

    # -- the API side ---------------------------------------------------------------------
    async def create(self, job: Job) -> None:
        record = new_record(job)
        lease = self.identity if job.spec.request_scoped else ""
        created = await self.redis.script(
            "create",
            f"record job {job.id}",
            [self.keys.job(job.id), self.keys.leases(job.id), self.keys.active],
            [lease, self.lease_ms, "", 0, *pairs(record)],
        )
        if not created:
            raise ServiceError(f"job id {job.id} is already taken")
        self._queued_here[job.id] = record
        self._remember(job)
        if job.spec.listed:
            redis, score = self.redis.client(), {job.id: int(job.spec.created_at * 1_000_000)}
            try:
                await self.redis.command(
                    f"index job {job.id}", lambda: redis.zadd(self.keys.index, score)
                )
            except BaseException:
                await self.discard(job)  # no record left that nothing would enqueue
                raise

    async def discard(self, job: Job) -> None:
        self._queued_here.pop(job.id, None)
        await self.delete(job)

    async def delete(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        path = self._files.pop(job.id, None)
        if path is not None:
            path.unlink(missing_ok=True)
        redis = self.redis.client()

        async def forget() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.job(job.id), self.keys.leases(job.id))
                pipe.zrem(self.keys.index, job.id)
                await pipe.execute()

        await self.redis.command(f"delete job {job.id}", forget)

    async def page(self, after: str | None, limit: int, newest_first: bool) -> JobPage:
        redis, index = self.redis.client(), self.keys.index
        start = 0
        if after is not None:
            rank_of = redis.zrevrank if newest_first else redis.zrank
            rank: Any = await self.redis.command(f"find job {after}", lambda: rank_of(index, after))
            if rank is None:
                raise JobNotFound(after)
            start = int(rank) + 1
        jobs: list[Job] = []
        gone: list[str] = []  # expired records still in the index
        while len(jobs) <= limit:  # one more than the page says whether more follow
            want = limit + 1 - len(jobs)
            ids = await self._index_range(start, start + want - 1, newest_first)
            start += len(ids)
            for job_id in ids:
                try:
                    jobs.append(await self.get(job_id))
                except JobNotFound:
                    gone.append(job_id)
            if len(ids) < want:
                break
        if gone:
            await self.redis.command("prune the index", lambda: redis.zrem(index, *gone))
        return JobPage(jobs[:limit], len(jobs) > limit)

    async def _index_range(self, first: int, last: int, newest_first: bool) -> list[str]:
        redis = self.redis.client()
        ids = await self.redis.command(
            "list jobs", lambda: redis.zrange(self.keys.index, first, last, desc=newest_first)
        )
        return [text(job_id) for job_id in ids]

    async def enqueue(self, job: Job) -> None:
        self.broker.disown(job.id)  # the worker that takes it publishes from now on
        redis = self.redis.client()
        order = await self.redis.command("number a job", lambda: redis.incr(self.keys.order))
        score = str((100 - job.spec.priority) * SCORE_BASE + int(order))
        self._queued_here[job.id]["score"] = score
        await self.redis.script(
            "enqueue",
            f"queue job {job.id}",
            [self.keys.job(job.id), self.keys.queue],
            [job.id, score, self.channel, "queued"],
        )

    async def get(self, job_id: str) -> Job:
        values = await self._view(job_id)
        if values is None:
            self._jobs.pop(job_id, None)
            path = self._files.pop(job_id, None)  # deleted (or expired) elsewhere
            if path is not None:
                path.unlink(missing_ok=True)
            raise JobNotFound(job_id)
        job = self._jobs.get(job_id)
        if job is None:
            job = job_from_view(job_id, values)
            self._remember(job)
        apply_view(job, values)
        return job

    async def counts(self) -> tuple[int, int]:
        redis = self.redis.client()

        async def both() -> tuple[int, int]:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard(self.keys.queue)
                pipe.zcard(self.keys.active)
                queued, active = await pipe.execute()
            return int(queued), int(active)

        return await self.redis.command("count jobs", both)

    async def cancel(self, job: Job, code: str, message: str) -> CancelOutcome:
        error = cancel_error(code, message)
        now = time.time()
        outcome = await self.redis.script(
            "cancel",
            f"cancel job {job.id}",
            [self.keys.job(job.id), self.keys.queue, self.keys.active],
            [
                job.id,
                pack({"code": code, "message": message}),
                repr(now),
                pack_error(error),
                pack_terminal(ErrorPayload.of(error)),
                self.dead_ms,
                self.channel,
                f"cancel {job.id}",
            ],
        )
        outcome = text(outcome)
        if outcome == "missing":
            raise JobNotFound(job.id)
        if outcome == "queued":
            self._queued_here.pop(job.id, None)
            job.state.status, job.state.error, job.state.finished_at = "cancelled", error, now
        elif outcome == "finished":
            await self.get(job.id)  # so the caller reports the real final state
        return outcome  # type: ignore[return-value]

    async def _settle(self, job: Job) -> None:
        last_seq = job.state.last_seq
        self._running.pop(job.id, None)
        self._records.pop(job.id, None)
        self._queued_here.pop(job.id, None)
        try:
            await self.redis.script(
                "settle",
                f"settle job {job.id}",
                [self.keys.job(job.id), self.keys.active, self.keys.leases(job.id)],
                [job.id, self.finished_ttl_ms, self.channel, f"finished {job.id}", last_seq],
            )
        finally:
            job.done.set()
            handle = self._jobs.get(job.id)
            if handle is not None and handle is not job:
                self._tasks.spawn(self._refresh([handle]))

    def lease_held(self, job: Job) -> None:
        self._tasks.spawn(self._lease(job.id, self.lease_ms))

    def lease_dropped(self, job: Job, grace_s: float) -> None:
        self._tasks.spawn(self._lease(job.id, round(grace_s * 1000) if grace_s > 0 else None))

    async def held_elsewhere(self, job: Job) -> bool:
        count = await self.redis.script(
            "held", f"count holders of job {job.id}", [self.keys.leases(job.id)], [self.identity]
        )
        return int(count) > 0

    def remember_file(self, job_id: str, path: Path) -> None:
        self._files[job_id] = path

    # -- the worker side ------------------------------------------------------------------
    async def claim(
        self,
        accept: Accept = ANY,
        timeout_s: float | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> Job | None:
        self.is_worker = True
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        kinds = ["1" if accept.live else "0", "1" if accept.offline else "0"]
        while not self._stopping:
            wake = self._wake
            try:
                reply = await self.redis.script(
                    "claim",
                    "take a job",
                    [self.keys.queue, self.keys.active],
                    [self.prefix, self.identity, repr(time.time()), self.dead_ms, *kinds],
                )
            except BrokerUnavailable as exc:
                log.warning("cannot take jobs: %s; retrying", exc)
                reply = None
            if reply:
                fields = hash_fields(reply)
                job = job_from_claim(fields)
                self._running[job.id] = job
                self._records[job.id] = fields
                if self._stopping:  # stopped while taking it: give it back
                    await self.give_back(job)
                    return None
                await self._check_cancel(job)
                return job
            wait_s = self.poll_s if deadline is None else min(self.poll_s, deadline - loop.time())
            if wait_s <= 0 or (interrupt is not None and interrupt.is_set()):
                return None
            # Woken by "queued" (or a poll, if one was lost), or by the caller.
            await wait_any([wake, *([interrupt] if interrupt else [])], wait_s)
        return None

    def stop_claiming(self) -> None:
        self._stopping = True
        self._notify_claimers()

    async def report_load(self, load: WorkerLoad) -> None:
        client = self.redis.client()
        packed = pack(load.to_dict())
        await self.redis.command(
            "report this worker's load", lambda: client.hset(self.keys.load, load.worker, packed)
        )

    async def loads(self) -> list[WorkerLoad]:
        client = self.redis.client()
        reports = await self.redis.command(
            "read the workers' loads", lambda: client.hgetall(self.keys.load)
        )
        fresh: list[WorkerLoad] = []
        stale: list[WorkerLoad] = []
        oldest = time.time() - self.dead_ms / 1000
        for packed in reports.values():
            load = WorkerLoad.from_dict(msgpack.unpackb(packed, raw=False))
            (fresh if load.at >= oldest else stale).append(load)
        if stale:
            names = [load.worker for load in stale]
            await self.redis.command(
                "forget stale loads", lambda: client.hdel(self.keys.load, *names)
            )
        return fresh

    async def record(self, job: Job) -> bool:
        return await self._fenced("record", job, progress_fields(job))

    async def finish(self, job: Job, terminal: Terminal) -> bool:
        self._running.pop(job.id, None)  # no more heartbeats: `active` now holds the deadline
        changes = {**final_fields(job), "terminal": pack_terminal(terminal)}
        try:
            return await self._fenced("finish", job, changes, active=True)
        except BrokerUnavailable as exc:
            log.error("job %s: cannot store its final state: %s", job.id, exc)
            return False

    async def _fenced(
        self, script: str, job: Job, changes: dict[str, Any], *, active: bool = False
    ) -> bool:
        """Run `script` (record, finish) if the job is still this worker's attempt; restore
        the job first if Redis lost it."""
        if active:
            keys = [self.keys.job(job.id), self.keys.active]
            args: list[Any] = [job.id, job.state.worker or "", job.state.attempt, self.dead_ms]
        else:
            keys, args = [self.keys.job(job.id)], [job.state.worker or "", job.state.attempt]
        record = self._records.get(job.id)
        if record is not None:
            record.update(changes)
        for _ in range(2):
            stored = int(
                await self.redis.script(
                    script, f"store job {job.id}", keys, [*args, *pairs(changes)]
                )
            )
            if stored >= 0:
                if stored == 0:
                    log.warning("job %s is no longer this worker's (attempt %d)", job.id,
                                job.state.attempt)  # fmt: skip
                return bool(stored)
            await self._restore_running(job)  # Redis lost it: put ours back, then again
        return False

    async def give_back(self, job: Job) -> bool:
        """Requeue `job` where it was (its attempt not counted): another worker continues
        its log. Fenced: nothing happens if the job is no longer this worker's, or if a
        cancel was asked for (False: the caller ends it)."""
        requeued = await self.redis.script(
            "give_back",
            f"give back job {job.id}",
            [self.keys.job(job.id), self.keys.active, self.keys.queue],
            [job.id, self.identity, job.state.attempt, self.channel, "queued"],
        )
        if requeued:
            self._running.pop(job.id, None)
            self._records.pop(job.id, None)
        else:
            await self._check_cancel(job)  # so the caller sees why
        return bool(requeued)

    async def _check_cancel(self, job: Job) -> None:
        redis = self.redis.client()
        request = await self.redis.command(
            f"read job {job.id}", lambda: redis.hget(self.keys.job(job.id), "cancel")
        )
        if request:
            self._apply_cancel(job, request)

    def _apply_cancel(self, job: Job, request: bytes | str) -> None:
        fields = msgpack.unpackb(request, raw=False)
        job.stop(fields.get("code", "cancelled"), fields.get("message", "the job was cancelled"))

    # -- handles ----------------------------------------------------------------------------
    async def _view(self, job_id: str) -> list[Any] | None:
        redis = self.redis.client()
        values = await self.redis.command(
            f"read job {job_id}", lambda: redis.hmget(self.keys.job(job_id), VIEW_FIELDS)
        )
        return None if values[0] is None else list(values)

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id)
        finished = [j for j in self._jobs.values() if j.state.finished and not j.leases]
        for old in finished[: max(0, len(finished) - self.settings.max_finished_jobs)]:
            self._jobs.pop(old.id, None)
            path = self._files.pop(old.id, None)
            if path is not None:
                path.unlink(missing_ok=True)

    async def _refresh(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        if not jobs:
            return
        redis = self.redis.client()

        async def read() -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hmget(self.keys.job(job.id), VIEW_FIELDS)
                return list(await pipe.execute())

        for job, values in zip(jobs, await self.redis.command("refresh jobs", read), strict=True):
            if values[0] is not None:
                apply_view(job, list(values))
                if job.state.status != "queued":
                    self._queued_here.pop(job.id, None)

    # -- leases -----------------------------------------------------------------------------
    async def _lease(self, job_id: str, hold_ms: int | None) -> None:
        await self.redis.script(
            "lease",
            f"lease job {job_id}",
            [self.keys.leases(job_id)],
            [self.identity, "" if hold_ms is None else hold_ms, self.finished_ttl_ms],
        )

    # -- the control channel ------------------------------------------------------------------
    async def _listen(self) -> None:
        """Follow the control channel; reconnect with backoff; reconcile after a drop."""
        backoff_s = 0.05
        connected_before = False
        loop = asyncio.get_running_loop()
        while not self.closed:
            pubsub: PubSub = self.redis.client().pubsub()
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
                            self._tasks.spawn(self._reconcile())
                        connected_before = True
                        self._notify_claimers()
                    elif message["type"] == "message":
                        self._on_control(text(message["data"]))
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
                self._tasks.spawn(self._check_cancel(job))
        elif op == "finished":
            handle = self._jobs.get(job_id)
            if handle is not None and not handle.state.finished:
                self._tasks.spawn(self._refresh([handle]))

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
            steps = [self._heartbeat, self._hold_leases, self._refresh_open]
            # Just (re)connected: workers get a full period to heartbeat before any reaping.
            if loop.time() - self._connected_at >= self.dead_ms / 1000:
                steps += [self.reaper.reap, self.reaper.reap_orphans, self._prune_index]
            for step in steps:
                try:
                    await step()
                except (BrokerUnavailable, *REDIS_DOWN) as exc:
                    log.debug("job store keeper: %s", exc)
                except Exception:
                    log.exception("job store keeper step %s failed", step.__name__)

    async def _prune_index(self) -> None:
        await self.reaper.prune_index(self.finished_ttl_ms / 1000)

    async def _heartbeat(self) -> None:
        if self.is_worker and not self._stopping:
            redis = self.redis.client()
            expiry = await self.redis.command("read Redis time", redis.time)
            now_ms = int(expiry[0]) * 1000 + int(expiry[1]) // 1000
            await self.redis.command(
                "register this worker",
                lambda: redis.zadd(self.keys.workers, {self.identity: now_ms + self.dead_ms}),
            )
        for job in list(self._running.values()):
            ours = job.state
            reply = await self.redis.script(
                "heartbeat",
                f"heartbeat job {job.id}",
                [self.keys.job(job.id), self.keys.active, self.keys.leases(job.id)],
                [job.id, ours.worker or "", ours.attempt, self.dead_ms, repr(time.time())],
            )
            state, cancel, job.watchers_elsewhere = text(reply[0]), reply[1], int(reply[2])
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
            if job.leases and not job.state.finished:
                await self._lease(job.id, self.lease_ms)

    async def _refresh_open(self) -> None:
        await self._refresh([job for job in self._jobs.values() if not job.state.finished])

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
        restored = await self.redis.script(
            "create",
            f"restore job {job.id}",
            [self.keys.job(job.id), self.keys.leases(job.id), self.keys.active],
            ["", 0, job.id, self.dead_ms, *pairs(record)],
        )
        if restored:
            log.info("restored the state of running job %s after Redis lost it", job.id)

    async def _restore_queued(self, job_id: str, record: dict[str, Any]) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.pipeline_job is None:
            return
        lease = self.identity if job.spec.request_scoped else ""
        if "score" not in record:
            return  # not queued yet: its `submit` is still running and will queue it
        restored = await self.redis.script(
            "create",
            f"restore job {job_id}",
            [self.keys.job(job_id), self.keys.leases(job_id), self.keys.active],
            [lease, self.lease_ms, "", 0, *pairs(record)],
        )
        if not restored:
            return
        data = to_data(start_payload(job))
        data["time"] = time.time()
        with contextlib.suppress(OutOfOrderEvent):
            await self.broker.publish(Event(job_id, 0, "start", data))
        self.broker.disown(job_id)
        await self.redis.script(
            "enqueue",
            f"queue job {job_id}",
            [self.keys.job(job_id), self.keys.queue],
            [job_id, record["score"], self.channel, "queued"],
        )
        log.info("restored queued job %s after Redis lost it", job_id)
