"""How many live streams does one worker serve at once, and how well?

Starts `streamgen serve` (memory broker, embedded model, default settings unless `--set`)
as a subprocess and, from this process, opens live streams (`POST /generate-stream`, SSE)
side by side. A viewer of each stream is modelled: it starts playing `--viewer-buffer`
seconds after its first segment arrives and plays in real time; a stall is a segment that
arrives after the moment it should play (the viewer's buffer ran dry), counted with its
length. Prints, side by side in one run:

1. For N = 1, 2, 3, 4 streams (each `--seconds` of video, started together): each stream's
   real-time factor (video seconds / wall seconds from request to `complete`; the minimum
   across streams), stalls, the first-segment time of each, and the aggregate video seconds
   per wall second against N = 1 (target: >= 1.3x at N = 4). A stream the worker did not
   admit at once waits in the queue (its `queued` event is counted).
2. Joining: an unbounded stream runs for `--join-after` seconds, then a second stream joins;
   its first-segment time against the same request's on the idle server (target <= 2x).
3. Batched against alone, same seeds: the streams of N = 3 run again one at a time; every
   decoded frame is compared (mean absolute difference in grey levels, and the largest).

    python bench/concurrency.py [--seconds 12] [--runs 1,2,3,4] [--set max_batch_size=1]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="video seconds a stream")
    parser.add_argument("--runs", default="1,2,3,4", help="stream counts to run side by side")
    parser.add_argument("--viewer-buffer", type=float, default=1.0, help="seconds (viewer)")
    parser.add_argument("--join-after", type=float, default=15.0, help="seconds")
    parser.add_argument("--set", action="append", default=[], help="a setting, key=value")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, overrides)
    try:
        load = os.getloadavg()[0]
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}; "
              f"settings overridden: {overrides or 'none'}")  # fmt: skip
        asyncio.run(side_by_side(base, 1, 2.0))  # warm-up: first batch costs, allocations
        print(f"\n1. N live streams side by side ({args.seconds:g} s of video each, default "
              f"request); viewers play {args.viewer_buffer:g} s after a first segment")  # fmt: skip
        print(" N  min RTF  RTFs                      first segment (s)        queued  stalls "
              "(s)  aggregate video s/s  vs N=1")  # fmt: skip
        base_rate = None
        report: dict[str, Any] = {"runs": {}}
        for count in [int(n) for n in args.runs.split(",")]:
            started = time.perf_counter()
            streams = asyncio.run(side_by_side(base, count, args.seconds))
            span = time.perf_counter() - started
            rate = sum(s.video_s for s in streams) / span
            base_rate = base_rate or rate
            stalls = [s.stalls(args.viewer_buffer) for s in streams]
            rtfs = [s.rtf for s in streams]
            print(f"{count:2d}  {min(rtfs):7.2f}  {' '.join(f'{r:.2f}' for r in rtfs):24s}  "
                  f"{' '.join(f'{s.first_s:.2f}' for s in streams):23s}  "
                  f"{sum(s.queued > 0 for s in streams):6d}  "
                  f"{sum(n for n, _ in stalls):2d} ({sum(t for _, t in stalls):5.2f})  "
                  f"{rate:19.2f}  {rate / base_rate:6.2f}")  # fmt: skip
            report["runs"][count] = {"min_rtf": min(rtfs), "aggregate": rate,
                                     "vs_one": rate / base_rate,
                                     "stalls": sum(n for n, _ in stalls)}  # fmt: skip
        joined, bare = asyncio.run(joining(base, args.join_after))
        print(f"\n2. A stream joining beside an unbounded stream (after {args.join_after:g} s): "
              f"first segment {joined:.2f} s, on the idle server {bare:.2f} s: "
              f"{joined / bare:.2f}x (target <= 2x)")  # fmt: skip
        report["join_ratio"] = joined / bare
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
        worst = max(int(d.max()) for d in diffs)
        print(f"\n3. Batched (3 side by side) against alone, same seeds, decoded grey frames: "
              f"mean absolute difference {mad:.4f} levels (largest stream), largest pixel "
              f"difference {worst} (target: mean <= 1)")  # fmt: skip
        report["batched_mad"] = mad
        print(json.dumps(report))
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
