"""Parts both brokers share: a job's stored log and a subscriber's own bounded queue.

`JobLog` is the backlog of one job: the pinned `start` event (it holds the init segment)
plus a rolling window of the latest events under a byte cap. `QueueSubscription` is one
subscriber: the backlog it was handed, then live events from its own bounded queue, in
order, de-duplicated by `seq`; a broker feeds it with `offer()` and never waits on it.
"""

from __future__ import annotations

import asyncio
import itertools
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from streamgen.broker.base import (
    BacklogTrimmed,
    BrokerError,
    Event,
    OutOfOrderEvent,
    SubscriberOverflow,
    Subscription,
)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    """What a backlog read returned: stored events with ``seq >= from_seq``, in order.

    `next_seq` is the job's next sequence number (0 for a job with nothing stored),
    `first_seq` the first seq of the rolling window (= `next_seq` when it is empty) and
    `ended` whether the terminal event was stored.
    """

    events: tuple[Event, ...]
    next_seq: int
    first_seq: int
    ended: bool


class JobLog:
    """One job's stored events: the `start` event pinned plus a window of at most
    `max_bytes` (packed bytes; the newest event is always kept)."""

    def __init__(self, job_id: str, max_bytes: int, *, first_seq: int = 0) -> None:
        self.job_id = job_id
        self.max_bytes = max_bytes
        self.start: Event | None = None
        self.next_seq = first_seq
        self.ended = False
        self.window_bytes = 0
        self.last_append_s = 0.0
        self._window: deque[tuple[Event, int]] = deque()

    @property
    def first_seq(self) -> int:
        return self._window[0][0].seq if self._window else self.next_seq

    def check_next(self, event: Event) -> None:
        """Raise `OutOfOrderEvent` unless `event` may be appended next."""
        if self.ended:
            raise OutOfOrderEvent(
                f"job {self.job_id} already ended at seq {self.next_seq - 1}; "
                f"got event seq {event.seq}"
            )
        if event.seq != self.next_seq:
            raise OutOfOrderEvent(
                f"job {self.job_id} expects seq {self.next_seq} next, got event seq {event.seq}"
            )

    def append(self, event: Event, size: int, now_s: float) -> None:
        """Append `event` (`size` packed bytes, time `now_s`) and trim the window."""
        if event.type == "start" and self.start is None:
            self.start = event
        self._window.append((event, size))
        self.window_bytes += size
        while self.window_bytes > self.max_bytes and len(self._window) > 1:
            _, dropped = self._window.popleft()
            self.window_bytes -= dropped
        self.next_seq = event.seq + 1
        self.ended = event.terminal
        self.last_append_s = now_s

    def events_from(self, from_seq: int) -> list[Event]:
        """Stored events with ``seq >= from_seq``: the pinned start (if it rolled out of the
        window), then the window."""
        first = self.first_seq
        events: list[Event] = []
        if self.start is not None and from_seq <= self.start.seq < first:
            events.append(self.start)
        skip = max(0, from_seq - first)
        events.extend(event for event, _ in itertools.islice(self._window, skip, None))
        return events

    def window(self) -> list[tuple[Event, int]]:
        """The window's events with their packed sizes (bytes), oldest first."""
        return list(self._window)

    def snapshot(self, from_seq: int) -> Snapshot:
        return Snapshot(
            events=tuple(self.events_from(from_seq)),
            next_seq=self.next_seq,
            first_seq=self.first_seq,
            ended=self.ended,
        )


class _Resync:
    """Queue marker: re-read the backlog from the last seq given (after a reconnect)."""


_RESYNC = _Resync()


class QueueSubscription(Subscription):
    """A subscriber with its own bounded queue of live events (see the module docstring).

    Subclasses say how to attach to live delivery, detach, and read the backlog. Opening
    attaches FIRST and reads the backlog after, so nothing published in between is lost;
    duplicates are dropped by `seq`. A gap in live events (a message lost while
    reconnecting) is filled from the backlog.
    """

    def __init__(self, job_id: str, from_seq: int, max_pending: int) -> None:
        if from_seq < 0:
            raise ValueError(f"from_seq must be >= 0, got {from_seq}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1 (events), got {max_pending}")
        self.job_id = job_id
        self.from_seq = from_seq
        self.max_pending = max_pending
        self.last_seq = from_seq - 1
        self._backlog: deque[Event] = deque()
        self._live: deque[Event | _Resync] = deque()
        self._live_events = 0
        self._wake = asyncio.Event()
        self._opened = False
        self._done = False
        self._overflowed = False

    # -- hooks ------------------------------------------------------------------------
    @abstractmethod
    async def _attach(self) -> None:
        """Register for live delivery; return once events published from now on arrive."""

    @abstractmethod
    def _detach(self) -> None:
        """Stop live delivery (idempotent, never waits)."""

    @abstractmethod
    async def _snapshot(self, from_seq: int) -> Snapshot:
        """Read the job's backlog from `from_seq`."""

    # -- broker side ------------------------------------------------------------------
    def offer(self, event: Event) -> None:
        """Queue a live event; a full queue cuts this subscriber off (never blocks)."""
        if self._done:
            return
        if self._live_events >= self.max_pending:
            self._overflowed = True
            self._finish()
            return
        self._live.append(event)
        self._live_events += 1
        self._wake.set()

    def resync(self) -> None:
        """Ask this subscriber to re-read the backlog after its last seq."""
        if not self._done:
            self._live.append(_RESYNC)
            self._wake.set()

    def end(self) -> None:
        """End iteration (the broker is closing)."""
        self._finish()

    # -- consumer side ----------------------------------------------------------------
    async def __aenter__(self) -> QueueSubscription:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish()

    def __aiter__(self) -> QueueSubscription:
        return self

    async def __anext__(self) -> Event:
        await self._open()
        while True:
            if self._overflowed:
                raise SubscriberOverflow(self.job_id, self.last_seq, self.max_pending)
            if self._done:
                raise StopAsyncIteration
            if self._backlog:
                event = self._backlog.popleft()
                if event.seq > self.last_seq:
                    return self._give(event)
                continue
            if not self._live:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._live.popleft()
            if isinstance(item, _Resync):
                await self._load(self.last_seq + 1)
                continue
            self._live_events -= 1
            if item.seq == self.last_seq + 1:
                return self._give(item)
            if item.seq > self.last_seq + 1:
                await self._load(self.last_seq + 1, through_seq=item.seq)

    # -- internals --------------------------------------------------------------------
    async def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            await self._attach()
            if not self._done:  # (close() may have ended it meanwhile)
                await self._load(self.from_seq)
        except BaseException:
            self._finish()
            raise

    async def _load(self, from_seq: int, *, through_seq: int | None = None) -> None:
        """Queue the backlog from `from_seq` for yielding; it must have no gap (and reach
        `through_seq` when a live event showed that much exists)."""
        try:
            snap = await self._snapshot(from_seq)
        except asyncio.CancelledError:
            # The caller gave up waiting (e.g. a timeout around __anext__): read again on the
            # next call instead of ending the subscription.
            self._live.appendleft(_RESYNC)
            raise
        except BaseException:
            self._finish()
            raise
        if self._done:
            return  # ended (overflow, close) while reading
        events = [event for event in snap.events if event.seq >= from_seq]
        expected = from_seq
        for event in events:
            if event.seq != expected:
                break
            expected += 1
        if expected != from_seq + len(events) or (not events and snap.next_seq > from_seq):
            self._finish()
            raise BacklogTrimmed(self.job_id, from_seq, snap.first_seq)
        if through_seq is not None and expected <= through_seq:
            self._finish()
            raise BrokerError(
                f"events {from_seq}..{through_seq - 1} of job {self.job_id} were lost: "
                "they are neither live nor in the backlog"
            )
        if not events and snap.ended and from_seq >= snap.next_seq:
            self._finish()  # the job ended before `from_seq`: nothing more will come
            return
        self._backlog.extend(events)

    def _give(self, event: Event) -> Event:
        self.last_seq = event.seq
        if event.terminal:
            self._finish()
        return event

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._live.clear()
        self._live_events = 0
        self._wake.set()
        self._detach()
