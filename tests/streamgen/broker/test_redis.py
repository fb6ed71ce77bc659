"""RedisBroker on a private redis-server: the broker contract, fan-out across two replicas
(once per replica on the wire), atomic sequencing, and recovery when the pub/sub connection
drops or Redis restarts empty mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from streamgen.broker import (
    Broker,
    BrokerClosed,
    BrokerUnavailable,
    Event,
    OutOfOrderEvent,
    RedisBroker,
    Subscription,
    make_broker,
)
from tests.redis_server import RedisServer, free_port, running_redis

from .broker_contract import BrokerContract, job_events, new_job_id

FAST_RECOVERY = {"op_timeout_s": 10.0, "max_backoff_s": 0.2}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@asynccontextmanager
async def started(url: str, **options: Any) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker(url, **{**FAST_RECOVERY, **options})
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


def run(scenario: Callable[[], Awaitable[None]], timeout_s: float = 30.0) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(scenario(), timeout_s)

    asyncio.run(guarded())


class Collector:
    """Reads a subscription in a task; tests wait on its progress, not on time."""

    def __init__(self, sub: Subscription) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(sub))

    async def _read(self, sub: Subscription) -> list[Event]:
        try:
            async for event in sub:
                self.events.append(event)
                self._changed.set()
        finally:
            self._changed.set()
        return self.events

    async def wait_for(self, count: int) -> None:
        while len(self.events) < count:
            if self.task.done():
                self.task.result()
                raise AssertionError(f"subscription ended after {len(self.events)} events")
            self._changed.clear()
            await self._changed.wait()


class TestRedisBrokerContract(BrokerContract):
    @pytest.fixture(autouse=True)
    def _use_server(self, redis_server: RedisServer) -> None:
        self.url = redis_server.url

    @asynccontextmanager
    async def open_broker(self, **options: Any) -> AsyncIterator[Broker]:
        async with started(self.url, **options) as broker:
            yield broker


def test_two_replicas_get_every_event_and_redis_sends_it_once_per_replica(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        job = new_job_id()
        events = job_events(job, 10, payload_bytes=2000)
        prefix = f"two-{job}"
        async with (
            started(redis_server.url, key_prefix=prefix) as replica_a,
            started(redis_server.url, key_prefix=prefix) as replica_b,
            AsyncExitStack() as stack,
        ):
            collectors = []
            for replica, count in ((replica_a, 3), (replica_b, 4)):
                for _ in range(count):
                    sub = await stack.enter_async_context(replica.subscribe(job))
                    collectors.append(Collector(sub))
            with redis_server.client() as raw:
                channel, control = f"{prefix}:events:{job}", f"{prefix}:control"
                assert dict(raw.pubsub_numsub(channel, control)) == {
                    channel.encode(): 2,  # two replicas, seven clients
                    control.encode(): 2,  # one pub/sub connection per replica
                }
            for event in events:
                await replica_a.publish(event)
            results = await asyncio.gather(*(c.task for c in collectors))
        assert all(result == events for result in results)
        packed_bytes = sum(len(event.pack()) for event in events)
        for replica in (replica_a, replica_b):
            stats = replica.stats()
            assert stats.messages_received == len(events)
            assert stats.bytes_received == packed_bytes
        assert replica_a.stats().bytes_published == packed_bytes
        assert replica_b.stats().events_published == 0

    run(scenario)


def test_two_publishers_racing_for_each_seq_never_interleave(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        job = new_job_id()
        async with started(redis_server.url) as one, started(redis_server.url) as two:
            for seq in range(40):
                kind = "start" if seq == 0 else "progress"
                results = await asyncio.gather(
                    one.publish(Event(job, seq, kind, {"by": "one"})),
                    two.publish(Event(job, seq, kind, {"by": "two"})),
                    return_exceptions=True,
                )
                assert sum(result is None for result in results) == 1, results
                assert sum(isinstance(result, OutOfOrderEvent) for result in results) == 1
            stored = await one.backlog(job)
            assert [event.seq for event in stored] == list(range(40))

    run(scenario)


def test_pubsub_connection_drop_mid_stream_loses_and_doubles_nothing(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        job = new_job_id()
        events = job_events(job, 12)
        async with (
            started(redis_server.url) as publisher,
            started(redis_server.url) as replica,
            replica.subscribe(job) as sub_1,
            replica.subscribe(job, 2) as sub_2,
        ):
            first, second = Collector(sub_1), Collector(sub_2)
            for event in events[:10]:
                await publisher.publish(event)
            await first.wait_for(10)
            with redis_server.client() as raw:
                assert raw.client_kill_filter(_type="pubsub") >= 2
            for event in events[10:]:  # published while the replica reconnects
                await publisher.publish(event)
            assert await first.task == events
            assert await second.task == events[2:]
        assert replica.stats().reconnects >= 1

    run(scenario)


def test_redis_restarted_empty_mid_stream_every_event_arrives_exactly_once() -> None:
    async def scenario(server: RedisServer) -> None:
        job = new_job_id()
        events = job_events(job, 12, payload_bytes=500)
        async with (
            started(server.url) as publisher,
            started(server.url) as replica,
            publisher.subscribe(job) as local_sub,
            replica.subscribe(job) as remote_sub,
            replica.subscribe(job, 5) as late_sub,
        ):
            collectors = [Collector(local_sub), Collector(remote_sub), Collector(late_sub)]
            for event in events[:9]:
                await publisher.publish(event)
            await collectors[1].wait_for(9)
            server.kill()
            rest = asyncio.create_task(publish_each(publisher, events[9:]))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while publisher.stats().retries == 0:  # the publisher hits the dead server
                assert loop.time() < deadline and not rest.done()
                await asyncio.sleep(0.01)  # polling with a deadline
            server.start()  # empty: no backlog, no scripts
            await rest
            results = [await c.task for c in collectors]
        assert results == [events, events, events[5:]]
        assert publisher.stats().restores >= 1
        assert replica.stats().reconnects >= 1
        async with started(server.url) as reader:
            assert await reader.backlog(job) == events

    with running_redis() as server:
        run(lambda: scenario(server))


def test_ended_job_is_restored_by_its_publisher_after_redis_restarts_empty() -> None:
    async def scenario(server: RedisServer) -> None:
        job = new_job_id()
        events = job_events(job, 4)
        async with started(server.url) as publisher, started(server.url) as replica:
            for event in events:
                await publisher.publish(event)
            server.restart_empty()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while await replica.backlog(job) != events:
                assert loop.time() < deadline, "the publisher never restored the backlog"
                await asyncio.sleep(0.05)  # polling with a deadline
            async with replica.subscribe(job) as sub:
                assert [event async for event in sub] == events
            with pytest.raises(OutOfOrderEvent, match="ended"):
                await publisher.publish(Event(job, len(events), "progress", {}))

    with running_redis() as server:
        run(lambda: scenario(server))


async def publish_each(broker: Broker, events: list[Event]) -> None:
    for event in events:
        await broker.publish(event)


def test_close_ends_a_subscription_still_waiting_for_redis() -> None:
    async def scenario(server: RedisServer) -> None:
        broker = RedisBroker(server.url, op_timeout_s=30.0, max_backoff_s=0.2)
        await broker.start()
        server.kill()
        opening = asyncio.create_task(broker.subscribe(new_job_id()).__aenter__())
        for _ in range(5):
            await asyncio.sleep(0)  # let it start opening (it cannot finish: Redis is down)
        assert not opening.done()
        await broker.close()
        with pytest.raises(BrokerClosed):
            await asyncio.wait_for(opening, 5.0)  # not after op_timeout_s

    with running_redis() as server:
        run(lambda: scenario(server))


def test_backlog_keys_carry_the_ttl(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        job = new_job_id()
        prefix = f"ttl-{job}"
        async with started(redis_server.url, backlog_ttl_s=120.0, key_prefix=prefix) as broker:
            for event in job_events(job, 1):
                await broker.publish(event)
        with redis_server.client() as raw:
            for suffix in ("meta", "log", "start"):
                ttl_ms = raw.pttl(f"{prefix}:{{{job}}}:{suffix}")
                assert 100_000 < ttl_ms <= 120_000, (suffix, ttl_ms)

    run(scenario)


def test_start_raises_broker_unavailable_when_redis_is_unreachable() -> None:
    async def scenario() -> None:
        broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", op_timeout_s=0.5)
        with pytest.raises(BrokerUnavailable, match="could not reach Redis"):
            await broker.start()

    run(scenario)


def test_make_broker_gives_a_redis_broker_for_redis_urls() -> None:
    broker = make_broker("redis://127.0.0.1:1/0", backlog_ttl_s=9.0)
    assert isinstance(broker, RedisBroker) and broker.backlog_ttl_s == 9.0


def test_missing_redis_server_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="redis-server is not on PATH"):
        RedisServer()
