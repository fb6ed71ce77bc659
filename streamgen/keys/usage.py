"""What each key has used: requests this minute, video seconds today, jobs now. In Redis
when the service runs on a Redis broker, so every replica counts against the same limits;
else in this process.

- Requests: a fixed one-minute window per key (the count expires with its window).
- Video seconds: a UTC day's total per key, taken when a job is accepted (its requested
  length; an unbounded job's cap) and given back, for what was not made, when it ends
  (once per job, whoever settles it).
- Jobs: a key's unfinished jobs with the time each was counted; a job leaves when it is
  settled, and one that ended elsewhere without saying so (a crashed process) is pruned
  when the set looks full, if it was counted more than `HOLD_GRACE_S` ago (a job being
  created is counted before it exists).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..broker.redis_ops import RetryingRedis

OP_TIMEOUT_S = 5.0
DAY_S = 86400
HOLD_GRACE_S = 60.0  # a counted job id is not pruned for being unknown before this
REFUND_MARK_S = 2 * DAY_S  # how long "this job's seconds were given back" is remembered
IsActive = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class Window:
    """A key's request count in the current minute."""

    count: int
    limit: int
    reset_s: float  # seconds until the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def exceeded(self) -> bool:
        return self.limit > 0 and self.count > self.limit


def utc_day(at: float) -> int:
    """The UTC day number of Unix time `at`."""
    return int(at // DAY_S)


def seconds_to_midnight(now: float) -> float:
    return DAY_S - now % DAY_S


class Usage(ABC):
    @abstractmethod
    async def hit(self, key_id: str, limit: int, now: float) -> Window:
        """Count one request of `key_id` in the minute of `now`."""

    @abstractmethod
    async def charge(self, key_id: str, seconds: float, quota: float, day: int) -> float | None:
        """Take `seconds` from the key's `quota` for `day`: the seconds used after, or None
        (nothing taken) when they do not fit."""

    @abstractmethod
    async def used(self, key_id: str, day: int) -> float: ...

    @abstractmethod
    async def refund(self, key_id: str, seconds: float, day: int, job_id: str) -> None:
        """Give `seconds` back to the key's `day`, once per `job_id`."""

    @abstractmethod
    async def hold(self, key_id: str, job_id: str, limit: int, is_active: IsActive) -> bool:
        """Count `job_id` among the key's jobs if fewer than `limit` are unfinished."""

    @abstractmethod
    async def release(self, key_id: str, job_id: str) -> None: ...

    async def close(self) -> None:  # noqa: B027 (optional)
        """Release connections."""


class MemoryUsage(Usage):
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (minute, count)
        self._days: dict[tuple[str, int], float] = {}
        self._jobs: dict[str, dict[str, float]] = {}  # key -> {job id: counted at}
        self._refunded: dict[str, None] = {}  # job ids, oldest first (bounded)
        self._lock = asyncio.Lock()

    async def hit(self, key_id: str, limit: int, now: float) -> Window:
        minute = int(now // 60)
        last, count = self._windows.get(key_id, (minute, 0))
        count = count + 1 if last == minute else 1
        self._windows[key_id] = (minute, count)
        return Window(count, limit, 60 - now % 60)

    async def charge(self, key_id: str, seconds: float, quota: float, day: int) -> float | None:
        used = self._days.get((key_id, day), 0.0)
        if quota > 0 and used + seconds > quota + 1e-9:
            return None
        self._days[(key_id, day)] = used + seconds
        return used + seconds

    async def used(self, key_id: str, day: int) -> float:
        return self._days.get((key_id, day), 0.0)

    async def refund(self, key_id: str, seconds: float, day: int, job_id: str) -> None:
        if job_id in self._refunded:
            return
        self._refunded[job_id] = None
        while len(self._refunded) > 10_000:
            del self._refunded[next(iter(self._refunded))]
        if (key_id, day) in self._days:
            self._days[(key_id, day)] = max(0.0, self._days[(key_id, day)] - seconds)

    async def hold(self, key_id: str, job_id: str, limit: int, is_active: IsActive) -> bool:
        async with self._lock:
            jobs = self._jobs.setdefault(key_id, {})
            if limit > 0 and len(jobs) >= limit:
                old = time.time() - HOLD_GRACE_S
                for other, at in list(jobs.items()):
                    if at < old and not await is_active(other):
                        jobs.pop(other, None)
            if limit > 0 and len(jobs) >= limit:
                return False
            jobs[job_id] = time.time()
            return True

    async def release(self, key_id: str, job_id: str) -> None:
        self._jobs.get(key_id, {}).pop(job_id, None)


_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""

_CHARGE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local seconds, quota = tonumber(ARGV[1]), tonumber(ARGV[2])
if quota > 0 and used + seconds > quota + 1e-9 then return nil end
local after = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return after
"""

_REFUND = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
local used = tonumber(redis.call('GET', KEYS[1]) or '-1')
if used < 0 then return 0 end
local after = math.max(0, used - tonumber(ARGV[1]))
redis.call('SET', KEYS[1], tostring(after), 'KEEPTTL')
return 1
"""

_HOLD = """
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


class RedisUsage(Usage):
    """Usage in Redis under ``{prefix}:usage:{key id}:…``."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._redis = RetryingRedis(url, OP_TIMEOUT_S)
        self._scripts = {
            name: self._redis.client.register_script(source)
            for name, source in (("hit", _HIT), ("charge", _CHARGE), ("refund", _REFUND),
                                 ("hold", _HOLD))
        }  # fmt: skip

    def _key(self, key_id: str, *rest: object) -> str:
        return ":".join([self.prefix, "usage", key_id, *map(str, rest)])

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        return await self._redis.call(f"count API key use ({name})", lambda: script(keys, args))

    async def hit(self, key_id: str, limit: int, now: float) -> Window:
        minute = int(now // 60)
        count = await self._script("hit", [self._key(key_id, "minute", minute)], [61_000])
        return Window(int(count), limit, 60 - now % 60)

    async def charge(self, key_id: str, seconds: float, quota: float, day: int) -> float | None:
        after = await self._script(
            "charge", [self._key(key_id, "day", day)], [repr(seconds), repr(quota), 2 * DAY_S]
        )
        return None if after is None else float(after)

    async def used(self, key_id: str, day: int) -> float:
        day_key = self._key(key_id, "day", day)
        value = await self._redis.call("read API key use", lambda: self._redis.client.get(day_key))
        return float(value or 0.0)

    async def refund(self, key_id: str, seconds: float, day: int, job_id: str) -> None:
        mark = ":".join([self.prefix, "usage", "refunded", job_id])
        keys = [self._key(key_id, "day", day), mark]
        await self._script("refund", keys, [repr(seconds), int(REFUND_MARK_S)])

    async def hold(self, key_id: str, job_id: str, limit: int, is_active: IsActive) -> bool:
        jobs = self._key(key_id, "jobs")
        if await self._script("hold", [jobs], [job_id, limit, repr(time.time())]):
            return True
        old = time.time() - HOLD_GRACE_S
        members = await self._redis.call(
            "list a key's jobs", lambda: self._redis.client.zrangebyscore(jobs, "-inf", old)
        )
        names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        ended = [name for name in names if not await is_active(name)]
        if ended:
            await self._redis.call(
                "prune a key's jobs", lambda: self._redis.client.zrem(jobs, *ended)
            )
        return bool(await self._script("hold", [jobs], [job_id, limit, repr(time.time())]))

    async def release(self, key_id: str, job_id: str) -> None:
        jobs = self._key(key_id, "jobs")
        await self._redis.call("release a key's job", lambda: self._redis.client.zrem(jobs, job_id))

    async def close(self) -> None:
        await self._redis.aclose()
