"""Process faults, with real processes on a private Redis: a worker killed mid-job (its job
fails with `worker_lost`, or is retried once by another worker without a doubled segment),
a replica killed mid-stream (its client resumes on another with `Last-Event-ID`), and a
worker stopped gracefully (its job goes back to the queue and the next worker continues it).

Replica A records jobs with one attempt, replica B with two (`worker_retry_failed_jobs`
is the submitting replica's setting, kept in the job). The tests run in order: the first
kills worker W and starts W2, the second kills replica A, the third stops W2 (SIGTERM) and
starts W3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.scaleout.cluster import Cluster, Replica, small_job
from tests.scaleout.streams import Follower, check_log, submit, video_of
from tests.streamgen.stream_reading import decode, job_state, poll, read_sse

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as cluster:
        cluster.serve("a")
        cluster.serve("b", env={"STREAMGEN_WORKER_RETRY_FAILED_JOBS": "true"})
        cluster.worker("w", concurrency=2)
        cluster.wait_ready()
        yield cluster


def replicas(cluster: Cluster) -> tuple[Replica, Replica]:
    a, b = (p for p in cluster.processes if isinstance(p, Replica))
    return a, b


def test_a_killed_worker_fails_its_job_or_hands_it_to_another(cluster: Cluster) -> None:
    a, b = replicas(cluster)
    (w,) = (p for p in cluster.processes if p.name == "w")

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            unbounded = small_job(unbounded=True, num_steps=1)
            del unbounded["num_frames"]
            lost_id = await submit(client, a.url, unbounded)  # one attempt
            retried_id = await submit(client, b.url, small_job(num_frames=60))  # 7 segments
            lost = Follower(client, f"{a.url}/v1/jobs/{lost_id}/events")
            retried = Follower(client, f"{b.url}/v1/jobs/{retried_id}/events")
            await lost.segments(1)
            await retried.segments(2)
            for job_id in (lost_id, retried_id):
                state = await job_state(client, b.url, job_id)
                assert state["status"] == "running"
            w.kill()

            events = await lost.finish(timeout_s=30)
            check_log(events)
            kind, last = events[-1]
            assert kind == "error" and last["code"] == "worker_lost", last
            state = await job_state(client, b.url, lost_id)
            assert state["status"] == "failed" and state["error"]["code"] == "worker_lost"

            async def requeued() -> bool:
                return (await job_state(client, a.url, retried_id))["status"] == "queued"

            await poll(requeued, timeout_s=30)
            cluster.worker("w2")
            cluster.wait_ready()
            events = await retried.finish()
            check_log(events)  # no gap, no segment twice, across the two attempts
            assert [k for k, _ in events].count("segment") == 7
            assert events[-1][0] == "complete" and events[-1][1]["total_frames"] == 60
            assert len(decode(video_of(events))) == 60
            late = await read_sse(client, "GET", f"{a.url}/v1/jobs/{retried_id}/events")
            assert late.events == events
            done = await job_state(client, a.url, retried_id)
            assert done["status"] == "completed" and done["segments_done"] == 7

    asyncio.run(main())


def test_a_killed_replicas_client_resumes_on_another(cluster: Cluster) -> None:
    a, b = replicas(cluster)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            # A request-scoped job: A holds its lease while its client is connected.
            first = Follower(
                client, f"{a.url}/generate-stream", method="POST",
                json_body=small_job(num_frames=76, seed=5),  # 9 segments
            )  # fmt: skip
            await first.segments(2)
            a.kill()
            with pytest.raises(httpx.HTTPError):
                await first.finish()  # the connection broke mid-stream
            before = list(first.events)
            job_id = before[0][1]["job_id"]
            last_seen = before[-1][1]["seq"]
            resumed = Follower(
                client,
                f"{b.url}/v1/jobs/{job_id}/events",
                headers={"Last-Event-ID": str(last_seen)},
            )
            after = await resumed.finish()
            events = before + after
            check_log(events)
            assert [k for k, _ in events].count("segment") == 9
            assert events[-1][0] == "complete"
            reference = await read_sse(client, "GET", f"{b.url}/v1/jobs/{job_id}/events")
            start_fields = ("codec", "init_segment_base64", "width", "height", "seed")
            assert [d["seq"] for _, d in reference.events] == [d["seq"] for _, d in events]
            assert {k: reference.events[0][1][k] for k in start_fields} == {
                k: events[0][1][k] for k in start_fields
            }
            # Same bytes as a subscriber of B from the start (segments: self-contained form
            # on /generate-stream, both forms on /v1/jobs events).
            assert video_of(reference.events) == video_of(events)

    asyncio.run(main())


def test_a_stopping_worker_hands_its_job_to_the_next(cluster: Cluster) -> None:
    _, b = replicas(cluster)
    (w2,) = (p for p in cluster.processes if p.name == "w2")

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            unbounded = small_job(unbounded=True, num_steps=1, seed=9)
            del unbounded["num_frames"]
            job_id = await submit(client, b.url, unbounded)  # a hand-back uses no attempt
            events = Follower(client, f"{b.url}/v1/jobs/{job_id}/events")
            await events.segments(2)
            # SIGTERM: no new jobs, `graceful_timeout_seconds` (5 s here), then hand-back.
            await asyncio.to_thread(w2.stop)
            state = await job_state(client, b.url, job_id)
            assert state["status"] == "queued", state  # not failed, not cancelled
            handed = sum(k == "segment" for k, _ in events.events)
            cluster.worker("w3")
            cluster.wait_ready()
            await events.segments(handed + 2)  # w3 continues the log
            assert (await client.delete(f"{b.url}/v1/jobs/{job_id}")).status_code == 200
            log = await events.finish()
            check_log(log)  # nothing lost, nothing doubled across the hand-over
            assert log[-1][0] == "error" and log[-1][1]["code"] == "cancelled"
            frames = sum(d["num_frames"] for k, d in log if k == "segment")
            assert len(decode(video_of(log))) == frames

    asyncio.run(main())
