"""Who may use the server, and how much: API keys checked on every request, each key's
policy applied to the jobs it asks for.

A request names its key with ``Authorization: Bearer <secret>`` (as OpenAI clients send
it) or ``X-API-Key: <secret>``; an event stream (``GET .../events``) or a WebSocket
handshake may also send ``?api_key=<secret>`` (browsers' EventSource and WebSocket cannot
set headers; the access log never records query strings). The server is *open* (no key
needed, no policy) only until the first key is made (or after `streamgen keys open`), and
says so loudly when it starts. A key sees only its own jobs.

Each key's requests per minute, unfinished jobs and video seconds per UTC day are counted
in `Usage` (Redis with a Redis broker, so the limits hold across replicas). Refusals:
401 (no key, unknown or revoked key), 403 (the policy does not allow what was asked:
``param`` names the field), 429 with ``Retry-After`` (rate, job count, daily quota).
Every keyed answer carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (seconds).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segment_pipeline import ResolvedRequest

from ..broker.base import BrokerError
from ..config import Settings
from ..errors import Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized
from ..jobs.record import Job, KeyCharge
from .model import ApiKey, digest_of
from .store import FileKeyStore, KeyStore, RedisKeyStore, default_keys_file
from .usage import IsActive, MemoryUsage, RedisUsage, Usage, Window, seconds_to_midnight, utc_day

log = logging.getLogger("streamgen.keys")

JOBS_RETRY_AFTER_S = 5
MIN_UNBOUNDED_S = 1.0  # an unbounded stream needs at least this much quota left


def secret_from(authorization: str | None, x_api_key: str | None, query: str | None) -> str:
    """The secret a request sends ("" for none): ``Authorization: Bearer``, then
    ``X-API-Key``, then the ``api_key`` query parameter."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return (x_api_key or query or "").strip()


class KeyGate:
    """The keys and their usage, for one process (API replica or worker)."""

    def __init__(self, store: KeyStore, usage: Usage, max_unbounded_seconds: float) -> None:
        self.store = store
        self.usage = usage
        self.max_unbounded_seconds = max_unbounded_seconds

    @classmethod
    def for_settings(cls, settings: Settings) -> KeyGate:
        """Redis keys and usage on a Redis broker; else the key file and this process."""
        if settings.broker != "memory":
            prefix = settings.redis_key_prefix
            store: KeyStore = RedisKeyStore(settings.broker, prefix)
            usage: Usage = RedisUsage(settings.broker, prefix)
        else:
            path = settings.keys_file or default_keys_file(settings.data_dir)
            store, usage = FileKeyStore(Path(path)), MemoryUsage()
        return cls(store, usage, settings.max_unbounded_seconds)

    async def announce(self) -> None:
        """Log, at start, whether requests need a key (loudly when they do not)."""
        _, keyed = await self.store.lookup("")
        if keyed:
            log.info("API keys are required (keys in %s)", self.store.describe())
        else:
            log.warning(
                "OPEN MODE: no API key was ever made in %s, so anyone who can reach this "
                "server may run any job at any priority. Create a key with `streamgen keys "
                "create` to require keys.",
                self.store.describe(),
            )

    async def identify(self, secret: str) -> ApiKey | None:
        """The key `secret` names; None in open mode (no key was ever made, or `keys open`).
        `Unauthorized` when keys are required and `secret` is missing, unknown or revoked."""
        with _reachable("check the API key"):
            key, keyed = await self.store.lookup(digest_of(secret) if secret else "")
        if not keyed:
            return None
        if not secret:
            raise Unauthorized(
                "this server needs an API key: send `Authorization: Bearer <key>` or "
                "`X-API-Key: <key>`",
                param="Authorization",
            )
        if key is None:
            raise Unauthorized(
                "the API key is not valid (unknown or revoked)",
                param="Authorization",
                code="invalid_api_key",
            )
        return key

    async def count_request(self, key: ApiKey) -> Window:
        """Count one request of `key`; `TooManyRequests` past its requests per minute."""
        limit = key.policy.requests_per_minute
        with _reachable("count the API key's requests"):
            window = await self.usage.hit(key.id, limit, time.time())
        if window.exceeded:
            raise TooManyRequests(
                f"API key {key.id} made more than {limit} requests this minute; try again "
                f"in {math.ceil(window.reset_s)} s",
                retry_after_s=window.reset_s,
                extra_headers=rate_headers(window),
            )
        return window

    async def admit_job(
        self,
        key: ApiKey | None,
        request: ResolvedRequest,
        priority: int,
        job_id: str,
        is_active: IsActive,
    ) -> KeyCharge:
        """Check `request` against `key`'s policy, count the job among the key's jobs and
        take its video seconds from today's quota: what was taken, as the job keeps it
        (nothing in open mode). Raises `Forbidden` (403, naming the field) or
        `TooManyRequests` (429). Undo with `release`."""
        if key is None:
            return KeyCharge()
        policy = key.policy
        if priority > policy.max_priority:
            raise Forbidden(
                f"API key {key.id} may set priority up to {policy.max_priority}, not {priority}",
                param="priority",
                code="key_policy",
            )
        unbounded = request.total_frames is None
        if unbounded and not policy.unbounded:
            raise Forbidden(
                f"API key {key.id} may not ask for unbounded streams", param="unbounded",
                code="key_policy",
            )  # fmt: skip
        seconds = 0.0 if unbounded else request.total_frames / request.fps  # type: ignore[operator]
        if not unbounded and 0 < policy.max_seconds < seconds - 1e-9:
            raise Forbidden(
                f"API key {key.id} may ask for up to {policy.max_seconds:g} s of video a "
                f"request; this one asks for {seconds:g} s (num_frames / fps)",
                param="seconds",
                code="key_policy",
            )
        with _reachable("count the API key's jobs"):
            held = await self.usage.hold(key.id, job_id, policy.max_concurrent_jobs, is_active)
        if not held:
            raise TooManyRequests(
                f"API key {key.id} has {policy.max_concurrent_jobs} unfinished jobs, its "
                "limit; wait for one to end or cancel one",
                retry_after_s=JOBS_RETRY_AFTER_S,
                code="too_many_jobs",
            )
        try:
            with _reachable("charge the API key's quota"):
                return await self._charge(key, seconds, unbounded)
        except BaseException:
            with _reachable("count the API key's jobs"):
                await self.usage.release(key.id, job_id)
            raise

    async def _charge(self, key: ApiKey, seconds: float, unbounded: bool) -> KeyCharge:
        quota, now = key.policy.daily_seconds, time.time()
        day = utc_day(now)
        cap = math.inf
        if unbounded:
            if self.max_unbounded_seconds > 0:
                cap = self.max_unbounded_seconds
            if quota > 0:
                cap = min(cap, quota - await self.usage.used(key.id, day))
            seconds = cap if math.isfinite(cap) else 0.0
        too_short = unbounded and cap < MIN_UNBOUNDED_S
        if too_short or await self.usage.charge(key.id, seconds, quota, day) is None:
            used = await self.usage.used(key.id, day)
            needs = max(seconds, MIN_UNBOUNDED_S) if unbounded else seconds
            raise TooManyRequests(
                f"API key {key.id} has used {used:g} of its {quota:g} video seconds today "
                f"(UTC); this request needs {needs:g} s",
                retry_after_s=seconds_to_midnight(now),
                param="seconds",
                code="quota_exceeded",
            )
        cap_s = cap if unbounded and math.isfinite(cap) else 0.0
        return KeyCharge(key.id, charged_seconds=seconds, charged_day=day, cap_seconds=cap_s)

    async def release(self, job_id: str, charge: KeyCharge) -> None:
        """Undo `admit_job` for a job that was not created."""
        if charge.key_id is None:
            return
        with _reachable("give back the API key's job and seconds"):
            await self._give_back(charge.key_id, job_id, charge.charged_seconds, charge.charged_day)

    async def _give_back(self, key_id: str, job_id: str, seconds: float, day: int) -> None:
        """`job_id` no longer counts among the key's jobs; `seconds` go back to `day`."""
        await self.usage.release(key_id, job_id)
        if seconds > 1e-6:
            await self.usage.refund(key_id, seconds, day, job_id)

    async def job_settled(self, job: Job) -> None:
        """A job ended: it no longer counts among its key's jobs, and the seconds it was
        charged but did not make go back to the key's quota of the day it was charged
        (once, however often the job is settled)."""
        charge, fps = job.spec.charge, job.spec.request.fps
        if charge.key_id is None:
            return
        made = job.state.frames_done / fps if fps else 0.0
        await self._give_back(
            charge.key_id, job.id, charge.charged_seconds - made, charge.charged_day
        )

    async def close(self) -> None:
        try:
            await self.usage.close()
        finally:
            await self.store.close()


@contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Redis down (or closed) while keys are checked: 503, not 500."""
    try:
        yield
    except BrokerError as exc:
        raise ServiceUnavailable(f"cannot {what}: {exc}", code="keys_unavailable") from exc


def rate_headers(window: Window) -> dict[str, str]:
    """The rate-limit headers of a keyed answer."""
    if window.limit <= 0:
        return {}
    return {
        "X-RateLimit-Limit": str(window.limit),
        "X-RateLimit-Remaining": str(window.remaining),
        "X-RateLimit-Reset": str(math.ceil(window.reset_s)),
    }
