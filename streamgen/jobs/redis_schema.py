"""The Redis job store's schema: its key layout and its Lua scripts (every state change of
a job is one script, so it is atomic).

Keys (`prefix` as the broker's; one hash tag per job, as the broker's backlog)::

    {prefix}:{<job>}:job      hash: the job's state and its resolved request
    {prefix}:{<job>}:leases   zset: replicas holding a request-scoped job -> expiry (ms)
    {prefix}:jobs:queue       zset: queued job ids, score (100 - priority) * 1e12 + n
    {prefix}:jobs:order       counter n (FIFO within a priority)
    {prefix}:jobs:index       zset: listed job ids (/v1/videos) -> created_at (µs)
    {prefix}:jobs:active      zset: jobs someone must finish -> deadline (ms, Redis time)
    {prefix}:jobs:workers     zset: live workers -> expiry (ms)
    {prefix}:jobs:load        hash: worker -> its load report (msgpack, `load.WorkerLoad`)
    {prefix}:jobs:control     pub/sub: "queued", "cancel <job>", "finished <job>"

Each script's comment lists its KEYS and ARGV. Times inside scripts are Redis's own
(`TIME`), in milliseconds, so deadlines do not depend on the callers' clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..background import TaskSet
from ..broker.base import Broker
from ..broker.redis_ops import RetryingRedis
from ..config import Settings


@dataclass(frozen=True)
class RedisKeys:
    """The names of the store's keys and channel under `prefix`."""

    prefix: str

    @property
    def queue(self) -> str:
        return f"{self.prefix}:jobs:queue"

    @property
    def order(self) -> str:
        return f"{self.prefix}:jobs:order"

    @property
    def index(self) -> str:
        return f"{self.prefix}:jobs:index"

    @property
    def active(self) -> str:
        return f"{self.prefix}:jobs:active"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:jobs:workers"

    @property
    def load(self) -> str:
        return f"{self.prefix}:jobs:load"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:jobs:control"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:job"

    def leases(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:leases"


SCORE_BASE = 10**12  # queue score: (100 - priority) * base + FIFO counter (< 2**53)

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_CREATE_LUA = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
local now = now_ms()
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1]) end
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3]) end
return 1
"""
)
# KEYS: job, leases, active. ARGV: lease member ('' none), lease ms, active member ('' none),
# active ms, field/value pairs. Writes only when the job is missing (create, restore).

_ENQUEUE_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'score', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
# KEYS: job, queue. ARGV: job id, queue score, control channel, message.

_CLAIM_LUA = (
    _NOW
    + """
local served = nil
if #ARGV > 6 then
  served = {}
  for i = 7, #ARGV do served[ARGV[i]] = true end
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, 63)) do
  local key = ARGV[1] .. ':{' .. id .. '}:job'
  local h = redis.call('HMGET', key, 'status', 'live', 'model')
  if h[1] ~= 'queued' then
    redis.call('ZREM', KEYS[1], id)
  elseif served and not served[h[3]] then
    -- another model's job: left in the queue for a worker that serves it
  elseif (h[2] == '1' and ARGV[5] == '1') or (h[2] ~= '1' and ARGV[6] == '1') then
    redis.call('ZREM', KEYS[1], id)
    local attempt = tonumber(redis.call('HGET', key, 'attempt') or '0') + 1
    redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2], 'attempt', attempt,
               'heartbeat_at', ARGV[3])
    local started = redis.call('HGET', key, 'started_at')
    if not started or started == '' then redis.call('HSET', key, 'started_at', ARGV[3]) end
    redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), id)
    return redis.call('HGETALL', key)
  end
end
return false
"""
)
# KEYS: queue, active. ARGV: key prefix, worker id, now (Unix s), dead-after ms, "1" to take a
# live stream, "1" to take an offline job, then the ids of the models served (none: any).
# Takes the best queued job of a kind and model asked for (among the 64 best) and marks it
# running here; returns its fields (flat), or nil.

_HEARTBEAT_LUA = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', '', 0} end
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt', 'cancel')
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return {'lost', '', 0} end
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[5])
return {'ok', h[4] or '', redis.call('ZCOUNT', KEYS[3], now, '+inf')}
"""
)
# KEYS: job, active, leases. ARGV: job id, worker, attempt, dead-after ms, now (Unix s).
# Returns {state, cancel request, replicas holding a lease (subscribers)}.

_RECORD_LUA = """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if not h[1] then return -1 end
if h[1] ~= 'running' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""
# KEYS: job. ARGV: worker, attempt, field/value pairs. -1 missing, 0 not ours, 1 stored.

_FINISH_LUA = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if not h[1] then return -1 end
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'cancel')
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), ARGV[1])
return 1
"""
)
# KEYS: job, active. ARGV: job id, worker, attempt, dead-after ms, field/value pairs. The job
# stays in `active` (ours to publish its terminal event) until `settle`.

_SETTLE_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
  if tonumber(ARGV[5]) > last then redis.call('HSET', KEYS[1], 'last_seq', ARGV[5]) end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
# KEYS: job, active, leases. ARGV: job id, finished-job TTL ms, control channel, message,
# the seq of the terminal event.

_CANCEL_LUA = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[3], 'error', ARGV[4],
             'terminal', ARGV[5])
  redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[6]), ARGV[1])
  return 'queued'
end
if status == 'running' then
  if not redis.call('HGET', KEYS[1], 'cancel') then
    redis.call('HSET', KEYS[1], 'cancel', ARGV[2])
  end
  redis.call('PUBLISH', ARGV[7], ARGV[8])
  return 'running'
end
return 'finished'
"""
)
# KEYS: job, queue, active. ARGV: job id, cancel request, now (Unix s), error, terminal,
# dead-after ms, control channel, message.

_DUE_LUA = (
    _NOW
    + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
local lease = now + tonumber(ARGV[1])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], lease, id)
  table.insert(out, id)
end
return {lease, out}
"""
)
# KEYS: active. ARGV: dead-after ms, limit. Jobs whose heartbeat (or publish lease) lapsed,
# each leased to the caller for dead-after ms (so one reaper handles each).

_LAPSE_LUA = """
if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1])) ~= tonumber(ARGV[2]) then return 0 end
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'score')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
if ARGV[4] == 'requeue' then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], h[3], ARGV[1])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return 1
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'cancel')
return 1
"""
# KEYS: job, active, queue. ARGV: job id, the reaper's lease score (no heartbeat since),
# attempt, 'requeue' (then channel, message) or 'end' (then field/value pairs).

_ORPHANS_LUA = (
    _NOW
    + """
local now = now_ms()
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. ':{' .. id .. '}:job'
  local h = redis.call('HMGET', key, 'status', 'request_scoped', 'cancel')
  if h[1] == 'running' and h[2] == '1' and not h[3] then
    local leases = ARGV[1] .. ':{' .. id .. '}:leases'
    if redis.call('ZCOUNT', leases, now, '+inf') == 0 then
      redis.call('HSET', key, 'cancel', ARGV[2])
      redis.call('PUBLISH', ARGV[3], 'cancel ' .. id)
      table.insert(out, id)
    end
  end
end
return out
"""
)
# KEYS: active. ARGV: key prefix, cancel request, control channel. Request-scoped running
# jobs with no live lease anywhere (their replicas died): ask their workers to stop.

_LEASE_LUA = (
    _NOW
    + """
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""
)
# KEYS: leases. ARGV: holder, ms it holds for ('' to let go), key TTL ms.

_HELD_ELSEWHERE_LUA = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZCOUNT', KEYS[1], now_ms(), '+inf')
"""
)
# KEYS: leases. ARGV: this holder. Let go, then count live holders.

_GIVE_BACK_LUA = """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt', 'score', 'cancel')
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 0 end
if h[5] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '', 'attempt', tonumber(h[3]) - 1)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], h[4], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
# KEYS: job, active, queue. ARGV: job id, worker, attempt, channel, message. Refused (0) when
# the job is no longer this worker's, or a cancel was asked for (the worker ends it instead).

SCRIPTS = {
    "create": _CREATE_LUA, "enqueue": _ENQUEUE_LUA, "claim": _CLAIM_LUA,
    "heartbeat": _HEARTBEAT_LUA, "record": _RECORD_LUA, "finish": _FINISH_LUA,
    "settle": _SETTLE_LUA, "cancel": _CANCEL_LUA, "due": _DUE_LUA, "lapse": _LAPSE_LUA,
    "orphans": _ORPHANS_LUA, "lease": _LEASE_LUA, "held": _HELD_ELSEWHERE_LUA,
    "give_back": _GIVE_BACK_LUA,
}  # fmt: skip


@dataclass(frozen=True)
class StoreContext:
    """What the parts of one Redis job store share (`redis_store` composes them): the
    client, the key names, this process's identity, its background tasks and timings.

    `dead_ms`: how long a worker may go without heartbeating; `lease_ms`: how long a
    replica's lease on a request-scoped job outlives it; `finished_ttl_ms`: how long a
    finished job's record lives; `poll_s`: how often a claimer looks without a wake-up.
    """

    settings: Settings
    broker: Broker
    redis: RetryingRedis
    keys: RedisKeys
    identity: str
    tasks: TaskSet
    dead_ms: int
    lease_ms: int
    finished_ttl_ms: int
    poll_s: float
