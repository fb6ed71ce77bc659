"""Is what two source trees put on the wire the same, byte for byte?

Starts `streamgen serve` from each tree in turn (PYTHONPATH=TREE, one torch thread) and
sends both the same seeded requests: `/generate-stream` (SSE), `/generate-stream-chunked`
(NDJSON), `/generate` (the MP4), `/v1/jobs` (its SSE events, its `video.mp4`, its job object),
a 422, and a WebSocket generate. Values that differ from run to run are masked first: job
ids, publish times, wall seconds spent (`generate_seconds`, `encode_seconds`), and the job
object's id, times and `realtime_factor`. Then each body is compared. For a refactor: check
out the old commit with `git worktree add /tmp/before <commit>`, then

    python bench/wire_diff.py /tmp/before .
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
import msgpack
from server_process import free_port, start_server
from websockets.asyncio.client import connect

REQUEST = {
    "prompt": "a red ball moving left",
    "size": "64x64",
    "num_frames": 28,
    "num_steps": 2,
    "seed": 11,
}
VOLATILE = [
    (rb'"job_id":"job_[0-9a-f]+"', b'"job_id":"J"'),
    (rb'"time":[0-9.e+-]+', b'"time":T'),
    (rb'"generate_seconds":[0-9.e+-]+', b'"generate_seconds":G'),
    (rb'"encode_seconds":[0-9.e+-]+', b'"encode_seconds":E'),
]


def masked(body: bytes) -> bytes:
    for pattern, replacement in VOLATILE:
        body = re.sub(pattern, replacement, body)
    return body


async def bodies(url: str) -> dict[str, bytes]:
    """What the server at `url` answers to the same requests, volatile values masked."""
    out: dict[str, bytes] = {}
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(f"{url}/generate-stream", json=REQUEST)
        out["sse"] = masked(response.content)
        response = await client.post(f"{url}/generate-stream-chunked", json=REQUEST)
        out["ndjson"] = masked(response.content)
        out["generate mp4"] = (await client.post(f"{url}/generate", json=REQUEST)).content
        job = (await client.post(f"{url}/v1/jobs", json=REQUEST)).json()
        response = await client.get(f"{url}/v1/jobs/{job['id']}/events")
        out["job events"] = masked(response.content)
        out["video.mp4"] = (await client.get(f"{url}/v1/jobs/{job['id']}/video.mp4")).content
        response = await client.post(f"{url}/generate-stream", json={**REQUEST, "widht": 3})
        out["422"] = response.content
        state = (await client.get(f"{url}/v1/jobs/{job['id']}")).json()
        # realtime_factor is video seconds over wall seconds: a measurement, like the times.
        for key in ("id", "created_at", "started_at", "finished_at", "links", "realtime_factor"):
            state[key] = None
        out["job object"] = json.dumps(state).encode()
    messages = []
    async with connect(url.replace("http", "ws", 1) + "/ws") as websocket:
        await websocket.send(json.dumps(REQUEST))
        async for message in websocket:
            event = msgpack.unpackb(message, raw=False)
            event["job_id"] = "J"
            for key in ("time", "generate_seconds", "encode_seconds"):
                if key in event["data"]:
                    event["data"][key] = 0
            messages.append(repr(event))  # keeps key order and int/float types
    out["websocket"] = "\n".join(messages).encode()
    return out


def serve_and_read(tree: Path) -> dict[str, bytes]:
    port = free_port()
    server = start_server(port, {"torch_threads": "1"}, tree=tree)
    try:
        return asyncio.run(bodies(f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path, help="the first tree (e.g. a worktree of a commit)")
    parser.add_argument("new", type=Path, help="the second tree")
    args = parser.parse_args()
    old, new = serve_and_read(args.old.resolve()), serve_and_read(args.new.resolve())
    same = True
    for name in old:
        verdict = "identical" if old[name] == new[name] else "DIFFERENT"
        same &= old[name] == new[name]
        print(f"{name:13s} {verdict}  ({len(old[name])} / {len(new[name])} bytes)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
