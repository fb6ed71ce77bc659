"""Talking to Redis, shared by the Redis broker and the Redis job store: one way to connect,
one mapping of redis-py's connection errors onto the broker's own, one retry loop and the
one client that uses it (`RetryingRedis`).

redis-py's own retries are switched off (`connect`): a caller retries with `retrying`,
which backs off from 50 ms up to `max_backoff_s` and, once `timeout_s` has passed, raises
`BrokerUnavailable` ``from`` the last redis-py error. An operation on a closed client
raises `BrokerClosed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
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
    ``await redis.call("what it does", lambda: redis.client.get(key))``. The one retrying
    client of the broker, the job store and the key stores.

    `where` names this Redis in errors (default: its redacted URL); `scripts` are Lua
    sources registered by name, run with `script`; `retries` counts retried commands.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float,
        *,
        where: str | None = None,
        max_backoff_s: float = 2.0,
        scripts: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.where = where or f"Redis at {redact(url)}"
        self.max_backoff_s = max_backoff_s
        self.client: Redis = connect(url)
        self.closed = False
        self.retries = 0
        self.scripts = {
            name: self.client.register_script(source) for name, source in (scripts or {}).items()
        }

    async def call(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        """`command()` until Redis answers (`what` says what it does, in errors)."""
        return await self.call_attempts(what, lambda _: command())

    async def call_attempts(self, what: str, command: Callable[[int], Awaitable[T]]) -> T:
        """`command(attempt)`, for a command that must know it is being retried (attempt > 0:
        its reply may have been lost after it ran)."""
        return await retrying(
            what,
            command,
            where=self.where,
            timeout_s=self.timeout_s,
            closed=lambda: self.closed,
            max_backoff_s=self.max_backoff_s,
            on_retry=self._count_retry,
        )

    async def script(self, name: str, what: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the registered script `name` with retries."""
        script = self.scripts[name]
        return await self.call(what, lambda: script(keys=keys, args=args))

    def _count_retry(self) -> None:
        self.retries += 1

    async def aclose(self) -> None:
        self.closed = True
        await self.client.aclose()
