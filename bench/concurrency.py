"""How many live streams does one worker serve at once, and how well?

Starts `streamgen serve` (memory broker, embedded model, default settings unless `--set`)
as a subprocess and, from this process, opens live streams (`POST /generate-stream`, SSE)
side by side. A viewer of each stream is modelled: it starts playing `--viewer-buffer`
seconds after its first segment arrives and plays in real time; a stall (a deadline miss)
is a segment that arrives after the moment it should play (the viewer's buffer ran dry).
Prints, side by side in one run:

1. For N = 1, 2, 4, 8 streams (each `--seconds` of video, started together), each on a
   fresh server (what an autoscaler adds: nothing measured but its startup calibration)
   and again on the same server once warmed (after that run): the first-segment time
   p50 / p99 across streams, the deadline-miss rate (stalls / segments), the jitter (the
   standard deviation of arrival gaps against segment seconds, mean over streams), the
   stalls, the streams queued (a `queued` event: not admitted at once), and the aggregate
   video seconds per wall second against N = 1. Targets: N = 2 both start within 2x the
   alone first-segment time, 0 stalls; N = 4 aggregate >= 1.5x of N = 1, <= 1 queued.
2. Joining, `--join-runs` times on one server: an unbounded stream runs for `--join-after`
   seconds, then a second stream joins; its first-segment time against the same request's
   on the idle server (target <= 2x in every run).
3. With `--compare`: batched against alone, same seeds: 3 streams side by side, then one at
   a time; every decoded frame is compared (mean absolute difference in grey levels).

    python bench/concurrency.py [--seconds 12] [--runs 1,2,4,8] [--set max_batch_size=1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from server_process import free_port, start_server
from streamgen_client.sse import SSEParser

PROMPTS = [
    "a red ball moving left",
    "a blue square moving up",
    "a green triangle moving right",
    "a yellow circle moving down",
]


@dataclass
class Stream:
    """What one SSE client saw: when each segment arrived (seconds from its request)."""

    seed: int
    arrivals: list[tuple[float, float, float]] = field(default_factory=list)  # (t, start, end)
    queued: int = 0
    end: str = ""
    wall_s: float = 0.0
    init: bytes = b""
    fragments: list[bytes] = field(default_factory=list)

    @property
    def video_s(self) -> float:
        return self.arrivals[-1][2] if self.arrivals else 0.0

    @property
    def first_s(self) -> float:
        return self.arrivals[0][0] if self.arrivals else float("nan")

    @property
    def rtf(self) -> float:
        return self.video_s / self.wall_s if self.wall_s else 0.0

    def jitter(self) -> float:
        """Standard deviation of (arrival gap - the earlier segment's seconds)."""
        errors = [
            (b[0] - a[0]) - (a[2] - a[1])
            for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)
        ]
        return float(np.std(errors, ddof=1)) if len(errors) >= 2 else 0.0

    def stalls(self, buffer_s: float) -> tuple[int, float]:
        """(stalls, seconds stalled) of a viewer that starts `buffer_s` after the first
        segment arrives and then plays in real time."""
        if not self.arrivals:
            return 0, 0.0
        play_start = self.arrivals[0][0] + buffer_s
        stalled_s, count = 0.0, 0
        for arrived, start, _ in self.arrivals:
            due = play_start + start + stalled_s
            if arrived > due:
                count += 1
                stalled_s += arrived - due
        return count, stalled_s


async def stream(
    client: httpx.AsyncClient, base: str, body: dict[str, Any], *, keep: bool = False
) -> Stream:
    """Follow one live stream to its end (or until cancelled)."""
    result = Stream(seed=body["seed"])
    started = time.perf_counter()
    async with client.stream("POST", f"{base}/generate-stream", json=body) as response:
        parser = SSEParser()
        async for chunk in response.aiter_raw():
            for message in parser.feed(chunk):
                data = json.loads(message.data)
                now = time.perf_counter() - started
                if message.event == "start" and keep:
                    result.init = base64.b64decode(data["init_segment_base64"])
                elif message.event == "queued":
                    result.queued += 1
                elif message.event == "segment":
                    result.arrivals.append((now, data["start_time"], data["end_time"]))
                    if keep:
                        result.fragments.append(base64.b64decode(data["fragment_base64"]))
                elif message.event in ("complete", "error"):
                    result.end, result.wall_s = message.event, now
                    return result
    return result


def body_for(index: int, seconds: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": PROMPTS[index % len(PROMPTS)], "seed": 100 + index}
    if seconds is None:
        body["unbounded"] = True
    else:
        body["seconds"] = seconds
    return body


async def side_by_side(base: str, count: int, seconds: float, keep: bool = False) -> list[Stream]:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        streams = await asyncio.gather(
            *(stream(client, base, body_for(i, seconds), keep=keep) for i in range(count))
        )
        for result in streams:
            assert result.end == "complete", f"stream {result.seed} ended with {result.end}"
        span = time.perf_counter() - started
    for result in streams:
        result.wall_s = result.wall_s or span
    return list(streams)


async def joining(base: str, after_s: float) -> tuple[float, float]:
    """(first-segment seconds of a stream joining beside an unbounded one, of the same
    stream on the idle server)."""
    async with httpx.AsyncClient(timeout=600) as client:
        bare = await stream(client, base, body_for(1, 4.0))
        endless = asyncio.create_task(stream(client, base, body_for(0, None)))
        await asyncio.sleep(after_s)  # the unbounded stream runs this long before the join
        joined = await stream(client, base, body_for(1, 4.0))
        endless.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await endless
        return joined.first_s, bare.first_s


def frames_of(result: Stream) -> np.ndarray:
    data = result.init + b"".join(result.fragments)
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(base: str, count: int, seconds: float, buffer_s: float) -> dict[str, Any]:
    """N streams started together on the server at `base`: what their viewers saw."""
    started = time.perf_counter()
    streams = asyncio.run(side_by_side(base, count, seconds))
    span = time.perf_counter() - started
    stalls = [s.stalls(buffer_s) for s in streams]
    firsts = [s.first_s for s in streams]
    segments = sum(len(s.arrivals) for s in streams)
    return {
        "first_p50": percentile(firsts, 50),
        "first_p99": percentile(firsts, 99),
        "first": firsts,
        "miss_rate": sum(n for n, _ in stalls) / max(1, segments),
        "jitter": float(np.mean([s.jitter() for s in streams])),
        "stalls": sum(n for n, _ in stalls),
        "stalled_s": sum(t for _, t in stalls),
        "queued": sum(s.queued > 0 for s in streams),
        "min_rtf": min(s.rtf for s in streams),
        "aggregate": sum(s.video_s for s in streams) / span,
    }


def print_row(label: str, count: int, row: dict[str, Any], base_rate: float) -> None:
    print(f"{label:6s} {count:2d}  {row['first_p50']:5.2f} / {row['first_p99']:5.2f}   "
          f"{row['miss_rate']:9.3f}  {row['jitter']:6.3f}  {row['stalls']:3d} "
          f"({row['stalled_s']:5.2f})  {row['queued']:6d}  {row['min_rtf']:7.2f}  "
          f"{row['aggregate']:9.2f}  {row['aggregate'] / base_rate:6.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="video seconds a stream")
    parser.add_argument("--runs", default="1,2,4,8", help="stream counts to run side by side")
    parser.add_argument("--viewer-buffer", type=float, default=1.0, help="seconds (viewer)")
    parser.add_argument("--join-after", type=float, default=15.0, help="seconds")
    parser.add_argument("--join-runs", type=int, default=3, help="joins to measure")
    parser.add_argument("--compare", action="store_true", help="batched against alone")
    parser.add_argument("--set", action="append", default=[], help="a setting, key=value")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}; "
          f"settings overridden: {overrides or 'none'}")  # fmt: skip
    print(f"\n1. N live streams side by side ({args.seconds:g} s of video each, default "
          f"request); viewers play {args.viewer_buffer:g} s after a first segment")  # fmt: skip
    print("server  N  first p50 / p99 (s)  miss rate  jitter  stalls (s)  queued  min RTF  "
          "video s/s  vs N=1")  # fmt: skip
    report: dict[str, Any] = {"fresh": {}, "warmed": {}}
    base_rate: dict[str, float] = {}
    for count in [int(n) for n in args.runs.split(",")]:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(port, overrides)  # fresh: answers once calibrated
        try:
            for label in ("fresh", "warmed"):
                row = measure(base, count, args.seconds, args.viewer_buffer)
                base_rate.setdefault(label, row["aggregate"])
                print_row(label, count, row, base_rate[label])
                report[label][count] = row
        finally:
            server.terminate()
            server.wait()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, overrides)
    try:
        ratios = []
        for _ in range(args.join_runs):
            joined, bare = asyncio.run(joining(base, args.join_after))
            ratios.append(joined / bare)
            print(f"\n2. A stream joining beside an unbounded stream (after {args.join_after:g} "
                  f"s): first segment {joined:.2f} s, on the idle server {bare:.2f} s: "
                  f"{joined / bare:.2f}x (target <= 2x)", end="")  # fmt: skip
        print()
        report["join_ratios"] = ratios
        if args.compare:
            report["batched_mad"] = compare(base)
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(report))
    return 0


def compare(base: str) -> float:
    """Batched (3 side by side) against alone, same seeds: the largest stream's mean
    absolute difference in decoded grey levels."""
    batched = asyncio.run(side_by_side(base, 3, 4.0, keep=True))
    alone = []
    for index in range(3):

        async def one(i: int = index) -> Stream:
            async with httpx.AsyncClient(timeout=600) as client:
                return await stream(client, base, body_for(i, 4.0), keep=True)

        alone.append(asyncio.run(one()))
    diffs = [
        np.abs(frames_of(b).astype(int) - frames_of(a).astype(int))
        for b, a in zip(batched, alone, strict=True)
    ]
    mad = max(float(d.mean()) for d in diffs)
    print(f"\n3. Batched (3 side by side) against alone, same seeds, decoded grey frames: "
          f"mean absolute difference {mad:.4f} levels (largest stream), largest pixel "
          f"difference {max(int(d.max()) for d in diffs)} (target: mean <= 1)")  # fmt: skip
    return mad


if __name__ == "__main__":
    sys.exit(main())
