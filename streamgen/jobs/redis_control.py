"""The Redis job store's control channel and keeper: what keeps one process's part of the
store in step with Redis and with the other processes.

The control channel (``{prefix}:jobs:control``) carries "queued" (wakes claimers),
"cancel <job>" (the owning worker reads the job's cancel request) and "finished <job>"
(replicas refresh their handle). Its subscription (`ReconnectingPubSub`) comes back after a
drop, and then this process restores what Redis may have lost (`reconcile`). The keeper
runs every `worker_heartbeat_seconds`: heartbeats, leases, handle refreshes and, once
`worker_dead_after_seconds` have passed since (re)connecting (so workers heartbeat first),
the `Reaper`.
"""

from __future__ import annotations

import asyncio
import logging

from ..broker.base import BrokerUnavailable
from ..broker.redis_ops import REDIS_DOWN
from ..broker.redis_pubsub import ReconnectingPubSub
from .codec import text
from .redis_api import ApiSide
from .redis_reaper import Reaper
from .redis_schema import StoreContext
from .redis_worker import WorkerSide

log = logging.getLogger(__name__)


class ControlChannel:
    """Follows the control channel and runs the keeper for `api` and `worker` (see the
    module docstring). `connected` is set while the channel's subscription is confirmed."""

    def __init__(
        self, context: StoreContext, api: ApiSide, worker: WorkerSide, reaper: Reaper
    ) -> None:
        self.context = context
        self.api = api
        self.worker = worker
        self.reaper = reaper
        self.connected = asyncio.Event()
        self._connected_at = 0.0  # loop time of the last (re)connection
        self._keeper: asyncio.Task[None] | None = None
        self._pubsub = ReconnectingPubSub(
            context.redis,
            "job store",
            on_message=self._on_message,
            on_subscribed=self._on_subscribed,
            on_drop=self.connected.clear,
            ping_interval_s=context.poll_s,
        )

    def start(self) -> None:
        self._pubsub.start([self.context.keys.channel])

    def start_keeper(self) -> None:
        self._keeper = asyncio.create_task(self._keep(), name="jobstore-keeper")

    async def close(self) -> None:
        await self._pubsub.aclose()
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.wait([self._keeper], timeout=1.0)

    def _on_subscribed(self, channel: str, resubscribed: bool) -> None:
        self._connected_at = asyncio.get_running_loop().time()
        self.connected.set()
        if resubscribed:
            log.info("job store reconnected to Redis")
            self.context.tasks.spawn(self.reconcile())
        self.worker.notify_claimers()

    def _on_message(self, channel: str, data: bytes) -> None:
        op, _, job_id = text(data).partition(" ")
        if op == "queued":
            self.worker.notify_claimers()
        elif op == "cancel":
            job = self.worker.running.get(job_id)
            if job is not None:
                self.context.tasks.spawn(self.worker.check_cancel(job))
        elif op == "finished":
            handle = self.api.handles.get(job_id)
            if handle is not None and not handle.state.finished:
                self.context.tasks.spawn(self.api.refresh([handle]))

    async def _keep(self) -> None:
        """Every `worker_heartbeat_seconds`: heartbeat running jobs and this worker, hold
        leases, refresh handles, reap lapsed jobs and orphaned request-scoped ones."""
        loop = asyncio.get_running_loop()
        context = self.context
        while not context.redis.closed:
            await asyncio.sleep(context.settings.worker_heartbeat_seconds)  # a period
            if not self.connected.is_set():
                continue
            steps = [self.worker.heartbeat, self.api.hold_leases, self.api.refresh_open]
            # Just (re)connected: workers get a full period to heartbeat before any reaping.
            if loop.time() - self._connected_at >= context.dead_ms / 1000:
                steps += [self.reaper.reap, self.reaper.reap_orphans, self._prune_index]
            for step in steps:
                try:
                    await step()
                except (BrokerUnavailable, *REDIS_DOWN) as exc:
                    log.debug("job store keeper: %s", exc)
                except Exception:
                    log.exception("job store keeper step %s failed", step.__name__)

    async def _prune_index(self) -> None:
        await self.reaper.prune_index(self.context.finished_ttl_ms / 1000)

    async def reconcile(self) -> None:
        """After a reconnection: restore running jobs (heartbeat) and queued ones we submitted,
        then refresh every open handle."""
        try:
            await self.worker.heartbeat()
            for job_id, record in list(self.api.queued.items()):
                await self.api.restore_queued(job_id, record)
            await self.api.refresh_open()
        except (BrokerUnavailable, *REDIS_DOWN) as exc:
            log.warning("job store: reconciling after a reconnection failed: %s", exc)
