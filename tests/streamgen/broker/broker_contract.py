"""The broker contract, as tests every broker passes.

Use: subclass `BrokerContract` in a test module as ``TestXxxBrokerContract`` and implement
`open_broker(**options)`, an async context manager that yields a started broker built with
`options` (`backlog_ttl_s`, `max_backlog_bytes`) and closes it after. Each test runs its
scenario with `asyncio.run` under a deadline, so a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import pytest

from streamgen.broker import (
    BacklogTrimmed,
    Broker,
    BrokerClosed,
    Event,
    OutOfOrderEvent,
    SubscriberOverflow,
    Subscription,
)

SCENARIO_TIMEOUT_S = 20.0


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def job_events(
    job_id: str, segments: int, *, payload_bytes: int = 64, terminal: str = "complete"
) -> list[Event]:
    """A job's whole log: `start`, a `progress` and a `segment` per segment, the terminal."""
    rng = random.Random(job_id)
    events = [
        Event(
            job_id,
            0,
            "start",
            {"codec": "avc1.64000a", "init_segment": rng.randbytes(payload_bytes), "fps": 8},
        )
    ]
    for index in range(segments):
        events.append(Event(job_id, len(events), "progress", {"segment_index": index, "step": 1}))
        events.append(
            Event(
                job_id,
                len(events),
                "segment",
                {
                    "segment_index": index,
                    "is_final": index == segments - 1,
                    "start_time": index * 1.5,
                    "fragment": rng.randbytes(payload_bytes),
                },
            )
        )
    if terminal == "complete":
        events.append(Event(job_id, len(events), "complete", {"total_segments": segments}))
    else:
        events.append(
            Event(
                job_id, len(events), "error", {"code": "cancelled", "message": "x", "param": None}
            )
        )
    return events


async def collect(sub: Subscription) -> list[Event]:
    return [event async for event in sub]


async def publish_all(broker: Broker, events: list[Event], *, yield_between: bool = True) -> None:
    for event in events:
        await broker.publish(event)
        if yield_between:
            await asyncio.sleep(0)  # let subscribers interleave (not a wait for anything)


class BrokerContract:
    """Contract tests; see the module docstring for how to use them."""

    def open_broker(self, **options: Any) -> AbstractAsyncContextManager[Broker]:
        raise NotImplementedError("a contract test class implements open_broker(**options)")

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def guarded() -> None:
            await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S)

        asyncio.run(guarded())

    def test_subscribe_before_publish_gets_every_live_event_in_order(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 20)
            async with self.open_broker() as broker, broker.subscribe(job, 0) as sub:
                consumer = asyncio.create_task(collect(sub))
                await publish_all(broker, events)
                assert await consumer == events

        self.run(scenario)

    def test_late_joiner_gets_backlog_from_from_seq_then_live(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 10)
            async with self.open_broker() as broker:
                await publish_all(broker, events[:9])
                async with broker.subscribe(job, 3) as sub:
                    consumer = asyncio.create_task(collect(sub))
                    await publish_all(broker, events[9:])
                    got = await consumer
                assert [e.seq for e in got] == list(range(3, len(events)))
                assert got == events[3:]

        self.run(scenario)

    def test_joiner_after_the_end_gets_everything_and_stops(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 4, terminal="error")
            async with self.open_broker() as broker:
                await publish_all(broker, events)
                async with broker.subscribe(job, 0) as sub:
                    assert await collect(sub) == events
                async with broker.subscribe(job, len(events)) as sub:
                    assert await collect(sub) == []
                assert await broker.backlog(job, 2) == events[2:]

        self.run(scenario)

    def test_from_seq_ahead_of_the_log_skips_to_it(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 5)
            async with self.open_broker() as broker:
                await publish_all(broker, events[:3])
                async with broker.subscribe(job, 6) as sub:
                    consumer = asyncio.create_task(collect(sub))
                    await publish_all(broker, events[3:])
                    assert await consumer == events[6:]

        self.run(scenario)

    def test_many_concurrent_subscribers_get_identical_sequences(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 15)
            async with self.open_broker() as broker:
                consumers: list[asyncio.Task[list[Event]]] = []
                subs = []
                for index, event in enumerate(events):
                    if index % 3 == 0:  # joiners at different points, all from seq 0
                        sub = broker.subscribe(job, 0)
                        await sub.__aenter__()
                        subs.append(sub)
                        consumers.append(asyncio.create_task(collect(sub)))
                    await broker.publish(event)
                    await asyncio.sleep(0)
                results = await asyncio.gather(*consumers)
                for sub in subs:
                    await sub.__aexit__(None, None, None)
                assert len(results) == 11
                assert all(result == events for result in results)

        self.run(scenario)

    def test_subscribers_joining_while_events_stream_get_exact_sequences(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 30)
            async with self.open_broker() as broker, AsyncExitStack() as stack:
                publisher = asyncio.create_task(publish_all(broker, events))
                joined: list[tuple[int, asyncio.Task[list[Event]]]] = []
                while len(joined) < 120 and not (publisher.done() and len(joined) > 3):
                    from_seq = len(joined) % 4
                    sub = await stack.enter_async_context(broker.subscribe(job, from_seq))
                    joined.append((from_seq, asyncio.create_task(collect(sub))))
                    await asyncio.sleep(0)
                await publisher
                for from_seq, task in joined:
                    assert await task == events[from_seq:]
                assert len(joined) > 3

        self.run(scenario)

    def test_slow_subscriber_is_cut_off_without_blocking_others_and_can_resume(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 15)
            async with self.open_broker() as broker:
                async with (
                    broker.subscribe(job, 0, max_pending=4) as slow,
                    broker.subscribe(job, 0) as fast,
                ):
                    fast_task = asyncio.create_task(collect(fast))
                    await publish_all(broker, events[:2])
                    slow_got = [await anext(slow), await anext(slow)]
                    for event in events[2:]:  # the slow one reads nothing meanwhile
                        await asyncio.wait_for(broker.publish(event), 5.0)
                    assert await fast_task == events
                    with pytest.raises(SubscriberOverflow) as info:
                        async for event in slow:
                            slow_got.append(event)
                last_seq = info.value.last_seq
                assert last_seq == slow_got[-1].seq == 1
                assert info.value.bound == 4
                async with broker.subscribe(job, last_seq + 1) as again:
                    assert slow_got + await collect(again) == events

        self.run(scenario)

    def test_resume_from_last_seq_plus_one_yields_exactly_the_rest(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 6)
            async with self.open_broker() as broker:
                await publish_all(broker, events[:5])
                got: list[Event] = []
                async with broker.subscribe(job, 0) as sub:
                    async for event in sub:
                        got.append(event)
                        if event.seq == 3:
                            break
                publisher = asyncio.create_task(publish_all(broker, events[5:]))
                async with broker.subscribe(job, got[-1].seq + 1) as sub:
                    got.extend(await collect(sub))
                await publisher
                assert got == events

        self.run(scenario)

    def test_terminal_event_ends_iteration_and_closes_the_log(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 1, terminal="error")
            async with self.open_broker() as broker, broker.subscribe(job) as sub:
                await publish_all(broker, events)
                got = await collect(sub)
                assert got == events and got[-1].terminal
                with pytest.raises(OutOfOrderEvent):
                    await broker.publish(Event(job, len(events), "progress", {"step": 2}))

        self.run(scenario)

    def test_out_of_order_publish_is_rejected(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 3)
            async with self.open_broker() as broker:
                with pytest.raises(OutOfOrderEvent):
                    await broker.publish(events[1])  # a job starts at seq 0
                await broker.publish(events[0])
                with pytest.raises(OutOfOrderEvent):
                    await broker.publish(events[2])  # gap
                with pytest.raises(OutOfOrderEvent):
                    await broker.publish(events[0])  # duplicate
                await broker.publish(events[1])
                assert await broker.backlog(job) == events[:2]

        self.run(scenario)

    def test_bytes_payloads_round_trip_exactly(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            blob = bytes(range(256)) * 4096 + b"\x00\xff"  # ~1 MiB, every byte value
            events = [
                Event(job, 0, "start", {"init_segment": b"\x00ftyp\x00", "codec": "avc1"}),
                Event(job, 1, "segment", {"fragment": blob, "segment": b"", "note": "é"}),
                Event(job, 2, "complete", {"total_segments": 1}),
            ]
            async with self.open_broker() as broker, broker.subscribe(job) as sub:
                await publish_all(broker, events)
                live = await collect(sub)
                stored = await broker.backlog(job)
                for got in (live, stored):
                    assert got == events
                    fragment = got[1].data["fragment"]
                    assert type(fragment) is bytes and fragment == blob
                    assert got[1].data["segment"] == b"" and got[1].data["note"] == "é"

        self.run(scenario)

    def test_backlog_keeps_start_and_a_rolling_window_under_the_byte_cap(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 30, payload_bytes=1000)
            cap = 12_000
            async with self.open_broker(max_backlog_bytes=cap) as broker:
                async with broker.subscribe(job, 0, max_pending=1000) as live_sub:
                    await publish_all(broker, events)
                    assert await collect(live_sub) == events  # trimming never hits live ones
                stored = await broker.backlog(job)
                assert stored[0] == events[0]
                window = stored[1:]
                first = window[0].seq
                assert window == events[first:]
                assert sum(len(e.pack()) for e in window) <= cap
                assert len(window) >= 10  # segments ~1.1 kB and progress events are small
                assert sum(len(e.pack()) for e in events[first - 1 :]) > cap
                assert await broker.start_event(job) == events[0]
                with pytest.raises(BacklogTrimmed) as info:
                    async with broker.subscribe(job, 0):
                        pass
                assert info.value.first_seq == first
                async with broker.subscribe(job, info.value.first_seq) as sub:
                    assert await collect(sub) == events[first:]

        self.run(scenario)

    def test_backlog_expires_after_ttl(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 2)
            async with self.open_broker(backlog_ttl_s=0.3) as broker:
                await publish_all(broker, events)
                deadline = asyncio.get_running_loop().time() + 10.0
                while await broker.backlog(job):
                    assert asyncio.get_running_loop().time() < deadline, "backlog never expired"
                    await asyncio.sleep(0.05)  # polling with a deadline
                assert await broker.start_event(job) is None
                await broker.publish(events[0])  # the job is forgotten: seq 0 again
                assert await broker.backlog(job) == events[:1]

        self.run(scenario)

    def test_drop_forgets_the_backlog(self) -> None:
        async def scenario() -> None:
            job, other = new_job_id(), new_job_id()
            async with self.open_broker() as broker:
                await publish_all(broker, job_events(job, 1)[:3])
                await publish_all(broker, job_events(other, 1)[:2])
                await broker.drop(job)
                assert await broker.backlog(job) == []
                assert await broker.start_event(job) is None
                assert len(await broker.backlog(other)) == 2

        self.run(scenario)

    def test_close_ends_every_subscription(self) -> None:
        async def scenario() -> None:
            job = new_job_id()
            events = job_events(job, 3)
            async with self.open_broker() as broker:
                sub_a = broker.subscribe(job)
                sub_b = broker.subscribe(job, 1)
                await sub_a.__aenter__()
                await sub_b.__aenter__()
                tasks = [asyncio.create_task(collect(sub)) for sub in (sub_a, sub_b)]
                await publish_all(broker, events[:3])
                await broker.close()
                got_a, got_b = await asyncio.gather(*tasks)
                assert got_a == events[: len(got_a)] and got_b == events[1 : 1 + len(got_b)]
                with pytest.raises(BrokerClosed):
                    await broker.publish(events[3])
                with pytest.raises(BrokerClosed):
                    broker.subscribe(job)

        self.run(scenario)

    def test_invalid_arguments_name_the_parameter(self) -> None:
        async def scenario() -> None:
            async with self.open_broker() as broker:
                with pytest.raises(ValueError, match="from_seq"):
                    broker.subscribe("j", -1)
                with pytest.raises(ValueError, match="max_pending"):
                    broker.subscribe("j", 0, max_pending=0)

        self.run(scenario)
