"""What does streaming cost, and how far does one process fan out?

Starts `streamgen serve` as a subprocess and, in this process, the same model bare; then
prints side by side (medians over --repeats, bare and streamed runs alternating):

- time to the first segment at an SSE client of `POST /generate-stream` / the bare
  generator's first-segment time;
- the streamed job's wall time (request to `complete` at the client) / the bare
  generator's wall time (target <= 1.03);
- SSE fan-out of one job to N subscribers (one asyncio client process, N connections to
  `GET /v1/jobs/{id}/events`): delivery lag (client receipt - the event's server
  publish `time`) p50/p99 for progress and segment events, and server RSS
  (target: p99 < 100 ms at 1,000).

    python bench/stream.py [--repeats 3] [--fanout 100,500,1000] [--seconds 4] [--steps 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from server_process import free_port, start_server
from sse_subscriber import Subscriber
from streamgen_client.sse import SSEParser

from segment_pipeline import GenerationRequest, SegmentPipeline, load_generator


# The server ----------------------------------------------------------------------------------
def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of `pid` in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# 1. First segment and wall: bare generator vs streamed -----------------------------------------
def bare_run(generator: Any, request: dict[str, Any]) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    for segment in generator.segments(GenerationRequest(**request)):
        if segment.index == 0:
            first = time.perf_counter() - started
    return first, time.perf_counter() - started


def pipeline_run(pipeline: SegmentPipeline, request: dict[str, Any]) -> tuple[float, float]:
    """Generator + side-thread encoder in this process, no server (what streaming adds to)."""
    started = time.perf_counter()
    first: list[float] = []
    job = pipeline.open(GenerationRequest(**request))
    job.run(lambda _: first or first.append(time.perf_counter() - started))
    return first[0], time.perf_counter() - started


def streamed_run(base: str, request: dict[str, Any]) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    body = {**request, "size": f"{request['width']}x{request['height']}"}
    del body["width"], body["height"]
    with httpx.stream("POST", f"{base}/generate-stream", json=body, timeout=600) as response:
        parser = SSEParser()
        for chunk in response.iter_raw():
            for message in parser.feed(chunk):
                if message.event == "segment" and not first:
                    first = time.perf_counter() - started
                if message.event in ("complete", "error"):
                    assert message.event == "complete", message.data
                    return first, time.perf_counter() - started
    raise RuntimeError("the stream ended without complete")


# 2. Fan-out -------------------------------------------------------------------------------------
async def fanout(
    base: str, port: int, pid: int, count: int, request: dict[str, Any], payload: str = "both"
) -> dict:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        hold = {"prompt": "hold", "size": "64x64", "unbounded": True, "num_steps": 1}
        blocker = (await client.post("/v1/jobs", json=hold)).json()
        job = (await client.post("/v1/jobs", json=request)).json()
        loop = asyncio.get_running_loop()
        path = f"/v1/jobs/{job['id']}/events?payload={payload}"
        subscribers = [Subscriber(path) for _ in range(count)]
        for start in range(0, count, 100):  # connect in waves: the listen backlog is finite
            await asyncio.gather(*(
                loop.create_connection(lambda s=s: s, "127.0.0.1", port)
                for s in subscribers[start : start + 100]
            ))  # fmt: skip
        await asyncio.wait_for(asyncio.gather(*(s.started.wait() for s in subscribers)), 120)
        rss_before, _ = rss_mib(pid)
        server_cpu, client_cpu = cpu_seconds(pid), cpu_seconds(os.getpid())
        await client.delete(f"/v1/jobs/{blocker['id']}")
        peak = rss_before
        waiting = asyncio.ensure_future(asyncio.gather(*(s.ended.wait() for s in subscribers)))
        while not waiting.done():
            peak = max(peak, rss_mib(pid)[0])
            await asyncio.wait({waiting}, timeout=0.05)
        server_cpu = cpu_seconds(pid) - server_cpu
        client_cpu = cpu_seconds(os.getpid()) - client_cpu
    by_kind: dict[str, list[float]] = {"progress": [], "segment": []}
    for subscriber in subscribers:
        for kind, lag in subscriber.lags:
            by_kind.setdefault(kind, []).append(lag)
    return {"count": count, "rss_before": rss_before, "rss_peak": peak, **by_kind,
            "server_cpu": server_cpu, "client_cpu": client_cpu}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# Main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="video length (seconds)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per segment")
    parser.add_argument("--size", default="128x128", help="WxH of the latency runs")
    parser.add_argument("--fanout", default="100,500,1000", help="subscriber counts")
    parser.add_argument("--fanout-size", default="64x64", help="WxH of the fan-out job")
    parser.add_argument(
        "--payload", default="both", help="segment events' byte fields: both, fragment, segment"
    )
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    width, height = (int(v) for v in args.size.split("x"))
    request = {"prompt": "a red ball moving right", "width": width, "height": height,
               "seconds": args.seconds, "num_inference_steps": args.steps, "seed": 7}  # fmt: skip
    port = free_port()
    server = start_server(port, {"max_queued_jobs": "8", "subscriber_buffer_events": "256"})
    base = f"http://127.0.0.1:{port}"
    try:
        generator = load_generator("embedded")
        # The server generates on a worker thread; so does the bare baseline.
        worker = ThreadPoolExecutor(1)
        pipeline = SegmentPipeline(generator)
        worker.submit(bare_run, generator, request).result()  # warm-up, every side
        worker.submit(pipeline_run, pipeline, request).result()
        streamed_run(base, request)
        bare, piped, streamed = [], [], []
        for _ in range(args.repeats):
            bare.append(worker.submit(bare_run, generator, request).result())
            piped.append(worker.submit(pipeline_run, pipeline, request).result())
            streamed.append(streamed_run(base, request))
        worker.shutdown()
        del generator
        first_b = statistics.median(b[0] for b in bare)
        first_s = statistics.median(s[0] for s in streamed)
        first_p = statistics.median(p[0] for p in piped)
        wall_p = statistics.median(p[1] for p in piped)
        wall_b = statistics.median(b[1] for b in bare)
        wall_s = statistics.median(s[1] for s in streamed)

        fan_request = {"prompt": "a red ball moving right", "size": args.fanout_size,
                       "seconds": args.seconds, "num_steps": 2, "seed": 3}  # fmt: skip
        fans = [
            asyncio.run(fanout(base, port, server.pid, int(n), fan_request, args.payload))
            for n in args.fanout.split(",")
        ]
    finally:
        server.terminate()
        server.wait(60)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; torch threads default")  # fmt: skip
    print(f"latency runs: {args.size}, {args.seconds:g} s, {args.steps} steps, "
          f"median of {args.repeats}")  # fmt: skip
    print("bare: generator only; pipeline: + fMP4 encoder thread; streamed: POST /generate-stream"
          " to the SSE client")  # fmt: skip
    print(f"{'':28}{'bare':>9}{'pipeline':>10}{'streamed':>10}"
          f"{'streamed/bare':>15}{'streamed/pipeline':>19}")  # fmt: skip
    rows = (
        ("first segment (s), median", first_b, first_p, first_s),
        ("whole job wall (s), median", wall_b, wall_p, wall_s),
        ("first segment (s), best", *(min(r[0] for r in runs) for runs in (bare, piped, streamed))),
        (
            "whole job wall (s), best",
            *(min(r[1] for r in runs) for runs in (bare, piped, streamed)),
        ),
    )
    for name, b, p, s in rows:
        print(f"{name:28}{b:9.3f}{p:10.3f}{s:10.3f}{s / b:15.3f}{s / p:19.3f}")
    print("target: whole job streamed/bare <= 1.03")
    print(f"\nSSE fan-out, one job ({args.fanout_size}, 2 steps, payload={args.payload}), "
          "lag = receipt - publish:")  # fmt: skip
    print(f"{'subscribers':>12}{'progress p50/p99 ms':>22}{'segment p50/p99 ms':>22}"
          f"{'RSS MiB idle/peak':>20}{'CPU s server/client':>21}")  # fmt: skip
    for fan in fans:
        p, s = fan["progress"], fan["segment"]
        print(
            f"{fan['count']:>12}"
            f"{percentile(p, 0.5) * 1e3:>11.1f}/{percentile(p, 0.99) * 1e3:<10.1f}"
            f"{percentile(s, 0.5) * 1e3:>11.1f}/{percentile(s, 0.99) * 1e3:<10.1f}"
            f"{fan['rss_before']:>10.0f}/{fan['rss_peak']:<9.0f}"
            f"{fan['server_cpu']:>11.1f}/{fan['client_cpu']:<9.1f}"
        )
    print("target: p99 < 100 ms at 1,000 subscribers")
    print(json.dumps({"first_ratio": first_s / first_b, "wall_ratio": wall_s / wall_b,
                      "wall_ratio_vs_pipeline": wall_s / wall_p}))  # fmt: skip


if __name__ == "__main__":
    main()
