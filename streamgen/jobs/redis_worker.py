"""The worker side of the Redis job store: what a `streamgen worker` calls for the jobs it
runs (claim, record progress, finish, give back, heartbeat, load reports). Every write is
fenced on (worker, attempt), so a worker that lost a job cannot overwrite it; a job Redis
lost is put back from this worker's copy of its record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgpack

from ..broker.base import BrokerUnavailable
from ..events import Terminal
from .codec import (
    final_fields,
    hash_fields,
    job_from_claim,
    pack,
    pack_terminal,
    pairs,
    progress_fields,
    text,
)
from .load import WorkerLoad
from .record import Job
from .redis_schema import StoreContext
from .store import ANY, Accept, wait_any

log = logging.getLogger(__name__)


class WorkerSide:
    """A worker's part of the Redis job store (see the module docstring).

    `running`: the jobs this worker runs (heartbeated); `records`: their stored fields, to
    restore them if Redis loses them; `is_worker`: set by `claim`, so this process also
    heartbeats itself in the workers' set.
    """

    def __init__(self, context: StoreContext) -> None:
        self.redis = context.redis
        self.keys = context.keys
        self.identity = context.identity
        self.dead_ms = context.dead_ms
        self.poll_s = context.poll_s
        self.is_worker = False
        self.stopping = False
        self.running: dict[str, Job] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()  # replaced on each wake-up; claimers wait on it

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
        kinds += sorted(accept.models or ())
        while not self.stopping:
            wake = self._wake
            try:
                reply = await self.redis.script(
                    "claim",
                    "take a job",
                    [self.keys.queue, self.keys.active],
                    [self.keys.prefix, self.identity, repr(time.time()), self.dead_ms, *kinds],
                )
            except BrokerUnavailable as exc:
                log.warning("cannot take jobs: %s; retrying", exc)
                reply = None
            if reply:
                fields = hash_fields(reply)
                job = job_from_claim(fields)
                self.running[job.id] = job
                self.records[job.id] = fields
                if self.stopping:  # stopped while taking it: give it back
                    await self.give_back(job)
                    return None
                await self.check_cancel(job)
                return job
            wait_s = self.poll_s if deadline is None else min(self.poll_s, deadline - loop.time())
            if wait_s <= 0 or (interrupt is not None and interrupt.is_set()):
                return None
            # Woken by "queued" (or a poll, if one was lost), or by the caller.
            await wait_any([wake, *([interrupt] if interrupt else [])], wait_s)
        return None

    def stop_claiming(self) -> None:
        self.stopping = True
        self.notify_claimers()

    async def report_load(self, load: WorkerLoad) -> None:
        client = self.redis.client
        packed = pack(load.to_dict())
        await self.redis.call(
            "report this worker's load", lambda: client.hset(self.keys.load, load.worker, packed)
        )

    async def loads(self) -> list[WorkerLoad]:
        client = self.redis.client
        reports = await self.redis.call(
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
            await self.redis.call("forget stale loads", lambda: client.hdel(self.keys.load, *names))
        return fresh

    async def record(self, job: Job) -> bool:
        return await self._fenced("record", job, progress_fields(job))

    async def finish(self, job: Job, terminal: Terminal) -> bool:
        self.running.pop(job.id, None)  # no more heartbeats: `active` now holds the deadline
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
        record = self.records.get(job.id)
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
            await self.restore_running(job)  # Redis lost it: put ours back, then again
        return False

    async def give_back(self, job: Job) -> bool:
        """Requeue `job` where it was (its attempt not counted): another worker continues
        its log. Fenced: nothing happens if the job is no longer this worker's, or if a
        cancel was asked for (False: the caller ends it)."""
        requeued = await self.redis.script(
            "give_back",
            f"give back job {job.id}",
            [self.keys.job(job.id), self.keys.active, self.keys.queue],
            [job.id, self.identity, job.state.attempt, self.keys.channel, "queued"],
        )
        if requeued:
            self.running.pop(job.id, None)
            self.records.pop(job.id, None)
        else:
            await self.check_cancel(job)  # so the caller sees why
        return bool(requeued)

    async def check_cancel(self, job: Job) -> None:
        redis = self.redis.client
        request = await self.redis.call(
            f"read job {job.id}", lambda: redis.hget(self.keys.job(job.id), "cancel")
        )
        if request:
            self._apply_cancel(job, request)

    def _apply_cancel(self, job: Job, request: bytes | str) -> None:
        fields = msgpack.unpackb(request, raw=False)
        job.stop(fields.get("code", "cancelled"), fields.get("message", "the job was cancelled"))

    async def heartbeat(self) -> None:
        if self.is_worker and not self.stopping:
            redis = self.redis.client
            expiry = await self.redis.call("read Redis time", redis.time)
            now_ms = int(expiry[0]) * 1000 + int(expiry[1]) // 1000
            await self.redis.call(
                "register this worker",
                lambda: redis.zadd(self.keys.workers, {self.identity: now_ms + self.dead_ms}),
            )
        for job in list(self.running.values()):
            ours = job.state
            reply = await self.redis.script(
                "heartbeat",
                f"heartbeat job {job.id}",
                [self.keys.job(job.id), self.keys.active, self.keys.leases(job.id)],
                [job.id, ours.worker or "", ours.attempt, self.dead_ms, repr(time.time())],
            )
            state, cancel, job.watchers_elsewhere = text(reply[0]), reply[1], int(reply[2])
            if state == "missing":
                await self.restore_running(job)
            elif state == "lost" and self.running.pop(job.id, None) is not None:
                log.warning("job %s was taken from this worker; stopping it", job.id)
                job.cancel_code = "worker_lost"
                job.cancel_message = "the job was taken from this worker"
                job.cancel.set()
            elif cancel:
                self._apply_cancel(job, cancel)

    async def restore_running(self, job: Job) -> None:
        record = self.records.get(job.id)
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

    def notify_claimers(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()
