"""The Redis broker: pub/sub fan-out across replicas plus a per-job backlog in Redis.

Keys of one job (one hash tag, so a cluster keeps them on one slot)::

    {prefix}:{<job>}:meta    hash: next (the job's next seq), ended ("1" after the terminal
                             event), bytes (packed bytes in the window)
    {prefix}:{<job>}:log     list of packed events: the window, seqs [next - LLEN, next)
    {prefix}:{<job>}:start   the packed `start` event, kept when the window rolls past it
    {prefix}:events:<job>    the pub/sub channel of the job's live events

The backlog and its scripts are in `redis_backlog`. Publish is one Lua script: check that
`seq` is the job's next (atomic, so two publishers cannot interleave), append to the window,
trim it to `max_backlog_bytes` (oldest first, the newest always kept), refresh the TTL of
the three keys (`backlog_ttl_s`), PUBLISH. Storing and publishing in one script means an
event is in the backlog before any subscriber can see it live.

Live fan-out: each broker (one per process / replica) holds ONE pub/sub connection and
subscribes it to a job's channel while it has local subscribers of that job; every message
is unpacked once and offered to each local subscriber's own bounded queue. So Redis sends
each event once per replica, however many clients watch. A subscriber first registers its
queue and waits until the channel subscription is confirmed, THEN reads the backlog; events
published in between arrive both ways and are de-duplicated by `seq`.

Reconnection (`redis_pubsub.ReconnectingPubSub`): when the pub/sub connection drops (or stops
answering PING), a new one is opened with backoff and subscribed to every channel still
watched. Each local subscriber then re-reads the backlog after its last seq (no loss, no
duplicates); a live event that shows a gap triggers the same catch-up.

Redis restarted empty (the backlog gone): the publishing broker keeps its own copy of each
job it publishes (the same start + window, for `restore_window_s` after the job's last event).
(1) When its publish script finds the job's meta missing, it writes its copy back (only if
still missing) and then publishes the event. (2) When its pub/sub connection comes back it
restores every job it holds a copy of, so a job that had already ended is back too. Every
restore also re-publishes the job's latest event, so subscribers on all replicas that read an
empty backlog meanwhile see a gap and catch up from the restored backlog. Events published
while Redis was down are not lost: `publish` retries with backoff for `op_timeout_s`, then
raises `BrokerUnavailable`.

When a job's log changes hands (scale-out: the API replica publishes `start`, a worker the
rest), exactly one broker must hold the copy: the replica calls `disown(job)` after `start`,
and the worker `adopt(events)` with the backlog it takes over, so a restore never puts an
older, shorter log back over a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from streamgen.broker._local import MIB, QueueSubscription, Snapshot
from streamgen.broker.base import Broker, BrokerClosed, BrokerError, BrokerUnavailable, Event
from streamgen.broker.redis_backlog import SCRIPTS, RedisBacklog
from streamgen.broker.redis_ops import RetryingRedis, redact
from streamgen.broker.redis_pubsub import ReconnectingPubSub

__all__ = ["RedisBroker", "RedisBrokerStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisBrokerStats:
    """Counters of one broker since it started.

    `bytes_published`: packed event bytes this broker sent to Redis (each event once).
    `messages_received` / `bytes_received`: pub/sub messages (and their bytes) Redis sent to
    this broker's one pub/sub connection, however many local subscribers share them.
    `reconnects`: drops of the established pub/sub connection (each followed by reconnecting);
    `restores`: backlogs this publisher wrote back after Redis lost them; `retries`: commands
    retried because Redis was unreachable.
    """

    events_published: int
    bytes_published: int
    messages_received: int
    bytes_received: int
    reconnects: int
    restores: int
    retries: int


class RedisBroker(Broker):
    """Publish/subscribe of job events through Redis (see the module docstring).

    `backlog_ttl_s`: seconds a job's backlog lives after its last event.
    `max_backlog_bytes`: packed bytes of a job's rolling window (`start` is kept besides).
    `restore_window_s`: seconds this publisher keeps its copy of a job after its last event,
    to restore the backlog if Redis loses it (at most `backlog_ttl_s`).
    `op_timeout_s`: seconds `start`, `publish`, subscribing and backlog reads keep retrying
    while Redis is unreachable before raising `BrokerUnavailable`.
    `ping_interval_s`: seconds of pub/sub silence before a PING checks the connection.
    `max_backoff_s`: the longest wait between reconnection attempts (seconds).
    """

    def __init__(
        self,
        url: str,
        *,
        backlog_ttl_s: float = 3600.0,
        max_backlog_bytes: int = 256 * MIB,
        key_prefix: str = "streamgen",
        restore_window_s: float = 600.0,
        op_timeout_s: float = 30.0,
        ping_interval_s: float = 5.0,
        max_backoff_s: float = 2.0,
    ) -> None:
        for name, value in (
            ("backlog_ttl_s", backlog_ttl_s),
            ("max_backlog_bytes", max_backlog_bytes),
            ("restore_window_s", restore_window_s),
            ("op_timeout_s", op_timeout_s),
            ("ping_interval_s", ping_interval_s),
            ("max_backoff_s", max_backoff_s),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be non-empty without braces, got {key_prefix!r}")
        self.url = url
        self.backlog_ttl_s = backlog_ttl_s
        self.max_backlog_bytes = max_backlog_bytes
        self.key_prefix = key_prefix
        self.restore_window_s = min(restore_window_s, backlog_ttl_s)
        self.op_timeout_s = op_timeout_s
        self.ping_interval_s = ping_interval_s
        self.max_backoff_s = max_backoff_s
        self._channel_prefix = f"{key_prefix}:events:"
        self._control_channel = f"{key_prefix}:control"
        self._redis: RetryingRedis | None = None
        self._backlog_or_none: RedisBacklog | None = None
        self._pubsub: ReconnectingPubSub | None = None
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # `_ready[job]` exists while the job has local subscribers and is set once the
        # channel subscription is confirmed on the current connection.
        self._connected = asyncio.Event()
        self._subs: dict[str, set[_RedisSubscription]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._counters = dict.fromkeys(("events_published", "bytes_published"), 0)
        self._counters.update(messages_received=0, bytes_received=0)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and open the pub/sub connection; raises `BrokerUnavailable` if Redis
        cannot be reached within `op_timeout_s`."""
        if self._closed:
            raise BrokerClosed("cannot start: the Redis broker is closed")
        if self._started:
            return
        self._redis = RetryingRedis(
            self.url, self.op_timeout_s, max_backoff_s=self.max_backoff_s, scripts=SCRIPTS
        )
        self._backlog_or_none = RedisBacklog(
            self._redis,
            self.key_prefix,
            ttl_ms=max(1, round(self.backlog_ttl_s * 1000)),
            max_bytes=self.max_backlog_bytes,
            restore_window_s=self.restore_window_s,
        )
        self._pubsub = ReconnectingPubSub(
            self._redis,
            "broker",
            on_message=self._dispatch,
            on_subscribed=self._confirmed,
            on_drop=self._dropped,
            ping_interval_s=self.ping_interval_s,
            max_backoff_s=self.max_backoff_s,
        )
        self._started = True
        self._pubsub.start([self._control_channel])
        try:
            await asyncio.wait_for(self._connected.wait(), self.op_timeout_s)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailable(
                f"could not reach Redis at {redact(self.url)} within {self.op_timeout_s} s"
            ) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ready in self._ready.values():
            ready.set()  # wakes subscriptions still opening; they see the broker closed
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.end()
        self._subs.clear()
        self._ready.clear()
        if self._pubsub is not None:
            await self._pubsub.aclose()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._redis is not None:
            await self._redis.aclose()

    def stats(self) -> RedisBrokerStats:
        return RedisBrokerStats(
            **self._counters,
            reconnects=self._pubsub.reconnects if self._pubsub else 0,
            restores=self._backlog_or_none.restores if self._backlog_or_none else 0,
            retries=self._redis.retries if self._redis else 0,
        )

    # -- publish and the backlog ----------------------------------------------------------
    async def publish(self, event: Event) -> None:
        self._check_usable("publish")
        size = await self._backlog.publish(event)
        self._counters["events_published"] += 1
        self._counters["bytes_published"] += size

    def adopt(self, events: Sequence[Event]) -> None:
        """Take over the copy of a job whose earlier `events` (its stored backlog, oldest
        first: `start`, then a window) another process published: a worker that takes a
        queued job adopts its log, so it can restore all of it if Redis loses it."""
        if self._backlog_or_none is not None:
            self._backlog_or_none.adopt(events)

    def disown(self, job_id: str) -> None:
        """Drop this broker's copy of `job_id`: another process publishes it from now on
        (and restores it), so this one must never restore an older copy over it."""
        if self._backlog_or_none is not None:
            self._backlog_or_none.disown(job_id)

    async def backlog(self, job_id: str, from_seq: int = 0) -> list[Event]:
        self._check_usable("read the backlog")
        return list((await self._backlog.snapshot(job_id, from_seq)).events)

    async def start_event(self, job_id: str) -> Event | None:
        self._check_usable("read the start event")
        return await self._backlog.start_event(job_id)

    async def drop(self, job_id: str) -> None:
        self._check_usable("drop a backlog")
        await self._backlog.drop(job_id)

    # -- subscribe: the live fan-out --------------------------------------------------------
    def subscribe(
        self, job_id: str, from_seq: int = 0, *, max_pending: int = 256
    ) -> _RedisSubscription:
        self._check_usable("subscribe")
        return _RedisSubscription(self, job_id, from_seq, max_pending)

    async def _attach(self, sub: _RedisSubscription) -> None:
        self._check_usable("subscribe")
        job_id = sub.job_id
        self._subs.setdefault(job_id, set()).add(sub)
        ready = self._ready.get(job_id)
        if ready is None and self._pubsub is not None:
            ready = self._ready[job_id] = asyncio.Event()
            await self._pubsub.subscribe(self._channel(job_id))
        assert ready is not None
        try:
            await asyncio.wait_for(ready.wait(), self.op_timeout_s)
            self._check_usable("subscribe")
        except TimeoutError:
            raise BrokerUnavailable(
                f"could not subscribe to job {job_id} on Redis at {redact(self.url)} "
                f"within {self.op_timeout_s} s"
            ) from None

    def _detach(self, sub: _RedisSubscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.job_id]
            self._ready.pop(sub.job_id, None)
            if not self._closed and self._pubsub is not None:
                self._pubsub.unsubscribe(self._channel(sub.job_id))

    def _dispatch(self, channel: str, data: bytes) -> None:
        self._counters["messages_received"] += 1
        self._counters["bytes_received"] += len(data)
        if not channel.startswith(self._channel_prefix):
            return
        subs = self._subs.get(channel[len(self._channel_prefix) :])
        if not subs:
            return  # a message still in flight for a job no longer watched here
        try:
            event = Event.unpack(data)
        except Exception:
            logger.exception("dropped an undecodable message on %s", channel)
            return
        for sub in tuple(subs):
            sub.offer(event)

    def _confirmed(self, channel: str, resubscribed: bool) -> None:
        if channel == self._control_channel:
            self._connected.set()
            if resubscribed and self._backlog.holds_copies():
                self._spawn(self._backlog.restore_all())
            return
        job_id = channel[len(self._channel_prefix) :]
        ready = self._ready.get(job_id)
        if ready is None:
            return
        ready.set()
        if resubscribed:
            for sub in tuple(self._subs.get(job_id, ())):
                sub.resync()

    def _dropped(self) -> None:
        self._connected.clear()
        for ready in self._ready.values():
            ready.clear()

    # -- helpers ------------------------------------------------------------------------
    @property
    def _backlog(self) -> RedisBacklog:
        if self._backlog_or_none is None:
            raise BrokerError("the Redis broker is not started: call `await broker.start()`")
        return self._backlog_or_none

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_usable(self, what: str) -> None:
        if self._closed:
            raise BrokerClosed(f"cannot {what}: the Redis broker is closed")
        if not self._started:
            raise BrokerError(f"cannot {what}: call `await broker.start()` first")

    def _channel(self, job_id: str) -> str:
        return f"{self._channel_prefix}{job_id}"


class _RedisSubscription(QueueSubscription):
    def __init__(self, broker: RedisBroker, job_id: str, from_seq: int, max_pending: int):
        super().__init__(job_id, from_seq, max_pending)
        self._broker = broker

    async def _attach(self) -> None:
        await self._broker._attach(self)

    def _detach(self) -> None:
        self._broker._detach(self)

    async def _snapshot(self, from_seq: int) -> Snapshot:
        return await self._broker._backlog.snapshot(self.job_id, from_seq)
