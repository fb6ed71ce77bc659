"""The worker: takes jobs from a `JobStore` and runs them side by side, segment by segment.

It holds a set of active jobs (at most `max_concurrent_jobs`). One device thread denoises
one batch at a time; at every segment boundary the scheduling policy (`schedule`) chooses
the next batch: live streams by deadline, offline jobs with what is left, windows of one
shape together in one forward pass. A batch is formed again after each one ends, so jobs
join and leave between segments. Each job's segments are encoded on its own encoder thread
while the next batch is denoised, and published by its own publisher (`active`): no job
and no subscriber waits for another.

`Worker` is the composition of three loops over one `ActiveJobs` and one `Scheduler`:

- `claim`: takes jobs from the store as far as the scheduler admits them (`Claimer`);
- `runner`: runs the batches the scheduler chooses, and ends jobs (`Runner`);
- the load reports, every `worker_heartbeat_seconds` and when jobs come and go
  (`load.LoadReporter`), which API replicas turn into estimated start times and `/health`
  shows.

The scheduler (`scheduler`, over `schedule`'s pure policy) decides what to take, what to
run next and what the load is; the loops only carry its decisions out.

The same class runs embedded in `streamgen serve` (memory or Redis store) and in
`streamgen worker` processes (Redis store).
"""

from __future__ import annotations

import asyncio
import logging

from ..background import TaskSet
from ..broker.base import Broker
from ..config import Settings
from ..models import ModelSet
from .active import HAND_BACK, ActiveJobs
from .claim import CLAIM_POLL_S, Claimer
from .load import LoadReporter, WorkerLoad
from .runner import Runner
from .scheduler import Scheduler
from .store import JobStore

log = logging.getLogger(__name__)


class Worker:
    """Runs jobs of the `models` it serves from `store`: `start()` on a loop,
    `await stop(grace_s)` to end."""

    def __init__(
        self,
        settings: Settings,
        models: ModelSet,
        broker: Broker,
        store: JobStore,
        *,
        name: str = "embedded",
    ) -> None:
        self.store = store
        self.name = name
        self.jobs = ActiveJobs()
        pipeline = models.default  # measured while idle; a job runs on its own model's
        self.scheduler = Scheduler(settings, pipeline.generator, name)
        self._tasks = TaskSet(log, "worker")
        self.reports = LoadReporter(
            self.load, store.report_load, self._tasks, settings.worker_heartbeat_seconds
        )
        self.runner = Runner(settings, pipeline, self.jobs, self.scheduler, self.reports,
                             self._tasks)  # fmt: skip
        self.claimer = Claimer(broker, store, models, self.jobs, self.scheduler, self.runner,
                               self.reports)  # fmt: skip
        self._loops: list[asyncio.Task[None]] = []

    @property
    def concurrency(self) -> int:
        """How many jobs it runs side by side (`max_concurrent_jobs`)."""
        return self.scheduler.concurrency

    def load(self) -> WorkerLoad:
        """This worker's load now (see `WorkerLoad`)."""
        return self.scheduler.load(self.jobs, stopping=self.jobs.stopping)

    async def calibrate(self) -> None:
        """Measure what batches cost here before taking jobs (`calibrate_at_start`), so
        admission holds from the first stream on."""
        await self.runner.calibrate()

    def start(self) -> None:
        """Start taking and running jobs (on the running loop)."""
        for name, loop in (("claim", self.claimer.loop), ("run", self.runner.loop),
                           ("report", self.reports.loop)):  # fmt: skip
            self._loops.append(asyncio.create_task(loop(), name=f"worker-{name}"))

    async def stop_taking(self) -> None:
        """Take no more jobs (a claim in flight finishes taking its job first)."""
        self.claimer.stop()
        if self._loops:
            await asyncio.wait([self._loops[0]], timeout=CLAIM_POLL_S + 5.0)

    async def stop(self, grace_s: float) -> None:
        """Take no more jobs; running ones get `grace_s` seconds to finish. Then, with a
        shared store, they go back to the queue (another worker takes them over and
        continues their logs); with the memory store they are cancelled with an `error`
        event (code ``shutting_down``)."""
        await self.stop_taking()
        running = [a.job for a in self.jobs]
        if running:
            await asyncio.wait(
                [asyncio.create_task(j.done.wait()) for j in running], timeout=grace_s
            )
        for job in running:
            if not job.state.finished:
                # Shared store: hand the job back to the queue (another worker continues its
                # log); in one process there is no other worker, so it ends.
                job.cancel_code = HAND_BACK if self.store.shared else "shutting_down"
                job.cancel_message = "the server is shutting down"
                job.cancel.set()
        if running:
            await asyncio.wait([asyncio.create_task(j.done.wait()) for j in running])
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._tasks.wait(grace_s)
        self.runner.close()
