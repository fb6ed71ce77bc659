"""Listing and deleting jobs, the same in both job stores: pages in creation order either
way round, a cursor that continues where a page ended, expired Redis records skipped (and
pruned from the index), and a deleted job gone from lookups, pages and its file."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from streamgen.broker import MemoryBroker
from streamgen.config import Settings
from streamgen.errors import JobNotFound
from streamgen.jobs import Job, JobSpec, JobStore, MemoryJobStore, RedisJobStore
from tests.redis_server import RedisServer, running_redis
from tests.streamgen.jobs.test_redis_store import REQUEST, store


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@asynccontextmanager
async def open_store(kind: str, redis_server: RedisServer | None) -> AsyncIterator[JobStore]:
    if kind == "memory":
        yield MemoryJobStore(Settings(), MemoryBroker())
        return
    assert redis_server is not None
    # A namespace of its own on the module's Redis, so pages hold only this test's jobs.
    async with store(redis_server.url, "api", key_prefix="pages" + secrets.token_hex(4)) as jobs:
        yield jobs


def _job(video_path: Path | None = None, *, listed: bool = True) -> Job:
    spec = JobSpec(
        id="job_" + secrets.token_hex(6), request=REQUEST, model="m", priority=0,
        request_scoped=False, listed=listed,
    )  # fmt: skip
    return Job(spec, video_path=video_path)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def maybe_redis(kind: str, request: pytest.FixtureRequest) -> RedisServer | None:
    return request.getfixturevalue("redis_server") if kind == "redis" else None


def test_pages_in_creation_order_with_a_cursor(kind: str, maybe_redis: RedisServer | None) -> None:
    async def main() -> None:
        async with open_store(kind, maybe_redis) as store:
            made = []
            for _ in range(5):
                job = _job()
                await store.create(job)
                made.append(job.id)
                await store.create(_job(listed=False))  # not a videos-API job: never listed
            newest = await store.page(None, 2, newest_first=True)
            assert [j.id for j in newest.jobs] == made[::-1][:2] and newest.has_more
            rest = await store.page(newest.jobs[-1].id, 10, newest_first=True)
            assert [j.id for j in rest.jobs] == made[::-1][2:] and not rest.has_more
            oldest = await store.page(None, 5, newest_first=False)
            assert [j.id for j in oldest.jobs] == made and not oldest.has_more
            assert (await store.page(made[-1], 3, newest_first=False)).jobs == []
            with pytest.raises(JobNotFound):
                await store.page("job_unknown", 3, newest_first=True)
            hidden = _job(listed=False)
            await store.create(hidden)
            with pytest.raises(JobNotFound):  # not listed: no cursor either
                await store.page(hidden.id, 3, newest_first=True)

    asyncio.run(main())


def test_a_deleted_job_is_gone(kind: str, maybe_redis: RedisServer | None, tmp_path: Path) -> None:
    async def main() -> None:
        async with open_store(kind, maybe_redis) as store:
            video = tmp_path / "kept.mp4"
            video.write_bytes(b"mp4")
            kept, deleted = _job(), _job(video if kind == "memory" else None)
            if kind == "redis":
                store.remember_file(deleted.id, video)  # a video rebuilt from the backlog
            for job in (kept, deleted):
                await store.create(job)
            await store.delete(deleted)
            with pytest.raises(JobNotFound):
                await store.get(deleted.id)
            assert [j.id for j in (await store.page(None, 10, newest_first=True)).jobs] == [kept.id]
            assert not video.exists()
            assert (await store.get(kept.id)).id == kept.id

    asyncio.run(main())


@pytest.mark.redis
def test_expired_records_are_skipped_and_pruned(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with open_store("redis", redis_server) as store:
            assert isinstance(store, RedisJobStore)
            jobs = [_job() for _ in range(4)]
            for job in jobs:
                await store.create(job)
            client = store.redis.client
            await client.delete(store.keys.job(jobs[1].id))  # as if its TTL ran out
            page = await store.page(None, 2, newest_first=False)
            assert [j.id for j in page.jobs] == [jobs[0].id, jobs[2].id] and page.has_more
            assert await client.zscore(store.keys.index, jobs[1].id) is None

    asyncio.run(main())
