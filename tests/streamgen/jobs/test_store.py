"""The job-store contract (`store_contract`) against both stores: `MemoryJobStore`, and
`RedisJobStore` on a private redis-server (an API replica and a worker, two stores on one
Redis, in a namespace of their own per test)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from streamgen.broker import MemoryBroker
from streamgen.config import Settings
from streamgen.jobs import MemoryJobStore
from tests.redis_server import RedisServer, running_redis
from tests.streamgen.jobs.test_redis_store import store

from .store_contract import JobStoreContract, Stores


class TestMemoryJobStoreContract(JobStoreContract):
    @asynccontextmanager
    async def open_stores(self) -> AsyncIterator[Stores]:
        jobs = MemoryJobStore(Settings(), MemoryBroker())
        yield jobs, jobs


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.mark.redis
class TestRedisJobStoreContract(JobStoreContract):
    @pytest.fixture(autouse=True)
    def _redis(self, redis_server: RedisServer) -> None:
        self.url = redis_server.url

    @asynccontextmanager
    async def open_stores(self) -> AsyncIterator[Stores]:
        prefix = "contract" + secrets.token_hex(4)
        async with (
            store(self.url, "api", key_prefix=prefix) as api,
            store(self.url, "worker", key_prefix=prefix) as worker,
        ):
            yield api, worker
