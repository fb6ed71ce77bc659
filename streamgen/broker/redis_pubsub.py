"""One Redis pub/sub connection that outlives drops, shared by the Redis broker (job
channels + its control channel) and the Redis job store (its control channel).

redis-py's asyncio PubSub does not reconnect by itself, so `ReconnectingPubSub` owns a
reader task: when the connection drops (or stops answering PING), its PubSub is closed and
a new one is opened with backoff and subscribed to every channel still followed. Owners
hear of it through callbacks: `on_subscribed(channel, resubscribed)` once a channel's
subscription is confirmed (`resubscribed`: again, after a drop, so the owner catches up
on what it may have missed), `on_drop()` when the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from .redis_ops import REDIS_DOWN, RetryingRedis

log = logging.getLogger(__name__)


class ReconnectingPubSub:
    """Follows a set of channels on one PubSub of `redis` (see the module docstring).

    `on_message(channel, data)` runs for every message. A channel subscribed more than
    once on one connection (subscribe, unsubscribe, subscribe) counts as confirmed only
    when its last subscribe is, so an owner never reads it as live while an unsubscribe is
    still in flight. `ping_interval_s`: seconds of silence before a PING checks the
    connection (no PONG within as long again: dropped). `reconnects` counts drops of
    established connections.
    """

    def __init__(
        self,
        redis: RetryingRedis,
        name: str,
        *,
        on_message: Callable[[str, bytes], None],
        on_subscribed: Callable[[str, bool], None],
        on_drop: Callable[[], None] = lambda: None,
        ping_interval_s: float = 5.0,
        max_backoff_s: float = 2.0,
    ) -> None:
        self.name = name
        self.ping_interval_s = ping_interval_s
        self.max_backoff_s = max_backoff_s
        self.reconnects = 0
        self._redis = redis
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_drop = on_drop
        self._channels: dict[str, None] = {}  # an ordered set
        self._pubsub: PubSub | None = None
        self._lock = asyncio.Lock()  # one sender at a time on the PubSub's connection
        self._pending: dict[str, int] = {}  # channel -> subscribes not yet confirmed
        self._resubscribing: set[str] = set()
        self._established = False
        self._last_traffic_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Future[None]] = set()

    def start(self, channels: Iterable[str]) -> None:
        """Start following `channels` (at least one) in the background."""
        self._channels.update(dict.fromkeys(channels))
        self._task = asyncio.create_task(self._follow(), name=f"{self.name} pub/sub")

    async def subscribe(self, channel: str) -> None:
        """Follow `channel` too; if the connection is down, the reconnection subscribes it."""
        self._channels[channel] = None
        async with self._lock:
            if channel not in self._channels or self._pubsub is None:
                return  # let go meanwhile, or down
            try:
                await self._pubsub.subscribe(channel)
            except REDIS_DOWN:
                return  # the reader notices the drop and subscribes it after reconnecting
            self._pending[channel] = self._pending.get(channel, 0) + 1

    def unsubscribe(self, channel: str) -> None:
        """Stop following `channel` now (the UNSUBSCRIBE is sent in the background, unless
        the channel is followed again before it goes out)."""
        self._channels.pop(channel, None)
        task = asyncio.ensure_future(self._send_unsubscribe(channel))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self._channels or self._pubsub is None:
                return  # followed again meanwhile, or down
            with contextlib.suppress(*REDIS_DOWN):
                await self._pubsub.unsubscribe(channel)

    async def aclose(self) -> None:
        """Stop the reader; it closes the PubSub it has open."""
        tasks = [*self._sending, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self) -> None:
        backoff_s = 0.05
        reconnected = False
        loop = asyncio.get_running_loop()
        while not self._redis.closed:
            pubsub = self._redis.client.pubsub()
            try:
                async with self._lock:
                    channels = list(self._channels)
                    self._pending = dict.fromkeys(channels, 1)
                    self._resubscribing = set(channels) if reconnected else set()
                    await pubsub.subscribe(*channels)
                    self._pubsub = pubsub
                self._last_traffic_s = loop.time()
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                report = log.warning if self._established else log.debug
                report("%s: Redis pub/sub connection lost or refused (%s); reconnecting",
                       self.name, exc)  # fmt: skip
            except Exception:
                log.exception("%s: Redis pub/sub reader failed; reconnecting", self.name)
            finally:
                async with self._lock:
                    self._pubsub = None
                    if self._established:  # an established connection dropped
                        reconnected = True
                        backoff_s = 0.05
                        self.reconnects += 1
                    self._established = False
                    self._on_drop()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if not self._redis.closed:
                await asyncio.sleep(backoff_s)  # backoff before reconnecting, not a sync wait
                backoff_s = min(backoff_s * 2, self.max_backoff_s)

    async def _pump(self, pubsub: PubSub) -> None:
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
                    self._handle(message)
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
            async with self._lock:
                await pubsub.ping()
            await asyncio.sleep(self.ping_interval_s)
            if self._last_traffic_s < sent_s:
                raise RedisConnectionError(f"no PONG within {self.ping_interval_s} s")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        if kind == "message":
            self._on_message(channel, message["data"])
        elif kind == "subscribe":
            self._established = True
            left = self._pending.get(channel, 0) - 1
            if left > 0:
                self._pending[channel] = left
                return
            self._pending.pop(channel, None)
            resubscribed = channel in self._resubscribing
            self._resubscribing.discard(channel)
            self._on_subscribed(channel, resubscribed)
