"""`RedisJobStore` in this process on a private redis-server (no model, no HTTP): atomic
claims by competing workers, the reaper, fencing of a worker that lost its job, and a claim
that keeps the whole spec. What every store does alike is in `store_contract`."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from segment_pipeline import ResolvedRequest
from streamgen.broker import RedisBroker
from streamgen.config import Settings
from streamgen.events import StartPayload
from streamgen.jobs import Job, JobSpec, KeyCharge, RedisJobStore, publish
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.redis

REQUEST = ResolvedRequest(
    prompt="a red ball", negative_prompt="", seed=1, width=64, height=64, fps=8.0,
    total_frames=28, num_inference_steps=2, guidance_scale=1.0, segment_frames=12,
    overlap_frames=4,
)  # fmt: skip


START = StartPayload(
    codec="avc1.64000a", mime='video/mp4; codecs="avc1.64000a"', init_segment=b"init",
    width=64, height=64, fps=8.0, total_segments=3, total_frames=28, seed=1, model="m",
)  # fmt: skip


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@asynccontextmanager
async def store(
    url: str, name: str, *, key_prefix: str = "streamgen", **settings: object
) -> AsyncIterator[RedisJobStore]:
    values = {"broker": url, "worker_heartbeat_seconds": 0.05,
              "worker_dead_after_seconds": 0.4, **settings}  # fmt: skip
    broker = RedisBroker(url, key_prefix=key_prefix)
    await broker.start()
    jobs = RedisJobStore(Settings().replace(**values), broker, identity=name,
                         key_prefix=key_prefix)  # fmt: skip
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.close()
        await broker.close()


async def queue(jobs: RedisJobStore, priority: int, **fields: object) -> Job:
    spec = JobSpec(
        id="job_" + secrets.token_hex(6), request=REQUEST, model="m", priority=priority,
        request_scoped=False, **fields,  # type: ignore[arg-type]
    )  # fmt: skip
    job = Job(spec)
    await jobs.create(job)
    await publish(jobs.broker, job, START)
    await jobs.enqueue(job)
    return job


def test_competing_workers_take_every_job_exactly_once(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with (
            store(redis_server.url, "api") as api,
            store(redis_server.url, "w1") as w1,
            store(redis_server.url, "w2") as w2,
        ):
            queued = [await queue(api, p % 3) for p in range(12)]
            claims = await asyncio.gather(*(ws.claim() for ws in [w1, w2] * 6))
            claimed = [job.id for job in claims if job is not None]
            assert sorted(claimed) == sorted(job.id for job in queued), "a job taken twice"
            assert {job.state.worker for job in claims if job} == {"w1", "w2"}

    asyncio.run(main())


def test_a_silent_worker_loses_its_job_and_cannot_write_it_any_more(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        async with store(redis_server.url, "api") as api:
            job = await queue(api, 0)
            async with store(redis_server.url, "dead") as dead:
                taken = await dead.claim()
                assert taken is not None and taken.id == job.id
                dead.control._keeper.cancel()  # type: ignore[union-attr]  # it stops heartbeating
                seen = await api.get(job.id)
                assert seen.state.status == "running" and seen.state.worker == "dead"
                await asyncio.wait_for(seen.done.wait(), 10)  # the api's reaper ends it
                assert seen.state.status == "failed" and seen.state.error is not None
                assert seen.state.error.code == "worker_lost"
                events = await api.broker.backlog(job.id)
                assert [e.type for e in events] == ["start", "error"]
                assert events[-1].data["code"] == "worker_lost"
                taken.state.segments_done = 3
                assert not await dead.record(taken), "a lost job was written"
                assert (await api.get(job.id)).state.segments_done == 0

    asyncio.run(main())


def test_a_retried_job_goes_back_to_the_queue_once(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with store(redis_server.url, "api") as api:
            job = await queue(api, 0, max_attempts=2)
            for attempt in (1, 2):
                async with store(redis_server.url, f"w{attempt}") as worker:
                    taken = await worker.claim()
                    assert taken is not None and taken.state.attempt == attempt
                    worker.control._keeper.cancel()  # type: ignore[union-attr]
                    seen = await api.get(job.id)
                    if attempt == 1:

                        async def requeued() -> None:
                            while (await api.get(job.id)).state.status != "queued":
                                await asyncio.sleep(0.05)  # polling under wait_for's deadline

                        await asyncio.wait_for(requeued(), 10)
                    else:
                        await asyncio.wait_for(seen.done.wait(), 10)
                        assert seen.state.status == "failed" and seen.state.attempt == 2

    asyncio.run(main())


def test_a_claimed_job_keeps_what_was_asked(redis_server: RedisServer) -> None:
    """What the worker takes is the whole spec: a remix's origin, its listing, its trace
    context and its key's charge (the claim path once dropped some of them)."""
    charge = KeyCharge("key_abc", 12.5, 20_000, 30.25)

    async def main() -> None:
        async with store(redis_server.url, "api") as api, store(redis_server.url, "w") as w:
            job = await queue(
                api, 3, remixed_from="job_origin", listed=True, live=True, charge=charge,
                traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )  # fmt: skip
            taken = await w.claim()
            assert taken is not None and taken.spec == job.spec
            assert taken.spec.remixed_from == "job_origin" and taken.spec.listed
            assert taken.state.status == "running" and taken.state.worker == "w"

    asyncio.run(main())
