"""Client-side helpers for the scale-out tests: follow a job's events, check its log."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx

from tests.streamgen.stream_reading import read_sse

Events = list[tuple[str, dict[str, Any]]]


class Follower:
    """Reads a job's SSE events in the background; `seen(kind)` waits for one."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        method: str = "GET",
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        stop: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> None:
        self.events: Events = []
        self._changed = asyncio.Event()
        self._stop = stop

        def on_event(kind: str, data: dict[str, Any]) -> bool:
            self.events.append((kind, data))
            self._changed.set()
            return bool(self._stop and self._stop(kind, data))

        self.task = asyncio.create_task(
            read_sse(client, method, url, json_body=json_body, headers=headers, stop=on_event)
        )

    async def until(self, check: Callable[[Events], bool], timeout_s: float = 60.0) -> Events:
        """Wait (with a deadline) until `check(events so far)` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not check(self.events):
            if self.task.done():
                self.task.result()  # raises what ended the read
                if not check(self.events):
                    raise AssertionError(f"the stream ended first: {summary(self.events)}")
                break
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"not seen within {timeout_s} s: {summary(self.events)}")
            await asyncio.wait(
                [asyncio.ensure_future(self._changed.wait()), self.task],
                timeout=left,
                return_when=asyncio.FIRST_COMPLETED,
            )
        return self.events

    async def segments(self, count: int, timeout_s: float = 60.0) -> Events:
        return await self.until(lambda ev: sum(k == "segment" for k, _ in ev) >= count, timeout_s)

    async def finish(self, timeout_s: float = 120.0) -> Events:
        """Wait for the stream to end; its events."""
        stream = await asyncio.wait_for(self.task, timeout_s)
        assert stream.status == 200, stream.events
        return self.events


def summary(events: Events) -> str:
    return " ".join(f"{kind}:{data.get('seq')}" for kind, data in events)


def check_log(events: Events, *, first_seq: int = 0) -> None:
    """A whole log: seqs contiguous from `first_seq`, segment indices 0, 1, … exactly once,
    one terminal event at the end."""
    seqs = [data["seq"] for _, data in events]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), summary(events)
    indices = [data["segment_index"] for kind, data in events if kind == "segment"]
    assert indices == list(range(len(indices))), f"segments doubled or missing: {indices}"
    kinds = [kind for kind, _ in events]
    assert (
        kinds[-1] in ("complete", "error") and kinds.count("complete") + kinds.count("error") == 1
    ), summary(events)


def video_of(events: Events) -> bytes:
    """init segment + every fragment: the job's continuous MP4."""
    start = next(data for kind, data in events if kind == "start")
    parts = [base64.b64decode(start["init_segment_base64"])]
    parts += [base64.b64decode(d["fragment_base64"]) for k, d in events if k == "segment"]
    return b"".join(parts)


async def submit(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> str:
    response = await client.post(f"{base}/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])
