"""The composition root: the one place where the model, the broker, the job store, the job
manager and the worker are built and wired, for both `streamgen serve` and
`streamgen worker`.

    runtime = await open_runtime(settings, role="serve")   # or role="worker"
    ...
    await runtime.drain()    # stop taking jobs; running ones finish or end
    await runtime.close()    # then the broker

What is built, by role and broker:

    serve,  memory broker   MemoryJobStore, JobManager, embedded Worker
    serve,  Redis broker    RedisJobStore, JobManager, Worker unless embedded_worker is off
    worker, Redis broker    RedisJobStore, Worker (no manager: it accepts nothing)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from segment_pipeline import PipelineError, SegmentedGenerator, load_generator

from .broker import Broker, make_broker
from .config import ConfigError, Settings
from .errors import from_pipeline_error
from .jobs import JobManager, JobStore, MemoryJobStore, RedisJobStore, Worker
from .keys import KeyGate
from .models import ModelSet

log = logging.getLogger(__name__)

Role = Literal["serve", "worker"]


@dataclass
class Runtime:
    """What one process runs: built by `open_runtime`, ended by `drain` then `close`."""

    settings: Settings
    models: ModelSet  # the default model loaded, the others on first use
    broker: Broker
    store: JobStore
    manager: JobManager | None  # None in a `streamgen worker` process
    worker: Worker | None  # None on an API-only replica
    keys: KeyGate  # API keys and their usage (a worker gives back what its jobs did not use)
    _drained: bool = field(default=False, repr=False)

    @property
    def generator(self) -> SegmentedGenerator:
        """The default model's generator (a request without `model` runs on it)."""
        return self.models.default.generator

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop accepting jobs; running ones get `grace_s` seconds (default
        `graceful_timeout_seconds`) to finish, then end (memory store: an `error` event
        ``shutting_down``; Redis: back to the queue for another worker). Closes the store.
        Idempotent."""
        if self._drained:
            return
        self._drained = True
        grace_s = self.settings.graceful_timeout_seconds if grace_s is None else grace_s
        if self.worker is not None:  # first: no job goes back to the queue after the sweep
            await self.worker.stop_taking()
        if self.manager is not None:
            await self.manager.stop_accepting()
        if self.worker is not None:
            await self.worker.stop(grace_s)
        if self.manager is not None:
            await self.manager.finish_tasks(grace_s)
        await self.store.close()

    async def close(self) -> None:
        """`drain`, then close the broker (every subscription ends)."""
        try:
            await self.drain()
        finally:
            try:
                await self.keys.close()
            finally:
                await self.broker.close()


async def open_runtime(
    settings: Settings,
    *,
    role: Role,
    generator: SegmentedGenerator | None = None,
    worker_id: str | None = None,
) -> Runtime:
    """Load the default model (unless `generator` is given; the `models` load on first
    use), connect the broker and the store, and start the worker. `worker_id` names this
    process in Redis (default host:pid:random).

    Raises `ConfigError` for a combination that cannot run (a worker without Redis, an
    API-only replica without Redis), `ServiceUnavailable` when the model does not load,
    `BrokerUnavailable` when Redis cannot be reached.
    """
    check_role(settings, role)
    shared = settings.broker != "memory"
    runs_jobs = role == "worker" or settings.embedded_worker
    if generator is None:
        generator = await asyncio.to_thread(load_model, settings)
    models = ModelSet(settings, generator)
    broker = broker_for(settings)
    await broker.start()
    keys = KeyGate.for_settings(settings)
    try:
        store: JobStore
        if shared:
            prefix = settings.redis_key_prefix
            store = RedisJobStore(settings, broker, key_prefix=prefix, identity=worker_id)
        else:
            store = MemoryJobStore(settings, broker)
        manager = JobManager(settings, models, broker, store) if role == "serve" else None
        name = store.identity if isinstance(store, RedisJobStore) else "embedded"
        worker = Worker(settings, models, broker, store, name=name) if runs_jobs else None
        store.settled_hooks.append(keys.job_settled)
        await store.start()
        if role == "serve":
            await keys.announce()
    except BaseException:
        await keys.close()
        await broker.close()
        raise
    if worker is not None:
        await worker.calibrate()  # before taking jobs and answering: admission needs costs
    if manager is not None:
        manager.accepting = True
    if worker is not None:
        worker.start()
    return Runtime(settings, models, broker, store, manager, worker, keys)


def check_role(settings: Settings, role: Role) -> None:
    """`ConfigError` when `settings` cannot run `role`: a worker, or an API-only replica,
    without Redis (nobody else could run, or take, the jobs)."""
    if settings.broker != "memory":
        return
    if role == "worker":
        raise ConfigError(
            "a worker needs a Redis broker (--broker redis://host:6379/0 or "
            "STREAMGEN_BROKER): with the memory broker `streamgen serve` runs its own jobs"
        )
    if not settings.embedded_worker:
        raise ConfigError(
            "embedded_worker must be true with the memory broker: no other process "
            "can run this server's jobs (use a Redis broker for API-only replicas)"
        )


def load_model(settings: Settings) -> SegmentedGenerator:
    """The generator `settings` name (backend, model path, device, caps), on this thread."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    try:
        return load_generator(
            settings.backend,
            settings.model_path,
            limits=settings.limits,
            device=settings.device,
            offload=settings.offload,
        )
    except PipelineError as exc:
        raise from_pipeline_error(exc) from exc


def broker_for(settings: Settings) -> Broker:
    """The (unstarted) broker `settings` name, with their backlog limits and Redis prefix."""
    options: dict[str, Any] = {
        "backlog_ttl_s": settings.backlog_ttl_seconds,
        "max_backlog_bytes": settings.max_backlog_bytes,
    }
    if settings.broker != "memory":
        options["key_prefix"] = settings.redis_key_prefix
    return make_broker(settings.broker, **options)
