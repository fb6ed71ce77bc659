"""Many streams on one worker, with a real server and encoder: live streams side by side,
a stream joining an unbounded one, admission that queues a stream the worker cannot keep at
real time, cancelling one job of a batch, fair shares, the unbounded duration cap, and what
`/health` and the job object say of running streams."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from streamgen_client.sse import SSEParser

from tests.server import ServerThread
from tests.streamgen.stream_reading import b64, decode, job_state, poll, wait_finished

SMALL = {"prompt": "a red ball moving left", "size": "64x64", "num_steps": 2}


# The default scheduler settings, but a short cap on unbounded streams and no pause for a
# stream far ahead of its viewer (so an unbounded one keeps making segments).
SERVER_SETTINGS = {"max_unbounded_seconds": 30.0, "live_max_ahead_seconds": 600.0}


@dataclass
class Seen:
    """An SSE stream as its client saw it: (event, data, seconds since the request)."""

    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for event, data, _ in self.events if event == kind]

    def times(self, kind: str) -> list[float]:
        return [at for event, _, at in self.events if event == kind]

    @property
    def job_id(self) -> str:
        return str(self.events[0][1]["job_id"])

    def video(self) -> bytes:
        init = b64(self.of("start")[0], "init_segment")
        return init + b"".join(b64(d, "fragment") for d in self.of("segment"))


async def follow(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    seen: Seen,
    *,
    body: dict[str, Any] | None = None,
    origin: float,
) -> Seen:
    """Read an SSE response to its end into `seen` (times from `origin`)."""
    async with client.stream(method, url, json=body) as response:
        assert response.status_code == 200, await response.aread()
        parser = SSEParser()
        async for chunk in response.aiter_raw():
            for message in parser.feed(chunk):
                seen.events.append((message.event, json.loads(message.data),
                                    time.perf_counter() - origin))  # fmt: skip
    return seen


def test_two_live_streams_run_side_by_side_and_both_finish(server: ServerThread) -> None:
    async def scenario() -> tuple[Seen, Seen]:
        async with httpx.AsyncClient(timeout=120) as client:
            origin = time.perf_counter()
            a, b = Seen(), Seen()
            bodies = [{**SMALL, "num_frames": 60, "seed": seed} for seed in (1, 2)]
            await asyncio.gather(
                follow(client, "POST", f"{server.url}/generate-stream", a, body=bodies[0],
                       origin=origin),
                follow(client, "POST", f"{server.url}/generate-stream", b, body=bodies[1],
                       origin=origin),
            )  # fmt: skip
            return a, b

    a, b = asyncio.run(scenario())
    for seen in (a, b):
        assert seen.events[-1][0] == "complete" and seen.of("complete")[0]["total_frames"] == 60
        assert len(decode(seen.video())) == 60
    # Side by side, not one after the other: each got a segment before the other ended.
    assert a.times("segment")[0] < b.times("complete")[0]
    assert b.times("segment")[0] < a.times("complete")[0]
    # And batched: segments made in one forward pass report the same generate time.
    shared = {d["generate_seconds"] for d in a.of("segment")} & {
        d["generate_seconds"] for d in b.of("segment")
    }
    assert shared, "no segment of the two streams came from one batch"


def test_two_live_streams_on_a_fresh_server_both_start_at_once() -> None:
    # A fresh server (an autoscaler's new replica): its costs come from the calibration it
    # ran before answering, and two streams that arrive together start together.
    server = ServerThread().start()
    try:

        async def scenario() -> tuple[Seen, Seen, dict[str, Any]]:
            async with httpx.AsyncClient(timeout=120) as client:
                health = (await client.get(f"{server.url}/health")).json()
                origin = time.perf_counter()
                a, b = Seen(), Seen()
                url = f"{server.url}/generate-stream"
                await asyncio.gather(
                    *(follow(client, "POST", url, seen, body={**SMALL, "num_frames": 36,
                                                              "seed": seed}, origin=origin)
                      for seen, seed in ((a, 11), (b, 12)))
                )  # fmt: skip
                return a, b, health

        a, b, health = asyncio.run(scenario())
    finally:
        server.stop()
    (worker,) = health["workers"]
    assert worker["cost_model"]["source"] == "startup calibration"
    for seen in (a, b):
        assert seen.events[-1][0] == "complete" and not seen.of("queued")
        assert len(seen.times("segment")) >= 3
    # Each got its first segment before the other its third: not one after the other.
    assert a.times("segment")[0] < b.times("segment")[2]
    assert b.times("segment")[0] < a.times("segment")[2]


def test_a_stream_starts_while_an_unbounded_one_runs(server: ServerThread) -> None:
    async def scenario() -> tuple[Seen, Seen, dict[str, Any], dict[str, Any]]:
        async with httpx.AsyncClient(timeout=120) as client:
            origin = time.perf_counter()
            endless, joined = Seen(), Seen()
            body = {**SMALL, "unbounded": True, "seed": 3}
            task = asyncio.create_task(
                follow(
                    client,
                    "POST",
                    f"{server.url}/generate-stream",
                    endless,
                    body=body,
                    origin=origin,
                )
            )
            await poll(lambda: _later(len(endless.of("segment")) >= 3))

            async def reported() -> dict[str, Any] | None:  # load reports come periodically
                health = (await client.get(f"{server.url}/health")).json()
                streams = [s for w in health["workers"] for s in w["streams"]]
                rated = [s for s in streams if s["job_id"] == endless.job_id]
                return health if rated and rated[0]["realtime_factor"] else None

            health = await poll(reported)
            state = await job_state(client, server.url, endless.job_id)
            await follow(client, "POST", f"{server.url}/generate-stream", joined,
                         body={**SMALL, "num_frames": 28, "seed": 4}, origin=origin)  # fmt: skip
            assert not task.done(), "the unbounded stream ended"
            segments_before = len(endless.of("segment"))
            await poll(lambda: _later(len(endless.of("segment")) > segments_before))
            task.cancel()  # the client goes away: its request-scoped job is cancelled
            await asyncio.gather(task, return_exceptions=True)
            return endless, joined, health, state

    endless, joined, health, state = asyncio.run(scenario())
    assert joined.events[-1][0] == "complete"
    assert len(decode(joined.video())) == 28
    # The joiner's segments arrived while the unbounded stream kept making its own.
    start, end = joined.times("segment")[0], joined.times("complete")[0]
    assert any(start <= t <= end for t in endless.times("segment"))
    assert health["running_streams"] >= 1
    (worker,) = health["workers"]
    streams = {s["job_id"]: s for s in worker["streams"]}
    assert streams[endless.job_id]["live"] is True
    assert streams[endless.job_id]["realtime_factor"] > 0
    assert state["live"] is True and state["realtime_factor"] > 0


async def _later(value: bool) -> bool:
    return value


async def full_queue(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> httpx.Response:
    """The 429 of a job that finds the queue full. A waiting stream leaves the queue for a
    moment whenever the worker looks at it again; a job that got in then is cancelled."""

    async def refused() -> httpx.Response | None:
        response = await client.post(f"{base}/v1/jobs", json=body)
        if response.status_code != 429:
            await client.delete(f"{base}/v1/jobs/{response.json()['id']}")
            return None
        return response

    return await poll(refused)


HEAVY_SIZES = ("256x256", "512x512")  # the first at which the embedded model can be slow enough
HEAVY_WINDOWS = 4  # so the first stream is still running when the others are cancelled
MAX_STEPS = 50  # the embedded model's own cap


async def window_seconds(client: httpx.AsyncClient, base: str, size: str, steps: int) -> float:
    """Wall seconds one window of `size` at `steps` takes on this server (the least of two,
    so that a first run's warm-up does not count)."""
    times = []
    for seed in (21, 22):
        seen = await follow(client, "POST", f"{base}/generate-stream", Seen(), origin=0.0,
                            body={**SMALL, "size": size, "num_steps": steps, "num_frames": 12,
                                  "seed": seed})  # fmt: skip
        times.append(seen.of("segment")[0]["generate_seconds"])
    return min(times)


async def heavy_shape(client: httpx.AsyncClient, base: str, segment_seconds: float) -> dict:
    """A size and steps at which one stream needs 1.5x this worker's time to keep real time
    (so two need more than the worker, batched or not): a window's cost measured here at two step
    counts, fitted as a fixed part plus a part a step, whatever the machine's speed."""
    low, high = 2, 6
    for size in HEAVY_SIZES:
        at_low = await window_seconds(client, base, size, low)
        at_high = await window_seconds(client, base, size, high)
        per_step = max((at_high - at_low) / (high - low), 1e-6)
        fixed = max(at_low - per_step * low, 0.0)
        steps = max(low, math.ceil((1.5 * segment_seconds - fixed) / per_step))
        if steps <= MAX_STEPS:
            return {"size": size, "num_steps": steps}
    raise AssertionError(f"this machine makes even {size} at {MAX_STEPS} steps in real time")


def test_a_live_stream_that_does_not_fit_waits_in_the_queue_then_runs() -> None:
    heavy: dict[str, Any] = {
        **SMALL,
        "num_frames": 12 + 8 * (HEAVY_WINDOWS - 1),
    }
    # One such stream alone needs more than the whole worker (sized from what a window
    # measurably costs here), so a second one waits until the first ends, whatever
    # batching saves (two batched cost at least one alone).
    server = ServerThread({"max_queued_jobs": 2}).start()
    try:

        async def scenario() -> tuple[Seen, Seen, Seen, dict[str, Any], httpx.Response]:
            async with httpx.AsyncClient(timeout=180) as client:
                segment_seconds = (12 - 4) / 8.0  # the embedded model's new frames a window
                heavy.update(await heavy_shape(client, server.url, segment_seconds))
                origin = time.perf_counter()
                first, second, third = Seen(), Seen(), Seen()
                url = f"{server.url}/generate-stream"
                one = asyncio.create_task(
                    follow(client, "POST", url, first, body={**heavy, "seed": 1}, origin=origin)
                )
                await poll(lambda: _later(bool(first.of("progress"))), timeout_s=60)
                two = asyncio.create_task(
                    follow(client, "POST", url, second, body={**heavy, "seed": 2}, origin=origin)
                )
                await poll(lambda: _later(bool(second.of("queued"))), timeout_s=60)

                async def estimated() -> dict[str, Any] | None:
                    state = await job_state(client, server.url, second.job_id)
                    return state if state["estimated_start_at"] is not None else None

                # Once the worker has measured a window of this shape, it can tell when.
                waiting = await poll(estimated, timeout_s=60)
                three = asyncio.create_task(
                    follow(client, "POST", url, third, body={**heavy, "seed": 3}, origin=origin)
                )
                await poll(lambda: _later(bool(third.of("queued"))), timeout_s=60)
                refused = await full_queue(client, server.url, {**heavy, "seed": 4})
                # A waiting stream cancelled ends at once, not when a worker has room.
                await client.delete(f"{server.url}/v1/jobs/{third.job_id}")
                await asyncio.gather(one, two, three)
                return first, second, third, waiting, refused

        first, second, third, waiting, refused = asyncio.run(scenario())
    finally:
        server.stop()
    assert waiting["status"] == "queued" and waiting["live"] is True
    notices = second.of("queued")
    assert notices[-1]["estimated_wait_seconds"] > 0
    assert any(
        n["estimated_start_at"] == pytest.approx(waiting["estimated_start_at"]) for n in notices
    )
    # The last estimate before it started was right: within 20 % of the wait, plus one
    # window of the heavy shape (its first progress event comes a step into its first
    # window, and a waiting claim looks again only when a job ends or a window is done).
    first_progress = second.of("progress")[0]["time"]
    window_s = max(d["generate_seconds"] for d in first.of("segment"))
    notice = [n for n in notices if n["time"] < first_progress][-1]
    waited_s = first_progress - notice["time"]
    assert notice["estimated_start_at"] - notice["time"] == pytest.approx(
        waited_s, abs=0.2 * waited_s + window_s
    )
    assert third.events[-1][0] == "error" and third.of("error")[0]["code"] == "cancelled"
    assert third.times("error")[0] < first.times("complete")[0]
    assert not third.of("segment")
    # It started once the first ended, and then ran to the end.
    assert second.times("segment")[0] > first.times("complete")[0]
    assert second.events[-1][0] == "complete"
    assert len(decode(second.video())) == heavy["num_frames"]
    # The queue (two places) is full: 429 with when to come back.
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["Retry-After"]) >= 1


def test_cancelling_one_job_of_a_batch_leaves_the_others_as_they_would_be_alone(
    server: ServerThread,
) -> None:
    bodies = [{**SMALL, "num_frames": 140, "seed": seed} for seed in (5, 6, 7)]

    async def scenario() -> tuple[list[Seen], list[Seen]]:
        async with httpx.AsyncClient(timeout=120) as client:
            origin = time.perf_counter()
            jobs = [(await client.post(f"{server.url}/v1/jobs", json=b)).json() for b in bodies]
            seen = [Seen() for _ in jobs]
            tasks = [
                asyncio.create_task(
                    follow(
                        client, "GET", f"{server.url}/v1/jobs/{j['id']}/events", s, origin=origin
                    )
                )
                for j, s in zip(jobs, seen, strict=True)
            ]
            await poll(lambda: _later(all(len(s.of("segment")) >= 2 for s in seen)))
            assert (await client.delete(f"{server.url}/v1/jobs/{jobs[1]['id']}")).status_code in (
                200, 202,
            )  # fmt: skip
            await asyncio.gather(*tasks)
            alone = []
            for body in (bodies[0], bodies[2]):  # the survivors again, one at a time
                job = (await client.post(f"{server.url}/v1/jobs", json=body)).json()
                await wait_finished(client, server.url, job["id"])
                alone.append(
                    await follow(
                        client,
                        "GET",
                        f"{server.url}/v1/jobs/{job['id']}/events",
                        Seen(),
                        origin=origin,
                    )
                )
            return seen, alone

    seen, alone = asyncio.run(scenario())
    assert seen[1].events[-1][0] == "error" and seen[1].of("error")[0]["code"] == "cancelled"
    batched = {d["generate_seconds"] for d in seen[0].of("segment")} & {
        d["generate_seconds"] for d in seen[2].of("segment")
    }
    assert batched, "the jobs were not batched"
    for survivor, reference in zip((seen[0], seen[2]), alone, strict=True):
        assert survivor.events[-1][0] == "complete"
        frames = [f.to_ndarray(format="gray").astype(int) for f in decode(survivor.video())]
        again = [f.to_ndarray(format="gray").astype(int) for f in decode(reference.video())]
        assert len(frames) == len(again) == 140
        assert np.mean([np.abs(a - b).mean() for a, b in zip(frames, again, strict=True)]) <= 1


def test_unbounded_jobs_share_the_worker_and_stop_at_their_cap() -> None:
    server = ServerThread({"max_unbounded_seconds": 6.0}).start()
    try:

        async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[int]]:
            async with httpx.AsyncClient(timeout=120) as client:
                # Two shapes that cannot share a batch: they take turns.
                small = {**SMALL, "unbounded": True, "seed": 8}
                large = {**SMALL, "size": "128x128", "unbounded": True, "seed": 9}
                a = (await client.post(f"{server.url}/v1/jobs", json=small)).json()
                b = (await client.post(f"{server.url}/v1/jobs", json=large)).json()

                async def both_going() -> list[int] | None:
                    done = [(await job_state(client, server.url, j["id"]))["segments_done"]
                            for j in (a, b)]  # fmt: skip
                    return done if max(done) >= 3 else None

                progress = await poll(both_going, timeout_s=60)
                ends = [await wait_finished(client, server.url, j["id"]) for j in (a, b)]
                return ends[0], ends[1], progress

        small_end, large_end, progress = asyncio.run(scenario())
    finally:
        server.stop()
    assert min(progress) >= 1, f"one unbounded job starved the other: {progress}"
    for end in (small_end, large_end):
        assert end["status"] == "completed"
        seconds = end["frames_done"] / end["fps"]
        assert 6.0 <= seconds < 6.0 + 1.5  # stopped at the cap, within one segment
