"""Scale-out fan-out: what a second replica adds to delivery, and what Redis carries.

Starts a private `redis-server`, replica A (`streamgen serve` with its embedded worker: the
worker-local replica) and replica B (API-only), all on one Redis, and prints in one run:

1. Per-event delivery lag (client receipt - the event's publish `time`, set by the worker
   in A's process) for one SSE subscriber on A and one on B of the same jobs: p50/p99 for
   segment and progress events, and B - A (target: extra p50 < 5 ms).
2. Redis output bytes per segment against the number of connected SSE clients (split
   between A and B, all connected before the job starts): bytes Redis sent during the job
   (`INFO stats` total_net_output_bytes) / segments, and / the job's published bytes
   (its packed events, read back from the backlog). Target: replicas x segment size,
   independent of the client count.

    python bench/fanout.py [--jobs 6] [--clients 2,20,100,200] [--size 64x64] [--steps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sse_subscriber import Subscriber

from tests.scaleout.cluster import Cluster, Replica

# Deployment defaults (not the tests' fast fault timings), one torch thread per process.
ENV = {
    "STREAMGEN_WORKER_HEARTBEAT_SECONDS": "2",
    "STREAMGEN_WORKER_DEAD_AFTER_SECONDS": "10",
    "STREAMGEN_ENCODER_PRESET": "veryfast",
    "STREAMGEN_MAX_QUEUED_JOBS": "16",
}


async def follow(replicas: list[Replica], job_id: str, count: int) -> list[Subscriber]:
    """`count` subscribers of `job_id`, alternating between `replicas`, all started."""
    loop = asyncio.get_running_loop()
    path = f"/v1/jobs/{job_id}/events?payload=fragment"
    subscribers = [Subscriber(path) for _ in range(count)]
    for first in range(0, count, 50):  # connect in waves: the listen backlog is finite
        await asyncio.gather(*(
            loop.create_connection(_factory(s), "127.0.0.1", replicas[i % len(replicas)].port)
            for i, s in enumerate(subscribers[first : first + 50], start=first)
        ))  # fmt: skip
    await asyncio.wait_for(asyncio.gather(*(s.started.wait() for s in subscribers)), 120)
    return subscribers


def _factory(subscriber: Subscriber) -> Callable[[], Subscriber]:
    return lambda: subscriber


async def hold_queue(client: httpx.AsyncClient, base: str) -> str:
    """An unbounded job that keeps the one worker busy until it is cancelled."""
    hold = {"prompt": "hold", "size": "64x64", "unbounded": True, "num_steps": 1}
    response = await client.post(f"{base}/v1/jobs", json=hold)
    response.raise_for_status()
    job_id = str(response.json()["id"])
    while (await client.get(f"{base}/v1/jobs/{job_id}")).json()["status"] != "running":
        await asyncio.sleep(0.05)  # polling the job's state
    return job_id


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def lag_runs(
    a: Replica, b: Replica, request: dict[str, Any], jobs: int
) -> dict[tuple[str, str], list[float]]:
    lags: dict[tuple[str, str], list[float]] = {}
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(jobs):
            blocker = await hold_queue(client, a.url)
            job = (await client.post(f"{a.url}/v1/jobs", json=request)).json()
            on_a, on_b = await follow([a], job["id"], 1), await follow([b], job["id"], 1)
            await client.delete(f"{a.url}/v1/jobs/{blocker}")
            await asyncio.wait_for(asyncio.gather(on_a[0].ended.wait(), on_b[0].ended.wait()),
                                   600)  # fmt: skip
            for name, subs in (("A", on_a), ("B", on_b)):
                for kind, lag in subs[0].lags:
                    lags.setdefault((name, kind), []).append(lag * 1000)
    return lags


async def bytes_run(
    cluster: Cluster, a: Replica, b: Replica, request: dict[str, Any], clients: int
) -> dict[str, Any]:
    redis = cluster.client()
    async with httpx.AsyncClient(timeout=120) as client:
        blocker = await hold_queue(client, a.url)
        job = (await client.post(f"{a.url}/v1/jobs", json=request)).json()
        subscribers = await follow([a, b], job["id"], clients)
        before = redis.info("stats")
        await client.delete(f"{a.url}/v1/jobs/{blocker}")
        await asyncio.wait_for(asyncio.gather(*(s.ended.wait() for s in subscribers)), 600)
        after = redis.info("stats")
    log = redis.lrange(f"streamgen:{{{job['id']}}}:log", 0, -1)
    redis.close()
    segments = sum(1 for s in subscribers[:1] for kind, _ in s.lags if kind == "segment")
    published = sum(len(item) for item in log[1:])  # the job's events after `start`
    out = after["total_net_output_bytes"] - before["total_net_output_bytes"]
    return {"clients": clients, "segments": segments, "published": published, "out": out,
            "lag_p99": percentile([lag * 1000 for s in subscribers for k, lag in s.lags
                                   if k == "segment"], 0.99)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=6, help="jobs for the lag measurement")
    parser.add_argument("--clients", default="2,20,100,200", help="client counts (bytes)")
    parser.add_argument("--size", default="64x64", help="WxH")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per segment")
    parser.add_argument("--frames", type=int, default=44, help="frames a job (44: 5 segments)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    request = {"prompt": "a red ball moving right", "size": args.size, "num_steps": args.steps,
               "num_frames": args.frames, "seed": 3}  # fmt: skip

    with Cluster(ENV) as cluster:
        a = cluster.serve("a", embedded_worker=True)
        b = cluster.serve("b")
        cluster.wait_ready()
        lags = asyncio.run(lag_runs(a, b, request, args.jobs))
        runs = [asyncio.run(bytes_run(cluster, a, b, request, int(n)))
                for n in args.clients.split(",")]  # fmt: skip

    print(f"# bench/fanout.py on {platform.node()}, {platform.processor() or platform.machine()}"
          f", {args.size}, {args.steps} steps, {args.frames} frames a job")  # fmt: skip
    print("\n## Delivery lag (ms): A = the worker-local replica, B = another replica")
    print("| events | A p50 | A p99 | B p50 | B p99 | B - A p50 | samples each |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("segment", "progress"):
        on_a, on_b = lags.get(("A", kind), []), lags.get(("B", kind), [])
        p50a, p50b = percentile(on_a, 0.5), percentile(on_b, 0.5)
        print(f"| {kind} | {p50a:.1f} | {percentile(on_a, 0.99):.1f} | {p50b:.1f} | "
              f"{percentile(on_b, 0.99):.1f} | {p50b - p50a:+.1f} | {len(on_a)} |")  # fmt: skip
    print("\n## Redis output bytes against connected clients (half on A, half on B)")
    print(
        "| clients | segments | Redis out bytes / segment | out / published bytes "
        "| segment lag p99 (ms) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for run in runs:
        per_segment = run["out"] / max(1, run["segments"])
        copies = run["out"] / max(1, run["published"])
        print(f"| {run['clients']} | {run['segments']} | {per_segment:,.0f} | {copies:.2f} | "
              f"{run['lag_p99']:.0f} |")  # fmt: skip
    published = runs[0]["published"] / max(1, runs[0]["segments"])
    print(
        f"\nPublished bytes per segment (all of a job's events after `start` / segments): "
        f"{published:,.0f}; 2 replicas subscribed, so the target is ~{2 * published:,.0f}."
    )


if __name__ == "__main__":
    main()
