"""The job-store contract, as tests every `JobStore` passes.

Use: subclass `JobStoreContract` as ``TestXxxJobStoreContract`` and implement
`open_stores()`, an async context manager that yields (api, worker): the store the API side
uses and the one a worker claims from (the same object for a one-process store), on jobs of
their own. Each scenario runs under a deadline, so a hang fails instead of blocking.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from streamgen.errors import JobNotFound
from streamgen.events import CompletePayload, StartPayload
from streamgen.jobs import Job, JobSpec, JobStore, KeyCharge, publish
from streamgen.jobs.store import Accept
from tests.streamgen.jobs.test_redis_store import REQUEST, START

SCENARIO_TIMEOUT_S = 20.0
Stores = tuple[JobStore, JobStore]


def new_job(priority: int = 0, **spec: object) -> Job:
    spec.setdefault("model", "m")
    return Job(JobSpec(id="job_" + secrets.token_hex(10), request=REQUEST, priority=priority,
                       request_scoped=False, **spec))  # type: ignore[arg-type]  # fmt: skip


class JobStoreContract:
    def open_stores(self) -> AbstractAsyncContextManager[Stores]:
        raise NotImplementedError

    def run(self, scenario: Callable[[JobStore, JobStore], Awaitable[None]]) -> None:
        async def main() -> None:
            async with self.open_stores() as (api, worker):
                await asyncio.wait_for(scenario(api, worker), SCENARIO_TIMEOUT_S)

        asyncio.run(main())

    @staticmethod
    async def queue(api: JobStore, job: Job, start: StartPayload = START) -> Job:
        await api.create(job)
        await publish(api.broker, job, start)  # type: ignore[attr-defined]
        await api.enqueue(job)
        return job

    def test_a_created_job_is_found_queued_with_its_spec(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            charge = KeyCharge("key_a", 2.5, 20_000, 9.0)
            job = await self.queue(api, new_job(4, remixed_from="job_x", charge=charge))
            found = await api.get(job.id)
            assert found.spec == job.spec and found.state.status == "queued"
            assert await api.counts() == (1, 0)
            with pytest.raises(JobNotFound):
                await api.get("job_" + "0" * 20)

        self.run(scenario)

    def test_claims_take_priority_order_fifo_within(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            priorities = [0, 5, 0, -3, 5, 100, 0, -100]
            queued = [await self.queue(api, new_job(p)) for p in priorities]
            taken = [await worker.claim(timeout_s=5) for _ in priorities]
            expected = sorted(queued, key=lambda job: -job.spec.priority)  # stable: FIFO
            assert [job.id for job in taken if job] == [job.id for job in expected]
            assert all(job and job.state.status == "running" for job in taken)
            assert all(job and job.state.attempt == 1 and job.state.started_at for job in taken)
            assert await api.counts() == (0, len(priorities))
            assert await worker.claim(timeout_s=0.05) is None, "a job taken twice"

        self.run(scenario)

    def test_a_claim_takes_only_the_kinds_it_accepts(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            offline = await self.queue(api, new_job(5))
            live = await self.queue(api, new_job(0, live=True))
            first = await worker.claim(Accept(live=True, offline=False), timeout_s=5)
            assert first is not None and first.id == live.id and first.spec.live
            assert await worker.claim(Accept(live=True, offline=False), timeout_s=0.05) is None
            second = await worker.claim(timeout_s=5)
            assert second is not None and second.id == offline.id

        self.run(scenario)

    def test_a_claim_takes_only_jobs_of_the_models_it_serves(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            other = await self.queue(api, new_job(5, model="other"))
            mine = await self.queue(api, new_job(0, model="mine"))
            serves = Accept(models=frozenset({"mine", "third"}))
            first = await worker.claim(serves, timeout_s=5)
            assert first is not None and first.id == mine.id and first.spec.model == "mine"
            assert await worker.claim(serves, timeout_s=0.05) is None, "another model's job"
            assert (await api.get(other.id)).state.status == "queued"
            second = await worker.claim(Accept(models=frozenset({"other"})), timeout_s=5)
            assert second is not None and second.id == other.id

        self.run(scenario)

    def test_recorded_and_finished_state_is_what_the_api_sees(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            job = await self.queue(api, new_job())
            taken = await worker.claim(timeout_s=5)
            assert taken is not None
            taken.state.segments_done, taken.state.frames_done = 1, 12
            assert await worker.record(taken)
            assert (await api.get(job.id)).state.frames_done == 12
            taken.state.status, taken.state.finished_at = "completed", 123.0
            terminal = CompletePayload(total_segments=1, total_frames=12, duration=1.5)
            assert await worker.finish(taken, terminal)
            await publish(worker.broker, taken, terminal)  # type: ignore[attr-defined]
            await worker.settle(taken)
            seen = await api.get(job.id)
            assert seen.state.status == "completed" and seen.state.finished_at == 123.0
            assert seen.state.segments_done == 1 and taken.done.is_set()
            assert await api.counts() == (0, 0)

        self.run(scenario)

    def test_cancel_ends_a_queued_job_and_not_a_finished_one(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            job = await self.queue(api, new_job())
            assert await api.cancel(job, "cancelled", "asked to") == "queued"
            assert job.state.status == "cancelled" and job.state.error is not None
            assert job.state.error.code == "cancelled" and job.state.finished_at
            await api.settle(job)
            assert await worker.claim(timeout_s=0.05) is None, "a cancelled job was taken"
            assert await api.cancel(job, "cancelled", "again") == "finished"

        self.run(scenario)

    def test_cancel_asks_a_running_jobs_worker_to_stop(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            job = await self.queue(api, new_job())
            taken = await worker.claim(timeout_s=5)
            assert taken is not None
            assert await api.cancel(await api.get(job.id), "shutting_down", "bye") == "running"
            while not taken.cancel.is_set():  # the control message reaches the worker
                await asyncio.sleep(0.01)  # polling under the scenario's deadline
            assert taken.cancel_code == "shutting_down"

        self.run(scenario)

    def test_a_stopping_worker_gives_its_job_back_uncounted(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            job = await self.queue(api, new_job())
            taken = await worker.claim(timeout_s=5)
            assert taken is not None and taken.state.attempt == 1
            assert await worker.give_back(taken)
            assert (await api.get(job.id)).state.status == "queued"
            again = await worker.claim(timeout_s=5)
            assert again is not None and again.id == job.id
            assert again.state.attempt == 1, "a hand-back must not use up the job's attempts"

        self.run(scenario)

    def test_stop_claiming_ends_a_waiting_claim(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            waiting = asyncio.ensure_future(worker.claim())
            await asyncio.sleep(0)  # let it start waiting
            worker.stop_claiming()
            assert await waiting is None
            await self.queue(api, new_job())
            assert await worker.claim(timeout_s=0.05) is None

        self.run(scenario)

    def test_a_deleted_job_is_gone(self) -> None:
        async def scenario(api: JobStore, worker: JobStore) -> None:
            job = await self.queue(api, new_job(listed=True))
            await api.cancel(job, "cancelled", "to delete it")
            await api.settle(job)
            await api.delete(job)
            with pytest.raises(JobNotFound):
                await api.get(job.id)
            assert (await api.page(None, 10, newest_first=True)).jobs == []

        self.run(scenario)
