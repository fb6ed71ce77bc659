"""A worker killed in the middle of a batch, with real processes on a private Redis: every
job of the batch ends as a lone job would (failed with `worker_lost`, or retried once by
another worker, its log without a gap or a doubled segment)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.scaleout.cluster import Cluster, small_job
from tests.scaleout.streams import Follower, check_log, submit, video_of
from tests.streamgen.stream_reading import decode, job_state, poll

pytestmark = pytest.mark.redis


def test_a_worker_killed_mid_batch_fails_or_hands_on_every_job_of_the_batch() -> None:
    with Cluster() as cluster:
        a = cluster.serve("a")  # jobs with one attempt
        b = cluster.serve("b", env={"STREAMGEN_WORKER_RETRY_FAILED_JOBS": "true"})
        w = cluster.worker("w", concurrency=4)
        cluster.wait_ready()

        async def main() -> None:
            async with httpx.AsyncClient(timeout=60) as client:
                # One shape, so the worker denoises their windows in one batch.
                endless = small_job(unbounded=True, seed=1)
                del endless["num_frames"]
                lost_id = await submit(client, a.url, endless)
                retried_id = await submit(client, b.url, small_job(num_frames=300, seed=2))
                lost = Follower(client, f"{a.url}/v1/jobs/{lost_id}/events")
                retried = Follower(client, f"{b.url}/v1/jobs/{retried_id}/events")

                def batched(_: object) -> bool:
                    times = {d["generate_seconds"] for k, d in lost.events if k == "segment"}
                    return any(
                        k == "segment" and d["generate_seconds"] in times for k, d in retried.events
                    )

                await retried.until(batched)  # a window of each came from one batch
                w.kill()

                events = await lost.finish(timeout_s=30)
                check_log(events)
                kind, last = events[-1]
                assert kind == "error" and last["code"] == "worker_lost", last

                async def requeued() -> bool:
                    return (await job_state(client, a.url, retried_id))["status"] == "queued"

                await poll(requeued, timeout_s=30)
                cluster.worker("w2", concurrency=4)
                cluster.wait_ready()
                events = await retried.finish()
                check_log(events)  # no gap, no segment twice, across the two attempts
                assert [k for k, _ in events].count("segment") == 37
                assert events[-1][0] == "complete" and events[-1][1]["total_frames"] == 300
                assert len(decode(video_of(events))) == 300

        asyncio.run(main())
