"""The broker contract: an ordered, gap-free, duplicate-free event log per job, with live
fan-out to subscribers.

``publish(event)`` appends an event (its `seq` must be the job's next sequence number);
``subscribe(job_id, from_seq)`` yields every event with ``seq >= from_seq`` — the backlog
first, then live ones — and ends after the job's terminal event (`complete` or `error`).
A subscriber that falls more than its queue bound behind is cut off with
`SubscriberOverflow`, which names the last sequence number it was given so it can resume.
A job's backlog keeps its `start` event (the init segment) plus a rolling window of the
latest events under a byte cap; asking for events that rolled out raises `BacklogTrimmed`.
A backlog expires a TTL after the job's last event. ``close()`` ends every subscription
(iteration stops without a terminal event).

Errors::

    BrokerError
    ├── SubscriberOverflow   a subscriber fell too far behind (resume from last_seq + 1)
    ├── OutOfOrderEvent      publish with a seq other than the job's next (or after the end)
    ├── BacklogTrimmed       the requested events rolled out of the backlog
    ├── BrokerClosed         publish/subscribe after close()
    └── BrokerUnavailable    the backend (Redis) could not be reached in time

Every broker (memory, Redis) passes the same contract tests
(tests/streamgen/broker/broker_contract.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import msgpack
from streamgen_client.wire import EVENT_TYPES as EVENT_TYPES
from streamgen_client.wire import TERMINAL_TYPES as TERMINAL_TYPES
from streamgen_client.wire import message, message_parts

MAX_SEQ = 2**53 - 1  # the highest seq a client may name: exact in JSON numbers everywhere


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log.

    `data` holds msgpack-able values; payloads are raw `bytes` (transports that speak text
    base64 them). `seq` starts at 0 for a job's first event and has no gaps.
    """

    job_id: str
    seq: int
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")
        if self.seq < 0:
            raise ValueError(f"event seq must be >= 0, got {self.seq}")

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def pack(self) -> bytes:
        """msgpack with raw bytes (what Redis and WebSocket carry)."""
        return msgpack.packb(
            message(self.job_id, self.seq, self.type, self.data), use_bin_type=True
        )

    @classmethod
    def unpack(cls, payload: bytes) -> Event:
        job_id, seq, kind, data = message_parts(msgpack.unpackb(payload, raw=False))
        return cls(job_id=job_id, seq=seq, type=kind, data=data)


class BrokerError(Exception):
    """Base of broker errors."""


class SubscriberOverflow(BrokerError):
    """A subscriber fell more than its bound behind and was cut off.

    `last_seq` is the last sequence number it was given (-1 if none): resume from
    ``last_seq + 1``.
    """

    def __init__(self, job_id: str, last_seq: int, bound: int) -> None:
        super().__init__(
            f"subscriber of job {job_id} fell more than {bound} events behind; "
            f"resume from seq {last_seq + 1}"
        )
        self.job_id = job_id
        self.last_seq = last_seq
        self.bound = bound


class OutOfOrderEvent(BrokerError):
    """An event was published with a sequence number other than the job's next one."""


class BacklogTrimmed(BrokerError):
    """Events from `from_seq` on rolled out of the job's backlog (its byte cap).

    `first_seq` is the first stored sequence number after the `start` event: subscribe
    from it and take the init segment from `Broker.start_event`.
    """

    def __init__(self, job_id: str, from_seq: int, first_seq: int) -> None:
        super().__init__(
            f"events of job {job_id} from seq {from_seq} rolled out of the backlog; "
            f"the first stored seq after `start` is {first_seq}"
        )
        self.job_id = job_id
        self.from_seq = from_seq
        self.first_seq = first_seq


class BrokerClosed(BrokerError):
    """The broker was used after ``close()``."""


class BrokerUnavailable(BrokerError):
    """The broker's backend (Redis) could not be reached within the broker's timeout."""


class Subscription(AbstractAsyncContextManager["Subscription"], ABC):
    """An async iterator of events; use as ``async with broker.subscribe(...) as sub``."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[Event]: ...


class Broker(ABC):
    """Publish/subscribe of job events (see the module docstring for the contract)."""

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Open connections; called once in the app's lifespan before serving."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Close connections and end every subscription."""

    @abstractmethod
    async def publish(self, event: Event) -> None:
        """Append `event` to its job's log and deliver it to live subscribers."""

    @abstractmethod
    def subscribe(self, job_id: str, from_seq: int = 0, *, max_pending: int = 256) -> Subscription:
        """Events of `job_id` with ``seq >= from_seq``, backlog first, until the terminal one.

        `max_pending` bounds the events waiting for this subscriber (events).
        """

    @abstractmethod
    async def backlog(self, job_id: str, from_seq: int = 0) -> list[Event]:
        """The stored events of `job_id` with ``seq >= from_seq`` (may be empty).

        The `start` event is kept when the rolling window trims, so the list may jump from
        it to the window's first event.
        """

    @abstractmethod
    async def drop(self, job_id: str) -> None:
        """Forget the stored backlog of `job_id` (live subscribers stay attached)."""

    # Log hand-over: in scale-out a job's log changes publisher once (the API replica
    # publishes `start`, a worker the rest). A broker that keeps its own copy of what it
    # publishes, to restore it if the backend loses it (Redis), must hold exactly the copy
    # of the current publisher; the in-process broker keeps none, so these do nothing.
    def adopt(self, events: Sequence[Event]) -> None:  # noqa: B027 (optional hook)
        """This process now publishes the job whose stored log is `events` (oldest first)."""

    def disown(self, job_id: str) -> None:  # noqa: B027 (optional hook)
        """Another process publishes `job_id` from now on."""

    async def start_event(self, job_id: str) -> Event | None:
        """The job's `start` event (it holds the init segment), or None if none is stored."""
        for event in await self.backlog(job_id, 0):
            if event.type == "start":
                return event
        return None
