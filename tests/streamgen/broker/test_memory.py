"""MemoryBroker: the broker contract, expiry on a fake clock, and `make_broker`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from streamgen.broker import Broker, Event, MemoryBroker, make_broker
from streamgen.broker._local import JobLog, QueueSubscription, Snapshot

from .broker_contract import BrokerContract, job_events, new_job_id


class TestMemoryBrokerContract(BrokerContract):
    @asynccontextmanager
    async def open_broker(self, **options: Any) -> AsyncIterator[Broker]:
        broker = MemoryBroker(**options)
        await broker.start()
        try:
            yield broker
        finally:
            await broker.close()


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_backlog_lives_ttl_after_the_last_event_on_the_injected_clock() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        broker = MemoryBroker(backlog_ttl_s=60.0, clock=clock)
        old, recent = new_job_id(), new_job_id()
        old_events, recent_events = job_events(old, 1), job_events(recent, 1)
        await broker.publish(old_events[0])
        clock.now_s += 30.0
        await broker.publish(recent_events[0])
        clock.now_s += 29.9
        await broker.publish(old_events[1])  # refreshes `old`: its TTL counts from here
        clock.now_s += 30.05  # `recent` is now 59.95 s old, `old` 30.05 s
        assert broker.purge_expired() == 0
        clock.now_s += 0.1
        assert broker.purge_expired() == 1
        assert await broker.backlog(recent) == []
        assert await broker.backlog(old) == old_events[:2]
        clock.now_s += 30.0
        assert await broker.backlog(old) == []

    asyncio.run(scenario())


def test_memory_broker_rejects_bad_settings_by_name() -> None:
    with pytest.raises(ValueError, match="backlog_ttl_s"):
        MemoryBroker(backlog_ttl_s=0)
    with pytest.raises(ValueError, match="max_backlog_bytes"):
        MemoryBroker(max_backlog_bytes=-1)


def test_make_broker_picks_the_broker_by_url() -> None:
    broker = make_broker("memory", backlog_ttl_s=5.0)
    assert isinstance(broker, MemoryBroker) and broker.backlog_ttl_s == 5.0
    with pytest.raises(ValueError, match="url"):
        make_broker("kafka://x")


class GatedSubscription(QueueSubscription):
    """A subscription over a `JobLog` whose backlog reads wait until `gate` is set (the
    await a Redis read has), to test cancellation at that point."""

    def __init__(self, log: JobLog) -> None:
        super().__init__(log.job_id, 0, 16)
        self.log = log
        self.gate = asyncio.Event()
        self.gate.set()

    async def _attach(self) -> None:
        return None

    def _detach(self) -> None:
        return None

    async def _snapshot(self, from_seq: int) -> Snapshot:
        await self.gate.wait()
        return self.log.snapshot(from_seq)


def test_a_cancelled_backlog_read_is_retried_not_the_end_of_the_subscription() -> None:
    async def scenario() -> None:
        job = new_job_id()
        events = job_events(job, 3)
        log = JobLog(job, 1 << 20)
        for event in events[:4]:
            log.append(event, len(event.pack()), 0.0)
        async with GatedSubscription(log) as sub:
            assert [await anext(sub) for _ in range(4)] == events[:4]
            sub.gate.clear()
            sub.resync()  # as after a reconnect: the next call reads the backlog
            waiting = asyncio.ensure_future(anext(sub))
            for _ in range(3):
                await asyncio.sleep(0)  # let it run into the closed gate
            assert not waiting.done()  # blocked in the backlog read
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            for event in events[4:]:
                log.append(event, len(event.pack()), 0.0)
            sub.gate.set()
            got: list[Event] = [event async for event in sub]
        assert got == events[4:]

    asyncio.run(scenario())
