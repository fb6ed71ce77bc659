"""The in-process broker: the embedded default for one process.

Each job has a `JobLog` (the `start` event pinned plus a rolling window of the latest events
under `max_backlog_bytes`); `publish` appends to it and hands the event to every subscriber's
own bounded queue without waiting, so a slow subscriber never slows the publisher or the
others. A backlog expires `backlog_ttl_s` after the job's last event; expiry is checked on
every call (and by `purge_expired()`), against an injectable clock.

All methods must be called from one event loop (the app's); nothing here is thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamgen.broker._local import MIB, JobLog, QueueSubscription, Snapshot
from streamgen.broker.base import Broker, BrokerClosed, Event

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    """Publish/subscribe of job events inside one process.

    `backlog_ttl_s`: seconds a job's backlog lives after its last event.
    `max_backlog_bytes`: packed bytes of a job's rolling window (the `start` event is kept
    besides). `clock`: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        backlog_ttl_s: float = 3600.0,
        max_backlog_bytes: int = 256 * MIB,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if backlog_ttl_s <= 0:
            raise ValueError(f"backlog_ttl_s must be > 0 (seconds), got {backlog_ttl_s}")
        if max_backlog_bytes <= 0:
            raise ValueError(f"max_backlog_bytes must be > 0 (bytes), got {max_backlog_bytes}")
        self.backlog_ttl_s = backlog_ttl_s
        self.max_backlog_bytes = max_backlog_bytes
        self._clock = clock
        # Ordered by last append (oldest first), so expiry scans only the expired head.
        self._logs: dict[str, JobLog] = {}
        self._subscribers: dict[str, set[_MemorySubscription]] = {}
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        subscribers = [sub for subs in self._subscribers.values() for sub in subs]
        for sub in subscribers:
            sub.end()
        self._subscribers.clear()

    async def publish(self, event: Event) -> None:
        self._check_open("publish")
        self.purge_expired()
        log = self._logs.get(event.job_id) or JobLog(event.job_id, self.max_backlog_bytes)
        log.check_next(event)
        log.append(event, len(event.pack()), self._clock())
        self._logs.pop(event.job_id, None)
        self._logs[event.job_id] = log  # (re-)inserted last: the newest append
        for sub in tuple(self._subscribers.get(event.job_id, ())):
            sub.offer(event)

    def subscribe(
        self, job_id: str, from_seq: int = 0, *, max_pending: int = 256
    ) -> _MemorySubscription:
        self._check_open("subscribe")
        return _MemorySubscription(self, job_id, from_seq, max_pending)

    async def backlog(self, job_id: str, from_seq: int = 0) -> list[Event]:
        self.purge_expired()
        log = self._logs.get(job_id)
        return [] if log is None else log.events_from(from_seq)

    async def start_event(self, job_id: str) -> Event | None:
        self.purge_expired()
        log = self._logs.get(job_id)
        return None if log is None else log.start

    async def drop(self, job_id: str) -> None:
        self._logs.pop(job_id, None)

    def purge_expired(self) -> int:
        """Forget backlogs whose last event is `backlog_ttl_s` or more old; returns how many."""
        now = self._clock()
        expired = []
        for job_id, log in self._logs.items():
            if now - log.last_append_s < self.backlog_ttl_s:
                break
            expired.append(job_id)
        for job_id in expired:
            del self._logs[job_id]
        return len(expired)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise BrokerClosed(f"cannot {what}: the memory broker is closed")

    def _snapshot(self, job_id: str, from_seq: int) -> Snapshot:
        self.purge_expired()
        log = self._logs.get(job_id)
        if log is None:
            return Snapshot(events=(), next_seq=0, first_seq=0, ended=False)
        return log.snapshot(from_seq)

    def _attach(self, sub: _MemorySubscription) -> None:
        self._check_open("subscribe")
        self._subscribers.setdefault(sub.job_id, set()).add(sub)

    def _detach(self, sub: _MemorySubscription) -> None:
        subs = self._subscribers.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.job_id]


class _MemorySubscription(QueueSubscription):
    def __init__(self, broker: MemoryBroker, job_id: str, from_seq: int, max_pending: int):
        super().__init__(job_id, from_seq, max_pending)
        self._broker = broker

    async def _attach(self) -> None:
        self._broker._attach(self)

    def _detach(self) -> None:
        self._broker._detach(self)

    async def _snapshot(self, from_seq: int) -> Snapshot:
        return self._broker._snapshot(self.job_id, from_seq)
