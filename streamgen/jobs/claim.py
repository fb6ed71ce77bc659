"""Taking jobs from the store: the worker's claim loop asks the `Scheduler` what it would
take now, waits for such a job in the store, and holds it (`ActiveJobs`), adopting its log
first with a shared store. The store hands out only the kinds of job the worker accepts
(a free slot, live or offline); whether a live stream also fits the worker's time
(`admits`) is known once it is taken: one that does not is announced as waiting (a
`queued` event with its estimated start) and goes back to the queue for a worker with room.
Only jobs of the models the worker serves are taken (`Accept.models`); a job's model is
loaded, if it is not resident, when the job is adopted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from segment_pipeline import GenerationCancelled

from ..background import woken
from ..broker.base import Broker, BrokerError
from ..errors import ServiceError
from ..events import QueuedPayload
from ..models import ModelSet
from .active import ActiveJob, ActiveJobs
from .load import LoadReporter, WorkerLoad, estimated_start
from .log import log_tail, publish
from .record import Job
from .runner import Runner, unexpected
from .scheduler import Scheduler
from .store import JobStore

log = logging.getLogger(__name__)

CLAIM_POLL_S = 1.0  # a waiting claim looks again this often (admission may have changed)
QUEUE_NOTICE_MOVE_S = 2.0  # a waiting stream hears again when its estimate moves this much


class Claimer:
    """Takes jobs from `store` into `jobs` (`loop`) until `stop`; `runner` ends the jobs
    that cannot start."""

    def __init__(
        self,
        broker: Broker,
        store: JobStore,
        models: ModelSet,
        jobs: ActiveJobs,
        scheduler: Scheduler,
        runner: Runner,
        reports: LoadReporter,
    ) -> None:
        self.broker = broker
        self.store = store
        self.models = models
        self.jobs = jobs
        self.scheduler = scheduler
        self.runner = runner
        self.reports = reports

    async def loop(self) -> None:
        backoff_s = CLAIM_POLL_S
        while not self.jobs.stopping:
            try:
                await self._claim_once()
                backoff_s = CLAIM_POLL_S
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away past its timeout: keep the worker taking jobs
                log.exception("taking a job failed; trying again in %g s", backoff_s)
                await asyncio.sleep(backoff_s)  # backoff, not a sync wait
                backoff_s = min(2 * backoff_s, 30.0)

    def stop(self) -> None:
        """Take no more jobs (a claim in flight finishes taking its job first: `loop` ends
        within about `CLAIM_POLL_S`)."""
        self.jobs.stopping = True
        self.store.stop_claiming()

    async def _claim_once(self) -> None:
        self.jobs.claim_wake.clear()  # what it accepts changes: a waiting claim looks again
        accept = self.scheduler.accepts(self.jobs, stopping=self.jobs.stopping)
        if not (accept.live or accept.offline):
            await woken(self.jobs.claim_wake, CLAIM_POLL_S)
            return
        accept = dataclasses.replace(accept, models=self.models.ids)
        job = await self.store.claim(accept, CLAIM_POLL_S, interrupt=self.jobs.claim_wake)
        if job is None:
            return
        fits = not job.spec.live or self.scheduler.admits(self.jobs, job.spec.request)
        if not fits and not self.jobs.stopping and not job.cancel.is_set():
            self.scheduler.refused()
            await self._announce_wait(job)
            # Cancelled meanwhile: not back to the queue; it ends here, at once.
            if not job.cancel.is_set() and await self.store.give_back(job):
                self.reports.report_soon()
                return
        await self._activate(job)

    async def _announce_wait(self, job: Job) -> None:
        """Publish a `queued` event for a live stream this worker has no room for (it holds
        the job's log for now), unless its estimated start barely moved."""
        now = time.time()
        ours = self.scheduler.load(self.jobs, stopping=self.jobs.stopping)
        loads = [load for load in await self._loads() if load.worker != ours.worker]
        start = estimated_start([*loads, ours], live=True, position=0, now=now)
        known = job.state.estimated_start_at
        if start is not None and known is not None and abs(start - known) < QUEUE_NOTICE_MOVE_S:
            return
        job.state.estimated_start_at = start
        wait_s = None if start is None else round(start - now, 3)
        try:
            if self.store.shared:
                job.state.next_seq, ended = await log_tail(self.broker, job.id, job.state.last_seq)
                if ended:
                    return
            await publish(self.broker, job, QueuedPayload(0, start, wait_s))
            self.broker.disown(job.id)  # whoever takes it next publishes (and restores) it
            await self.store.record(job)
        except BrokerError as exc:
            log.info("job %s: cannot announce its wait: %s", job.id, exc)

    async def _loads(self) -> list[WorkerLoad]:
        try:
            return await self.store.loads()
        except BrokerError:
            return []

    async def _activate(self, job: Job) -> None:
        buffer_s = self.scheduler.settings.startup_buffer_seconds
        active = self.jobs.add(job, self.broker, self.store, buffer_s)
        loop = asyncio.get_running_loop()
        try:
            if self.store.shared:
                pipeline = await asyncio.to_thread(self.models.pipeline, job.spec.model)
                await active.adopt(pipeline)
                if active.skip:
                    log.info("job %s: attempt %d resumes after segment %d", job.id,
                             job.state.attempt, active.skip - 1)  # fmt: skip
            active.open_file()
        except GenerationCancelled:
            self.runner.finish(active, *active.cancelled_outcome())
        except ServiceError as exc:
            self.runner.finish(active, "failed", exc)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self.runner.finish(active, "failed", unexpected(exc))
        else:
            active.on_cancel = lambda: self._cancelled_from_any_thread(loop, active)
            job.cancel.on_set(active.on_cancel)
        self.jobs.changed()
        self.reports.report_soon()

    def _cancelled_from_any_thread(
        self, loop: asyncio.AbstractEventLoop, active: ActiveJob
    ) -> None:
        loop.call_soon_threadsafe(self._on_cancel, active)

    def _on_cancel(self, active: ActiveJob) -> None:
        self.runner.finish(active, *active.cancelled_outcome())
