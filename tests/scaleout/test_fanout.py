"""Two API replicas (A, B) and one worker (W) as separate processes on a private Redis: a job
accepted by A streams identically on A and B, late joiners on B get everything, B answers
for and cancels A's jobs, request-scoped leases count across replicas, and a Redis that
restarts empty mid-job loses nothing and doubles nothing.

The processes are shared by the module's tests (none of them is killed here; Redis is,
last). Process faults are in test_faults.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.scaleout.cluster import Cluster, Replica, small_job
from tests.scaleout.streams import Follower, check_log, submit, video_of
from tests.streamgen.stream_reading import (
    decode,
    job_state,
    poll,
    read_sse,
    read_ws,
    wait_finished,
)

pytestmark = pytest.mark.redis

UNBOUNDED = small_job(unbounded=True, num_steps=1)
UNBOUNDED.pop("num_frames")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as cluster:
        cluster.serve("a")
        cluster.serve("b")
        cluster.worker("w")
        cluster.wait_ready()
        yield cluster


def replicas(cluster: Cluster) -> tuple[Replica, Replica]:
    a, b = (p for p in cluster.processes if isinstance(p, Replica))
    return a, b


def test_a_job_from_a_streams_byte_identical_on_a_and_b(cluster: Cluster) -> None:
    a, b = replicas(cluster)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            job_id = await submit(client, a.url, small_job(num_frames=44))  # 5 segments
            on_a = Follower(client, f"{a.url}/v1/jobs/{job_id}/events")
            on_b = Follower(client, f"{b.url}/v1/jobs/{job_id}/events")
            live_mp4 = asyncio.create_task(client.get(f"{b.url}/v1/jobs/{job_id}/video.mp4"))
            on_b_ws = asyncio.create_task(read_ws(b.url, {"subscribe": job_id}))
            await on_a.segments(1)
            late = Follower(client, f"{b.url}/v1/jobs/{job_id}/events")  # joins mid-job
            events_a, events_b, events_late = (
                await on_a.finish(),
                await on_b.finish(),
                await late.finish(),
            )
            check_log(events_a)
            assert [k for k, _ in events_a].count("segment") == 5
            assert events_b == events_a, "B's subscriber saw other bytes than A's"
            assert events_late == events_a, "the late joiner on B missed or changed events"
            assert events_a[-1][0] == "complete"

            ws = await on_b_ws
            assert ws.close_code == 1000
            assert [m["seq"] for m in ws.messages] == [d["seq"] for _, d in events_a]
            fragments = [m["data"]["fragment"] for m in ws.messages if m["type"] == "segment"]
            video = video_of(events_a)
            start = ws.messages[0]["data"]["init_segment"]
            assert start + b"".join(fragments) == video, "WebSocket bytes on B differ"
            assert (await live_mp4).content == video, "live video.mp4 on B differs"
            finished = await client.get(f"{b.url}/v1/jobs/{job_id}/video.mp4")
            assert finished.status_code == 200 and finished.content == video
            ranged = await client.get(
                f"{a.url}/v1/videos/{job_id}/content", headers={"Range": "bytes=0-99"}
            )
            assert ranged.status_code == 206 and ranged.content == video[:100]
            assert len(decode(video)) == 44

            state = await job_state(client, b.url, job_id)
            assert state["status"] == "completed"
            assert state["segments_done"] == 5 and state["frames_done"] == 44
            assert state["last_seq"] == events_a[-1][1]["seq"]
            assert state["started_at"] is not None and state["finished_at"] is not None

    asyncio.run(main())


def test_cancel_on_b_stops_the_worker_running_a_job_from_a(cluster: Cluster) -> None:
    a, b = replicas(cluster)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            job_id = await submit(client, a.url, UNBOUNDED)
            on_a = Follower(client, f"{a.url}/v1/jobs/{job_id}/events")
            await on_a.segments(1)
            assert (await job_state(client, b.url, job_id))["status"] == "running"
            asked = time.time()
            response = await client.delete(f"{b.url}/v1/jobs/{job_id}")
            assert response.status_code == 200, response.text  # stopped, not still stopping
            assert response.json()["status"] == "cancelled"
            events = await on_a.finish()
            check_log(events)
            kind, last = events[-1]
            assert kind == "error" and last["code"] == "cancelled"
            # Generation stops within a denoising step of the cancel reaching the worker; a
            # few events were already on their way (each segment here is one step, and up
            # to two generated segments may still be waiting for the encoder).
            after = [k for k, d in events if k in ("progress", "segment") and d["time"] > asked]
            assert len(after) <= 6, f"the worker went on after the cancel: {after}"
            assert (await client.delete(f"{a.url}/v1/jobs/{job_id}")).status_code == 409

            # The worker is free again: the next job runs and completes.
            next_id = await submit(client, b.url, small_job())
            assert (await wait_finished(client, a.url, next_id))["status"] == "completed"

    asyncio.run(main())


def test_videos_are_listed_and_deleted_on_any_replica(cluster: Cluster) -> None:
    a, b = replicas(cluster)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:

            async def video(seconds: str) -> str:
                body = {"prompt": "a red ball", "seconds": seconds, "size": "64x64"}
                response = await client.post(f"{a.url}/v1/videos", json=body)
                assert response.status_code == 200, response.text
                return str(response.json()["id"])

            done_id = await video("1")
            assert (await wait_finished(client, a.url, done_id))["status"] == "completed"
            running_id = await video("120")
            await Follower(client, f"{a.url}/v1/jobs/{running_id}/events").segments(1)
            not_listed = await submit(client, a.url, small_job())  # a /v1/jobs job
            page = (await client.get(f"{b.url}/v1/videos", params={"limit": 2})).json()
            assert [v["id"] for v in page["data"]] == [running_id, done_id]  # newest first
            assert not_listed not in {v["id"] for v in page["data"]}
            assert (await client.get(f"{b.url}/v1/videos/{done_id}/content")).status_code == 200
            for job_id in (running_id, done_id):  # the running one is stopped, then deleted
                deleted = await client.delete(f"{b.url}/v1/videos/{job_id}")
                assert deleted.status_code == 200 and deleted.json()["deleted"], deleted.text
                for replica in (a, b):
                    gone = await client.get(f"{replica.url}/v1/videos/{job_id}")
                    assert gone.status_code == 404
                    events = await client.get(f"{replica.url}/v1/jobs/{job_id}/events")
                    assert events.status_code == 404
            listed = (await client.get(f"{a.url}/v1/videos", params={"limit": 100})).json()
            assert not {running_id, done_id} & {v["id"] for v in listed["data"]}

    asyncio.run(main())


def test_generate_on_an_api_only_replica_answers_with_the_whole_video(cluster: Cluster) -> None:
    _, b = replicas(cluster)
    response = httpx.post(f"{b.url}/generate", json=small_job(seed=21), timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert len(decode(response.content)) == 28
    job_id = response.headers["X-Job-Id"]
    again = httpx.get(f"{b.url}/v1/jobs/{job_id}/video.mp4", timeout=60)
    assert again.content == response.content  # rebuilt once from the backlog, then kept


def test_request_scoped_job_lives_while_any_replica_holds_a_subscriber(cluster: Cluster) -> None:
    a, b = replicas(cluster)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            job_ids: list[str] = []

            def first_segment(kind: str, data: dict[str, object]) -> bool:
                if kind == "start":
                    job_ids.append(str(data["job_id"]))
                return kind == "segment"  # then the client goes away

            creator = Follower(
                client, f"{a.url}/generate-stream", method="POST", json_body=UNBOUNDED,
                stop=first_segment,
            )  # fmt: skip
            await creator.until(lambda ev: bool(job_ids))
            job_id = job_ids[0]
            on_b = Follower(client, f"{b.url}/v1/jobs/{job_id}/events")
            await on_b.segments(1)
            await creator.finish()  # A's client disconnected after its first segment
            seen = sum(k == "segment" for k, _ in on_b.events)
            await on_b.segments(seen + 2)  # B's subscriber holds the job: it goes on
            assert (await job_state(client, a.url, job_id))["status"] == "running"
            on_b.task.cancel()  # now the last subscriber (anywhere) goes

            async def cancelled() -> bool:
                state = await job_state(client, a.url, job_id)
                return state["status"] == "cancelled"

            await poll(cancelled, timeout_s=30)
            state = await job_state(client, b.url, job_id)
            assert state["error"]["code"] == "cancelled"

    asyncio.run(main())


def test_redis_restarting_empty_mid_job_loses_and_doubles_nothing(cluster: Cluster) -> None:
    a, b = replicas(cluster)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            job_id = await submit(client, a.url, small_job(num_frames=76, seed=3))  # 9 segments
            on_a = Follower(client, f"{a.url}/v1/jobs/{job_id}/events")
            on_b = Follower(client, f"{b.url}/v1/jobs/{job_id}/events")
            await on_b.segments(2)
            cluster.redis.restart_empty()  # SIGKILL, then a new empty server on the port
            events_a, events_b = await on_a.finish(), await on_b.finish()
            check_log(events_a)
            assert [k for k, _ in events_a].count("segment") == 9
            assert events_a[-1][0] == "complete"
            assert events_b == events_a

            # Backlog and state were restored: a late joiner gets everything, from `start`.
            late = await read_sse(client, "GET", f"{b.url}/v1/jobs/{job_id}/events")
            assert late.events == events_a
            state = await wait_finished(client, b.url, job_id)
            assert state["status"] == "completed" and state["segments_done"] == 9
            video = await client.get(f"{a.url}/v1/jobs/{job_id}/video.mp4")
            assert video.content == video_of(events_a)

            # And the cluster still takes jobs.
            next_id = await submit(client, b.url, small_job())
            assert (await wait_finished(client, a.url, next_id))["status"] == "completed"

    asyncio.run(main())
