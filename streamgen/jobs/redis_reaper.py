"""Reaping the Redis job store: jobs whose worker stopped heartbeating, and request-scoped
jobs that no replica holds any more.

Any process's keeper runs the `Reaper` every `worker_heartbeat_seconds`. A job in `active`
whose deadline passed is either running (its worker is gone: requeued if it has attempts
left, `worker_retry_failed_jobs` at submission, else failed with code ``worker_lost``, or
cancelled if a cancel was asked for) or finished but unsettled (its final state was stored,
its terminal event not: the publisher died in between), and then that event is published.
"""

from __future__ import annotations

import logging
import time

import msgpack

from ..broker.base import Broker, BrokerUnavailable
from ..broker.redis_ops import REDIS_DOWN, RetryingRedis
from ..errors import GenerationFailed
from ..events import ErrorPayload, Terminal
from .codec import pack, pack_error, pack_terminal, pairs, text, unpack_terminal
from .log import publish_terminal
from .record import cancel_error
from .redis_schema import RedisKeys
from .store import JobStore

log = logging.getLogger(__name__)


class Reaper:
    """Reaps for one Redis job `store` (see the module docstring) through its `redis` and `keys`;
    `dead_ms` is how long a worker may go without heartbeating (milliseconds)."""

    def __init__(
        self, store: JobStore, redis: RetryingRedis, keys: RedisKeys, broker: Broker, dead_ms: int
    ) -> None:
        self.store = store
        self.redis = redis
        self.keys = keys
        self.broker = broker
        self.dead_ms = dead_ms

    async def reap(self) -> None:
        """End or requeue up to 16 `active` jobs whose deadline passed (each leased to this
        reaper for `worker_dead_after_seconds`, so one reaper handles each)."""
        redis, keys = self.redis, self.keys
        reply = await redis.script("due", "find lapsed jobs", [keys.active], [self.dead_ms, 16])
        lease, due = int(reply[0]), [text(item) for item in reply[1]]
        for job_id in due:
            try:
                await self._reap_one(job_id, lease)
            except (BrokerUnavailable, *REDIS_DOWN):
                raise
            except Exception:
                log.exception("reaping job %s failed", job_id)

    async def _reap_one(self, job_id: str, lease: int) -> None:
        store, redis, keys = self.store, self.redis, self.keys
        client = redis.client
        key = keys.job(job_id)
        fields = ("status", "attempt", "max_attempts", "cancel", "terminal", "worker")
        values = await redis.call(f"read job {job_id}", lambda: client.hmget(key, fields))
        status, attempt, max_attempts, cancel, stored_terminal, worker = values
        if status is None:
            await redis.call("forget a gone job", lambda: client.zrem(keys.active, job_id))
            return
        job = await store.get(job_id)
        if status == b"running":
            if cancel is None and int(attempt or 1) < int(max_attempts or 1):
                done = await redis.script(
                    "lapse",
                    f"requeue job {job_id}",
                    [key, keys.active, keys.queue],
                    [job_id, lease, text(attempt), "requeue", keys.channel, "queued"],
                )
                if done:
                    log.warning(
                        "job %s: worker %s stopped heartbeating; requeued (attempt %s of %s)",
                        job_id, text(worker), text(attempt), text(max_attempts),
                    )  # fmt: skip
                    await store.get(job_id)
                return
            if cancel is not None:
                request = msgpack.unpackb(cancel, raw=False)
                error = cancel_error(request["code"], request["message"])
                status_text = "cancelled"
            else:
                error = GenerationFailed(
                    f"the worker running this job ({text(worker)}) stopped heartbeating for "
                    f"{self.dead_ms / 1000:g} s",
                    code="worker_lost",
                )
                status_text = "failed"
            terminal: Terminal = ErrorPayload.of(error)
            now = time.time()
            done = await redis.script(
                "lapse",
                f"fail job {job_id}",
                [key, keys.active, keys.queue],
                [job_id, lease, text(attempt), "end", *pairs({
                    "status": status_text, "error": pack_error(error),
                    "terminal": pack_terminal(terminal), "finished_at": repr(now),
                })],
            )  # fmt: skip
            if not done:
                return
            log.warning("job %s: %s", job_id, error.message)
            job.state.status, job.state.error, job.state.finished_at = status_text, error, now  # type: ignore[assignment]
        elif stored_terminal is not None:
            terminal = unpack_terminal(stored_terminal)
        else:
            await store.settle(job)  # finished before `terminal` was stored
            return
        await publish_terminal(self.broker, store, job, terminal)

    async def prune_index(self, older_than_s: float, batch: int = 100) -> None:
        """Drop from the listing index up to `batch` ids older than `older_than_s` whose
        records expired (a finished job's record lives `backlog_ttl_seconds`)."""
        client, keys = self.redis.client, self.keys
        cutoff = int((time.time() - older_than_s) * 1_000_000)

        async def prune() -> None:
            found = await client.zrangebyscore(keys.index, "-inf", cutoff, start=0, num=batch)
            old = [text(job_id) for job_id in found]
            if not old:
                return
            async with client.pipeline(transaction=False) as pipe:
                for job_id in old:
                    pipe.exists(keys.job(job_id))
                alive = await pipe.execute()
            gone = [job_id for job_id, exists in zip(old, alive, strict=True) if not exists]
            if gone:
                await client.zrem(keys.index, *gone)

        await self.redis.call("prune the listing index", prune)

    async def reap_orphans(self) -> None:
        """Ask the workers of request-scoped running jobs that no replica holds a lease on
        any more (their replicas died) to stop."""
        redis, keys = self.redis, self.keys
        request = pack({"code": "cancelled", "message": "the last subscriber disconnected"})
        orphans = await redis.script(
            "orphans",
            "find orphaned jobs",
            [keys.active],
            [keys.prefix, request, keys.channel],
        )
        for job_id in orphans or ():
            log.info("job %s: no replica holds it any more; cancelling", text(job_id))
