"""MemoryBroker: the broker contract, expiry on a fake clock, and `make_broker`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from streamgen.broker import Broker, MemoryBroker, make_broker

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
