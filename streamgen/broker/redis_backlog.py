"""The Redis broker's backlog: a job's events kept in Redis for late joiners and resume, and
this publisher's own copy of the jobs it publishes, to write back if Redis loses them (the
broker's module docstring says how both work). Every change is one Lua script.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, cast

from streamgen.broker._local import JobLog, Snapshot
from streamgen.broker.base import BrokerUnavailable, Event, OutOfOrderEvent
from streamgen.broker.redis_ops import RetryingRedis

logger = logging.getLogger(__name__)

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


SCRIPTS = {"publish": _PUBLISH_LUA, "read": _READ_LUA, "restore": _RESTORE_LUA}


class RedisBacklog:
    """The backlogs under `key_prefix` on `redis`, and this publisher's copies.

    `ttl_ms`: how long a backlog lives after its last event; `max_bytes`: packed bytes of a
    window; `restore_window_s`: seconds a copy is kept after the job's last event.
    """

    def __init__(
        self,
        redis: RetryingRedis,
        key_prefix: str,
        *,
        ttl_ms: int,
        max_bytes: int,
        restore_window_s: float,
    ) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.channel_prefix = f"{key_prefix}:events:"
        self.ttl_ms = ttl_ms
        self.max_bytes = max_bytes
        self.restore_window_s = restore_window_s
        self.restores = 0
        self._logs: dict[str, JobLog] = {}  # oldest append first

    def keys(self, job_id: str) -> tuple[str, str, str]:
        tag = f"{self.key_prefix}:{{{job_id}}}"
        return f"{tag}:meta", f"{tag}:log", f"{tag}:start"

    def channel(self, job_id: str) -> str:
        return f"{self.channel_prefix}{job_id}"

    async def publish(self, event: Event) -> int:
        """Store and publish `event` (one script); its packed size in bytes."""
        job_id = event.job_id
        payload = event.pack()
        args: list[Any] = [
            event.seq,
            payload,
            self.channel(job_id),
            self.ttl_ms,
            self.max_bytes,
            "1" if event.type == "start" else "0",
            "1" if event.terminal else "0",
        ]
        script, keys = self.redis.scripts["publish"], self.keys(job_id)
        restored = False
        while True:
            status, expected = await self.redis.call_attempts(
                f"publish seq {event.seq} of job {job_id}",
                lambda attempt: script(keys=keys, args=[*args, "1" if attempt else "0"]),
            )
            if status in (0, 1):
                break
            log = self._logs.get(job_id)
            if status == -2 and not restored and log is not None and log.next_seq == event.seq:
                await self.restore(job_id, log)  # Redis lost the backlog: put ours back
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
        self._keep_copy(event, len(payload))
        return len(payload)

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
            log = JobLog(job_id, self.max_bytes, first_seq=window[0].seq)
            log.start = start  # pinned; the window rolled past it
        else:
            log = JobLog(job_id, self.max_bytes, first_seq=events[0].seq)
            if start is not None:
                window.insert(0, start)
        now = time.monotonic()
        for event in window:
            log.append(event, len(event.pack()), now)
        self._logs.pop(job_id, None)
        self._logs[job_id] = log

    def holds_copies(self) -> bool:
        return bool(self._logs)

    def disown(self, job_id: str) -> None:
        """Drop this broker's copy of `job_id`: another process publishes it from now on
        (and restores it), so this one must never restore an older copy over it."""
        self._logs.pop(job_id, None)

    def _keep_copy(self, event: Event, size: int) -> None:
        now = time.monotonic()
        log = self._logs.pop(event.job_id, None)
        if log is None or log.next_seq != event.seq:
            log = JobLog(event.job_id, self.max_bytes, first_seq=event.seq)
        log.append(event, size, now)
        self._logs[event.job_id] = log
        expired = [
            j for j, old in self._logs.items() if now - old.last_append_s > self.restore_window_s
        ]
        for job_id in expired:
            del self._logs[job_id]

    async def restore(self, job_id: str, log: JobLog) -> bool:
        window = log.window()
        if not window:
            return False
        args: list[Any] = [
            self.channel(job_id),
            self.ttl_ms,
            log.next_seq,
            "1" if log.ended else "0",
            log.start.pack() if log.start is not None else b"",
            *(event.pack() for event, _ in window),
        ]
        done = await self.redis.script(
            "restore", f"restore the backlog of job {job_id}", self.keys(job_id), args
        )
        if done:
            self.restores += 1
            logger.info("restored the backlog of job %s up to seq %d", job_id, log.next_seq - 1)
        return bool(done)

    async def restore_all(self) -> None:
        now = time.monotonic()
        for job_id, log in list(self._logs.items()):
            if now - log.last_append_s > self.restore_window_s:
                self._logs.pop(job_id, None)
                continue
            try:
                await self.restore(job_id, log)
            except BrokerUnavailable:
                return  # Redis went away again; the next reconnection restores
            except Exception:
                logger.exception("restoring the backlog of job %s failed", job_id)

    async def start_event(self, job_id: str) -> Event | None:
        redis = self.redis.client
        payload = await self.redis.call(
            f"read the start event of job {job_id}", lambda: redis.get(self.keys(job_id)[2])
        )
        return None if payload is None else Event.unpack(cast(bytes, payload))

    async def drop(self, job_id: str) -> None:
        self._logs.pop(job_id, None)
        redis = self.redis.client
        await self.redis.call(f"drop job {job_id}", lambda: redis.delete(*self.keys(job_id)))

    async def snapshot(self, job_id: str, from_seq: int) -> Snapshot:
        reply = await self.redis.script(
            "read", f"read the backlog of job {job_id}", self.keys(job_id), [from_seq]
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
