"""The API side of the Redis job store: what replicas call for the jobs they accept and
serve (create, queue, look up, list, cancel, leases on request-scoped jobs), and the handles
(`Job` objects) this process keeps of them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..broker.base import Event, OutOfOrderEvent
from ..errors import JobNotFound, ServiceError
from ..events import ErrorPayload, to_data
from .codec import (
    VIEW_FIELDS,
    apply_view,
    job_from_view,
    new_record,
    pack,
    pack_error,
    pack_terminal,
    pairs,
    text,
)
from .log import start_payload
from .record import Job, cancel_error
from .redis_schema import SCORE_BASE, StoreContext
from .store import CancelOutcome, JobPage

log = logging.getLogger(__name__)


class ApiSide:
    """A replica's part of the Redis job store (see the module docstring).

    `handles`: the jobs this process has looked at, oldest first; `queued`: the records of
    the jobs it submitted that are still queued, kept to restore them if Redis loses them.
    """

    def __init__(self, context: StoreContext) -> None:
        self.context = context
        self.settings = context.settings
        self.broker = context.broker
        self.redis = context.redis
        self.keys = context.keys
        self.identity = context.identity
        self.tasks = context.tasks
        self.lease_ms = context.lease_ms
        self.dead_ms = context.dead_ms
        self.finished_ttl_ms = context.finished_ttl_ms
        self.handles: OrderedDict[str, Job] = OrderedDict()
        self.files: dict[str, Path] = {}
        self.queued: dict[str, dict[str, Any]] = {}

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
        self.queued[job.id] = record
        self._remember(job)
        if job.spec.listed:
            redis, score = self.redis.client, {job.id: int(job.spec.created_at * 1_000_000)}
            try:
                await self.redis.call(
                    f"index job {job.id}", lambda: redis.zadd(self.keys.index, score)
                )
            except BaseException:
                await self.discard(job)  # no record left that nothing would enqueue
                raise

    async def discard(self, job: Job) -> None:
        self.queued.pop(job.id, None)
        await self.delete(job)

    async def delete(self, job: Job) -> None:
        self.handles.pop(job.id, None)
        path = self.files.pop(job.id, None)
        if path is not None:
            path.unlink(missing_ok=True)
        redis = self.redis.client

        async def forget() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.job(job.id), self.keys.leases(job.id))
                pipe.zrem(self.keys.index, job.id)
                await pipe.execute()

        await self.redis.call(f"delete job {job.id}", forget)

    async def page(self, after: str | None, limit: int, newest_first: bool) -> JobPage:
        redis, index = self.redis.client, self.keys.index
        start = 0
        if after is not None:
            rank_of = redis.zrevrank if newest_first else redis.zrank
            rank: Any = await self.redis.call(f"find job {after}", lambda: rank_of(index, after))
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
            await self.redis.call("prune the index", lambda: redis.zrem(index, *gone))
        return JobPage(jobs[:limit], len(jobs) > limit)

    async def _index_range(self, first: int, last: int, newest_first: bool) -> list[str]:
        redis = self.redis.client
        ids = await self.redis.call(
            "list jobs", lambda: redis.zrange(self.keys.index, first, last, desc=newest_first)
        )
        return [text(job_id) for job_id in ids]

    async def enqueue(self, job: Job) -> None:
        self.broker.disown(job.id)  # the worker that takes it publishes from now on
        redis = self.redis.client
        order = await self.redis.call("number a job", lambda: redis.incr(self.keys.order))
        score = str((100 - job.spec.priority) * SCORE_BASE + int(order))
        self.queued[job.id]["score"] = score
        await self.redis.script(
            "enqueue",
            f"queue job {job.id}",
            [self.keys.job(job.id), self.keys.queue],
            [job.id, score, self.keys.channel, "queued"],
        )

    async def get(self, job_id: str) -> Job:
        values = await self._view(job_id)
        if values is None:
            self.handles.pop(job_id, None)
            path = self.files.pop(job_id, None)  # deleted (or expired) elsewhere
            if path is not None:
                path.unlink(missing_ok=True)
            raise JobNotFound(job_id)
        job = self.handles.get(job_id)
        if job is None:
            job = job_from_view(job_id, values)
            self._remember(job)
        apply_view(job, values)
        return job

    async def counts(self) -> tuple[int, int]:
        redis = self.redis.client

        async def both() -> tuple[int, int]:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard(self.keys.queue)
                pipe.zcard(self.keys.active)
                queued, active = await pipe.execute()
            return int(queued), int(active)

        return await self.redis.call("count jobs", both)

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
                self.keys.channel,
                f"cancel {job.id}",
            ],
        )
        outcome = text(outcome)
        if outcome == "missing":
            raise JobNotFound(job.id)
        if outcome == "queued":
            self.queued.pop(job.id, None)
            job.state.status, job.state.error, job.state.finished_at = "cancelled", error, now
        elif outcome == "finished":
            await self.get(job.id)  # so the caller reports the real final state
        return outcome  # type: ignore[return-value]

    async def settle(self, job: Job) -> None:
        """Mark `job` settled in Redis (its terminal event is published) and wake its waiters."""
        last_seq = job.state.last_seq
        self.queued.pop(job.id, None)
        try:
            await self.redis.script(
                "settle",
                f"settle job {job.id}",
                [self.keys.job(job.id), self.keys.active, self.keys.leases(job.id)],
                [job.id, self.finished_ttl_ms, self.keys.channel, f"finished {job.id}", last_seq],
            )
        finally:
            job.done.set()
            handle = self.handles.get(job.id)
            if handle is not None and handle is not job:
                self.tasks.spawn(self.refresh([handle]))

    def lease_held(self, job: Job) -> None:
        self.tasks.spawn(self._lease(job.id, self.lease_ms))

    def lease_dropped(self, job: Job, grace_s: float) -> None:
        self.tasks.spawn(self._lease(job.id, round(grace_s * 1000) if grace_s > 0 else None))

    async def held_elsewhere(self, job: Job) -> bool:
        count = await self.redis.script(
            "held", f"count holders of job {job.id}", [self.keys.leases(job.id)], [self.identity]
        )
        return int(count) > 0

    def remember_file(self, job_id: str, path: Path) -> None:
        self.files[job_id] = path

    # -- handles ----------------------------------------------------------------------------
    async def _view(self, job_id: str) -> list[Any] | None:
        redis = self.redis.client
        values = await self.redis.call(
            f"read job {job_id}", lambda: redis.hmget(self.keys.job(job_id), VIEW_FIELDS)
        )
        return None if values[0] is None else list(values)

    def _remember(self, job: Job) -> None:
        self.handles[job.id] = job
        self.handles.move_to_end(job.id)
        finished = [j for j in self.handles.values() if j.state.finished and not j.leases]
        for old in finished[: max(0, len(finished) - self.settings.max_finished_jobs)]:
            self.handles.pop(old.id, None)
            path = self.files.pop(old.id, None)
            if path is not None:
                path.unlink(missing_ok=True)

    async def refresh(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        if not jobs:
            return
        redis = self.redis.client

        async def read() -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hmget(self.keys.job(job.id), VIEW_FIELDS)
                return list(await pipe.execute())

        for job, values in zip(jobs, await self.redis.call("refresh jobs", read), strict=True):
            if values[0] is not None:
                apply_view(job, list(values))
                if job.state.status != "queued":
                    self.queued.pop(job.id, None)

    # -- leases -----------------------------------------------------------------------------
    async def _lease(self, job_id: str, hold_ms: int | None) -> None:
        await self.redis.script(
            "lease",
            f"lease job {job_id}",
            [self.keys.leases(job_id)],
            [self.identity, "" if hold_ms is None else hold_ms, self.finished_ttl_ms],
        )

    async def hold_leases(self) -> None:
        for job in list(self.handles.values()):
            if job.leases and not job.state.finished:
                await self._lease(job.id, self.lease_ms)

    async def refresh_open(self) -> None:
        await self.refresh([job for job in self.handles.values() if not job.state.finished])

    async def restore_queued(self, job_id: str, record: dict[str, Any]) -> None:
        job = self.handles.get(job_id)
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
            [job_id, record["score"], self.keys.channel, "queued"],
        )
        log.info("restored queued job %s after Redis lost it", job_id)
