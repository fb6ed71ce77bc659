"""Client-side helpers for the server tests: read each transport, decode MP4, poll state."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import av
import httpx
from streamgen_client.sse import SSEParser
from websockets.asyncio.client import connect

from streamgen.streams.ws import unpack_message

# A tiny request the embedded model takes quickly: 3 segments (12 + 8 + 8 frames) of 64x64.
SMALL = {
    "prompt": "a red ball moving left",
    "size": "64x64",
    "num_frames": 28,
    "num_steps": 2,
    "seed": 11,
}


@dataclass
class SSEStream:
    """What an SSE read saw: messages as (event, data) in order, and the response headers."""

    events: list[tuple[str, dict[str, Any]]]
    headers: httpx.Headers
    status: int
    comments: int = 0
    retry: int | None = None


async def read_sse(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    stop: Callable[[str, dict[str, Any]], bool] | None = None,
) -> SSEStream:
    """Read an SSE response to its end, or until `stop(event, data)` is true."""
    async with client.stream(method, url, json=json_body, headers=headers) as response:
        result = SSEStream([], response.headers, response.status_code)
        if response.status_code != 200:
            await response.aread()
            result.events.append(("http_error", response.json()))
            return result
        parser = SSEParser()
        async for chunk in response.aiter_raw():
            for message in parser.feed(chunk):
                data = json.loads(message.data)
                # The parser's id is the last one in force; seqs never repeat, so this holds
                # only if every event carries its own id line.
                assert message.id == str(data["seq"]), "the SSE id is the event's seq"
                result.events.append((message.event, data))
                if stop is not None and stop(message.event, data):
                    result.comments, result.retry = parser.comments, parser.retry_ms
                    return result
        result.comments, result.retry = parser.comments, parser.retry_ms
    return result


async def read_ndjson(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    stop: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Read NDJSON lines to the end, or until `stop(line)` is true."""
    lines: list[dict[str, Any]] = []
    headers = {"Accept": "application/x-ndjson"}
    async with client.stream(method, url, json=json_body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        async for text in response.aiter_lines():
            if text:
                lines.append(json.loads(text))
                if stop is not None and stop(lines[-1]):
                    break
    return lines


@dataclass
class WSStream:
    messages: list[dict[str, Any]]
    close_code: int | None
    close_reason: str


async def read_ws(
    url: str,
    first: dict[str, Any],
    *,
    stop: Callable[[dict[str, Any]], bool] | None = None,
    **options: Any,
) -> WSStream:
    """Send `first` on ``/ws`` and read msgpack messages until the server closes."""
    messages: list[dict[str, Any]] = []
    ws_url = url.replace("http://", "ws://") + "/ws"
    async with connect(ws_url, max_size=None, **options) as websocket:
        await websocket.send(json.dumps(first))
        async for payload in websocket:
            assert isinstance(payload, bytes), "the server sends binary msgpack"
            messages.append(unpack_message(payload))
            if stop is not None and stop(messages[-1]):
                break
        else:
            return WSStream(messages, websocket.close_code, websocket.close_reason or "")
    return WSStream(messages, None, "")


async def read_body(client: httpx.AsyncClient, url: str) -> tuple[bytes, httpx.Headers]:
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        return await response.aread(), response.headers


def b64(data: dict[str, Any], name: str) -> bytes:
    return base64.b64decode(data[f"{name}_base64"])


def decode(mp4: bytes) -> list[av.VideoFrame]:
    """Every video frame of an in-memory MP4 (PyAV)."""
    with av.open(io.BytesIO(mp4)) as container:
        return list(container.decode(video=0))


async def poll(
    check: Callable[[], Awaitable[Any]], *, timeout_s: float = 30.0, interval_s: float = 0.02
) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(interval_s)  # polling a deadline, not synchronising


async def job_state(client: httpx.AsyncClient, base: str, job_id: str) -> dict[str, Any]:
    response = await client.get(f"{base}/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_finished(client: httpx.AsyncClient, base: str, job_id: str) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        state = await job_state(client, base, job_id)
        return state if state["status"] in ("completed", "failed", "cancelled") else None

    return dict(await poll(finished))
