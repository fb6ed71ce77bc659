"""Talking to Redis, shared by the Redis broker and the Redis job store: one way to connect,
one mapping of redis-py's connection errors onto the broker's own, one retry loop.

redis-py's own retries are switched off (`connect`): a caller retries with `retrying`,
which backs off from 50 ms up to `max_backoff_s` and, once `timeout_s` has passed, raises
`BrokerUnavailable` ``from`` the last redis-py error. An operation on a closed client
raises `BrokerClosed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..observability import REDIS_RETRIES
from .base import BrokerClosed, BrokerUnavailable

T = TypeVar("T")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""What redis-py raises when Redis cannot be reached (retried; never a caller's mistake)."""

SCHEMES = ("redis://", "rediss://", "unix://")


def connect(url: str) -> Redis:
    """A client for `url` that does not retry by itself (callers use `retrying`)."""
    return Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0, socket_timeout=10.0
    )


def redact(url: str) -> str:
    """`url` with its password replaced by ``***`` (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def retrying(
    what: str,
    call: Callable[[int], Awaitable[T]],
    *,
    where: str,
    timeout_s: float,
    closed: Callable[[], bool],
    max_backoff_s: float = 2.0,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """`call(attempt)` (attempt 0, 1, …) until it does not fail for Redis being
    unreachable, for at most `timeout_s` seconds; then `BrokerUnavailable`.

    `what` says what is being done ("publish seq 3 of job x") and `where` names the Redis
    ("Redis at redis://host:6379/0") in the error; `closed()` true means the caller was
    closed meanwhile (`BrokerClosed`, not retried).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff_s = 0.05
    attempt = 0
    while True:
        if closed():
            raise BrokerClosed(f"cannot {what}: the connection to {where} is closed")
        try:
            return await call(attempt)
        except REDIS_DOWN as exc:
            if closed():
                raise BrokerClosed(f"cannot {what}: the connection to {where} is closed") from exc
            if loop.time() + backoff_s > deadline:
                raise BrokerUnavailable(
                    f"cannot {what}: {where} unreachable for {timeout_s} s ({exc})"
                ) from exc
        REDIS_RETRIES.inc()
        if on_retry is not None:
            on_retry()
        await asyncio.sleep(backoff_s)  # backoff between attempts, not a sync wait
        backoff_s = min(backoff_s * 2, max_backoff_s)
        attempt += 1


class RetryingRedis:
    """A client for `url` whose commands retry (`retrying`) for at most `timeout_s` each:
    ``await redis.call("what it does", lambda: redis.client.get(key))``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.client: Redis = connect(url)
        self.closed = False

    async def call(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        return await retrying(
            what,
            lambda _: command(),
            where=f"Redis at {redact(self.url)}",
            timeout_s=self.timeout_s,
            closed=lambda: self.closed,
        )

    async def aclose(self) -> None:
        self.closed = True
        await self.client.aclose()
