"""The Redis broker: pub/sub fan-out across replicas plus a per-job backlog in Redis.

Keys of one job (one hash tag, so a cluster keeps them on one slot)::

    {prefix}:{<job>}:meta    hash: next (the job's next seq), ended ("1" after the terminal
                             event), bytes (packed bytes in the window)
    {prefix}:{<job>}:log     list of packed events: the window, seqs [next - LLEN, next)
    {prefix}:{<job>}:start   the packed `start` event, kept when the window rolls past it
    {prefix}:events:<job>    the pub/sub channel of the job's live events

Publish is one Lua script: check that `seq` is the job's next (atomic, so two publishers
cannot interleave), append to the window, trim it to `max_backlog_bytes` (oldest first,
the newest always kept), refresh the TTL of the three keys (`backlog_ttl_s`), PUBLISH.
Storing and publishing in one script means an event is in the backlog before any
subscriber can see it live.

Live fan-out: each broker (one per process / replica) holds ONE pub/sub connection and
subscribes it to a job's channel while it has local subscribers of that job; every message
is unpacked once and offered to each local subscriber's own bounded queue. So Redis sends
each event once per replica, however many clients watch. A subscriber first registers its
queue and waits until the channel subscription is confirmed, THEN reads the backlog; events
published in between arrive both ways and are de-duplicated by `seq`.

Reconnection: redis-py's asyncio PubSub does not reconnect by itself, so a reader task owns
the connection: when it drops (or stops answering PING), the PubSub is closed, and a new one
is opened with backoff and subscribed to every channel still watched. Each local subscriber
then re-reads the backlog after its last seq (no loss, no duplicates); a live event that
shows a gap triggers the same catch-up.

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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from streamgen.broker._local import MIB, JobLog, QueueSubscription, Snapshot
from streamgen.broker.base import (
    Broker,
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    Event,
    OutOfOrderEvent,
)
from streamgen.broker.redis_ops import REDIS_DOWN, connect, redact, retrying

__all__ = ["RedisBroker", "RedisBrokerStats"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PUBLISH_LUA = """
local seq = tonumber(ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'next', 'ended', 'bytes')
local nxt = tonumber(meta[1])
if not nxt then
  if seq ~= 0 then return {-2, 0} end
  nxt = 0
end
if seq ~= nxt then
  if ARGV[8] == '1' and seq == nxt - 1 and redis.call('LINDEX', KEYS[2], -1) == ARGV[2] then
    return {0, nxt}
  end
  if meta[2] == '1' then return {-3, nxt} end
  return {-1, nxt}
end
if meta[2] == '1' then return {-3, nxt} end
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[3], ARGV[2])
end
local len = redis.call('RPUSH', KEYS[2], ARGV[2])
local bytes = (tonumber(meta[3]) or 0) + string.len(ARGV[2])
local cap = tonumber(ARGV[5])
while bytes > cap and len > 1 do
  bytes = bytes - string.len(redis.call('LPOP', KEYS[2]))
  len = len - 1
end
redis.call('HSET', KEYS[1], 'next', seq + 1, 'ended', ARGV[7], 'bytes', bytes)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return {1, seq + 1}
"""
# KEYS: meta, log, start. ARGV: seq, packed event, channel, TTL (ms), window cap (bytes),
# "1" for a start event, "1" for a terminal event, "1" when retrying after a lost reply
# (then an identical last event counts as done). Returns {status, next seq}: 1 published,
# 0 already published, -1 out of order, -2 no backlog (and seq > 0), -3 job ended.

_READ_LUA = """
local meta = redis.call('HMGET', KEYS[1], 'next', 'ended')
local nxt = tonumber(meta[1])
if not nxt then return {0, 0, 0, '', {}} end
local first = nxt - redis.call('LLEN', KEYS[2])
local from = tonumber(ARGV[1])
local items = {}
if from < nxt then
  items = redis.call('LRANGE', KEYS[2], math.max(from - first, 0), -1)
end
local start = ''
if from < first then start = redis.call('GET', KEYS[3]) or '' end
local ended = 0
if meta[2] == '1' then ended = 1 end
return {nxt, first, ended, start, items}
"""
# KEYS: meta, log, start. ARGV: from seq. Returns {next, first seq of the window, ended,
# packed start event ('' when not needed or missing), packed window events >= from}.

_RESTORE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
local bytes = 0
for i = 6, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  bytes = bytes + string.len(ARGV[i])
end
if ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[5]) end
redis.call('HSET', KEYS[1], 'next', ARGV[3], 'ended', ARGV[4], 'bytes', bytes)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
if #ARGV >= 6 then redis.call('PUBLISH', ARGV[1], ARGV[#ARGV]) end
return 1
"""
# KEYS: meta, log, start. ARGV: channel, TTL (ms), next seq, ended ("1"/"0"), packed start
# event ('' if none), packed window events oldest first. Writes only if meta is missing.


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
        self._ttl_ms = max(1, round(backlog_ttl_s * 1000))
        self._channel_prefix = f"{key_prefix}:events:"
        self._control_channel = f"{key_prefix}:control"
        self._redis: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._started = False
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Pub/sub state. `_ready[job]` exists while the job has local subscribers and is set
        # once the channel subscription is confirmed on the current connection.
        self._pubsub: PubSub | None = None
        self._send_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._subs: dict[str, set[_RedisSubscription]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._unconfirmed: dict[str, int] = {}
        self._resync_on_confirm: set[str] = set()
        self._last_traffic_s = 0.0
        # Publisher side: this broker's copy of the jobs it publishes (oldest append first).
        self._logs: dict[str, JobLog] = {}
        self._counters = dict.fromkeys(RedisBrokerStats.__dataclass_fields__, 0)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and open the pub/sub connection; raises `BrokerUnavailable` if Redis
        cannot be reached within `op_timeout_s`."""
        if self._closed:
            raise BrokerClosed("cannot start: the Redis broker is closed")
        if self._started:
            return
        self._redis = connect(self.url)  # no retries of its own: `_retrying` has a deadline
        self._scripts = {
            "publish": self._redis.register_script(_PUBLISH_LUA),
            "read": self._redis.register_script(_READ_LUA),
            "restore": self._redis.register_script(_RESTORE_LUA),
        }
        self._started = True
        self._reader = asyncio.create_task(self._read_forever(), name="redis-broker-reader")
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
        tasks = [task for task in (self._reader, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._redis is not None:
            await self._redis.aclose()

    def stats(self) -> RedisBrokerStats:
        return RedisBrokerStats(**self._counters)

    # -- publish ------------------------------------------------------------------------
    async def publish(self, event: Event) -> None:
        self._check_usable("publish")
        job_id = event.job_id
        payload = event.pack()
        args = [
            event.seq,
            payload,
            self._channel(job_id),
            self._ttl_ms,
            self.max_backlog_bytes,
            "1" if event.type == "start" else "0",
            "1" if event.terminal else "0",
        ]
        restored = False
        while True:
            status, expected = await self._retrying(
                f"publish seq {event.seq} of job {job_id}",
                lambda attempt: self._scripts["publish"](
                    keys=self._keys(job_id), args=[*args, "1" if attempt else "0"]
                ),
            )
            if status in (0, 1):
                break
            log = self._logs.get(job_id)
            if status == -2 and not restored and log is not None and log.next_seq == event.seq:
                await self._restore(job_id, log)  # Redis lost the backlog: put ours back
                restored = True
                continue
            if status == -2:
                raise OutOfOrderEvent(
                    f"job {job_id} has no backlog in Redis (expired or lost), so it expects "
                    f"seq 0 next; got event seq {event.seq}"
                )
            if status == -3:
                raise OutOfOrderEvent(
                    f"job {job_id} already ended at seq {int(expected) - 1}; "
                    f"got event seq {event.seq}"
                )
            raise OutOfOrderEvent(
                f"job {job_id} expects seq {expected} next, got event seq {event.seq}"
            )
        self._counters["events_published"] += 1
        self._counters["bytes_published"] += len(payload)
        self._keep_copy(event, len(payload))

    def adopt(self, events: Sequence[Event]) -> None:
        """Take over the copy of a job whose earlier `events` (its stored backlog, oldest
        first: `start`, then a window) another process published: a worker that takes a
        queued job adopts its log, so it can restore all of it if Redis loses it."""
        if not events:
            return
        job_id = events[0].job_id
        start = events[0] if events[0].type == "start" else None
        window = list(events[1:] if start is not None else events)
        if window and start is not None and window[0].seq != start.seq + 1:
            log = JobLog(job_id, self.max_backlog_bytes, first_seq=window[0].seq)
            log.start = start  # pinned; the window rolled past it
        else:
            log = JobLog(job_id, self.max_backlog_bytes, first_seq=events[0].seq)
            if start is not None:
                window.insert(0, start)
        now = time.monotonic()
        for event in window:
            log.append(event, len(event.pack()), now)
        self._logs.pop(job_id, None)
        self._logs[job_id] = log

    def disown(self, job_id: str) -> None:
        """Drop this broker's copy of `job_id`: another process publishes it from now on
        (and restores it), so this one must never restore an older copy over it."""
        self._logs.pop(job_id, None)

    def _keep_copy(self, event: Event, size: int) -> None:
        now = time.monotonic()
        log = self._logs.pop(event.job_id, None)
        if log is None or log.next_seq != event.seq:
            log = JobLog(event.job_id, self.max_backlog_bytes, first_seq=event.seq)
        log.append(event, size, now)
        self._logs[event.job_id] = log
        expired = [
            j for j, old in self._logs.items() if now - old.last_append_s > self.restore_window_s
        ]
        for job_id in expired:
            del self._logs[job_id]

    async def _restore(self, job_id: str, log: JobLog) -> bool:
        window = log.window()
        if not window:
            return False
        args: list[Any] = [
            self._channel(job_id),
            self._ttl_ms,
            log.next_seq,
            "1" if log.ended else "0",
            log.start.pack() if log.start is not None else b"",
            *(event.pack() for event, _ in window),
        ]
        done = await self._retrying(
            f"restore the backlog of job {job_id}",
            lambda _: self._scripts["restore"](keys=self._keys(job_id), args=args),
        )
        if done:
            self._counters["restores"] += 1
            logger.info("restored the backlog of job %s up to seq %d", job_id, log.next_seq - 1)
        return bool(done)

    async def _restore_all(self) -> None:
        now = time.monotonic()
        for job_id, log in list(self._logs.items()):
            if now - log.last_append_s > self.restore_window_s:
                self._logs.pop(job_id, None)
                continue
            try:
                await self._restore(job_id, log)
            except BrokerUnavailable:
                return  # Redis went away again; the next reconnection restores
            except Exception:
                logger.exception("restoring the backlog of job %s failed", job_id)

    # -- subscribe and read -------------------------------------------------------------
    def subscribe(
        self, job_id: str, from_seq: int = 0, *, max_pending: int = 256
    ) -> _RedisSubscription:
        self._check_usable("subscribe")
        return _RedisSubscription(self, job_id, from_seq, max_pending)

    async def backlog(self, job_id: str, from_seq: int = 0) -> list[Event]:
        self._check_usable("read the backlog")
        return list((await self._snapshot(job_id, from_seq)).events)

    async def start_event(self, job_id: str) -> Event | None:
        self._check_usable("read the start event")
        redis = self._client()
        payload = await self._retrying(
            f"read the start event of job {job_id}", lambda _: redis.get(self._keys(job_id)[2])
        )
        return None if payload is None else Event.unpack(cast(bytes, payload))

    async def drop(self, job_id: str) -> None:
        self._check_usable("drop a backlog")
        self._logs.pop(job_id, None)
        redis = self._client()
        await self._retrying(f"drop job {job_id}", lambda _: redis.delete(*self._keys(job_id)))

    async def _snapshot(self, job_id: str, from_seq: int) -> Snapshot:
        reply = await self._retrying(
            f"read the backlog of job {job_id}",
            lambda _: self._scripts["read"](keys=self._keys(job_id), args=[from_seq]),
        )
        next_seq, first_seq, ended, start, items = reply
        if not next_seq:
            return Snapshot(events=(), next_seq=0, first_seq=0, ended=False)
        events = []
        if start:
            start_event = Event.unpack(start)
            if from_seq <= start_event.seq < first_seq:
                events.append(start_event)
        events.extend(Event.unpack(item) for item in items)
        return Snapshot(
            events=tuple(events), next_seq=next_seq, first_seq=first_seq, ended=bool(ended)
        )

    async def _attach(self, sub: _RedisSubscription) -> None:
        self._check_usable("subscribe")
        job_id = sub.job_id
        self._subs.setdefault(job_id, set()).add(sub)
        ready = self._ready.get(job_id)
        if ready is None:
            ready = self._ready[job_id] = asyncio.Event()
            await self._send_subscribe(job_id)
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
            if not self._closed:
                self._spawn(self._send_unsubscribe(sub.job_id))

    # -- the pub/sub connection ---------------------------------------------------------
    async def _send_subscribe(self, job_id: str) -> None:
        channel = self._channel(job_id)
        async with self._send_lock:
            if job_id not in self._ready or self._pubsub is None:
                return  # released meanwhile, or down: the reconnection subscribes it
            try:
                await self._pubsub.subscribe(channel)
            except REDIS_DOWN:
                return  # the reader notices the drop and subscribes it after reconnecting
            self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1

    async def _send_unsubscribe(self, job_id: str) -> None:
        async with self._send_lock:
            if job_id in self._ready or self._pubsub is None:
                return
            with contextlib.suppress(*REDIS_DOWN):
                await self._pubsub.unsubscribe(self._channel(job_id))

    async def _read_forever(self) -> None:
        backoff_s = 0.05
        connected_before = False
        while not self._closed:
            pubsub = self._client().pubsub()
            try:
                async with self._send_lock:
                    channels = [self._control_channel, *map(self._channel, self._ready)]
                    self._unconfirmed = dict.fromkeys(channels, 1)
                    self._resync_on_confirm = set(channels[1:]) if connected_before else set()
                    await pubsub.subscribe(*channels)
                    self._pubsub = pubsub
                self._last_traffic_s = asyncio.get_running_loop().time()
                await self._pump(pubsub, restore=connected_before)
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                log = logger.warning if self._connected.is_set() else logger.debug
                log("Redis pub/sub connection lost or refused (%s); reconnecting", exc)
            except Exception:
                logger.exception("Redis broker reader failed; reconnecting")
            finally:
                async with self._send_lock:
                    self._pubsub = None
                    if self._connected.is_set():  # an established connection dropped
                        connected_before = True
                        backoff_s = 0.05
                        self._counters["reconnects"] += 1
                    self._connected.clear()
                    for ready in self._ready.values():
                        ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if not self._closed:
                await asyncio.sleep(backoff_s)  # backoff before reconnecting, not a sync wait
                backoff_s = min(backoff_s * 2, self.max_backoff_s)

    async def _pump(self, pubsub: PubSub, *, restore: bool) -> None:
        """Read messages until the connection fails; a watchdog PINGs a silent connection."""
        watchdog = asyncio.create_task(self._watch(pubsub))
        reading: asyncio.Future[Any] | None = None
        try:
            while True:
                reading = asyncio.ensure_future(pubsub.get_message(timeout=None))
                done, _ = await asyncio.wait(
                    {reading, watchdog}, return_when=asyncio.FIRST_COMPLETED
                )
                if reading not in done:
                    watchdog.result()  # raises why the connection is considered dead
                message = reading.result()
                self._last_traffic_s = asyncio.get_running_loop().time()
                if message is not None:
                    self._handle(message, restore=restore)
        finally:
            for task in (watchdog, reading):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _watch(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval_s)  # a period, not a sync wait
            if loop.time() - self._last_traffic_s < self.ping_interval_s:
                continue
            sent_s = loop.time()
            async with self._send_lock:
                await pubsub.ping()
            await asyncio.sleep(self.ping_interval_s)
            if self._last_traffic_s < sent_s:
                raise RedisConnectionError(f"no PONG within {self.ping_interval_s} s")

    def _handle(self, message: dict[str, Any], *, restore: bool) -> None:
        kind = message["type"]
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        if kind == "message":
            data: bytes = message["data"]
            self._counters["messages_received"] += 1
            self._counters["bytes_received"] += len(data)
            self._dispatch(channel, data)
        elif kind == "subscribe":
            self._confirmed(channel, restore=restore)

    def _dispatch(self, channel: str, data: bytes) -> None:
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

    def _confirmed(self, channel: str, *, restore: bool) -> None:
        if channel == self._control_channel:
            self._connected.set()
            if restore and self._logs:
                self._spawn(self._restore_all())
            return
        left = self._unconfirmed.get(channel, 0) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        self._unconfirmed.pop(channel, None)
        job_id = channel[len(self._channel_prefix) :]
        ready = self._ready.get(job_id)
        if ready is None:
            return
        ready.set()
        if channel in self._resync_on_confirm:
            self._resync_on_confirm.discard(channel)
            for sub in tuple(self._subs.get(job_id, ())):
                sub.resync()

    # -- helpers ------------------------------------------------------------------------
    async def _retrying(self, what: str, call: Callable[[int], Awaitable[T]]) -> T:
        """`call(attempt)` until Redis answers, for at most `op_timeout_s`."""
        return await retrying(
            what,
            call,
            where=f"Redis at {redact(self.url)}",
            timeout_s=self.op_timeout_s,
            closed=lambda: self._closed,
            max_backoff_s=self.max_backoff_s,
            on_retry=self._count_retry,
        )

    def _count_retry(self) -> None:
        self._counters["retries"] += 1

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> Redis:
        if self._redis is None:
            raise BrokerError("the Redis broker is not started: call `await broker.start()`")
        return self._redis

    def _check_usable(self, what: str) -> None:
        if self._closed:
            raise BrokerClosed(f"cannot {what}: the Redis broker is closed")
        if not self._started:
            raise BrokerError(f"cannot {what}: call `await broker.start()` first")

    def _keys(self, job_id: str) -> tuple[str, str, str]:
        tag = f"{self.key_prefix}:{{{job_id}}}"
        return f"{tag}:meta", f"{tag}:log", f"{tag}:start"

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
        return await self._broker._snapshot(self.job_id, from_seq)
