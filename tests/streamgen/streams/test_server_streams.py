"""Every transport of a real server (Hypercorn on a free port) carries the same bytes, and
those bytes decode: the continuous MP4, each self-contained segment, and their concat."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.server import running_server
from tests.streamgen.stream_reading import (
    SMALL,
    b64,
    decode,
    read_body,
    read_ndjson,
    read_sse,
    read_ws,
    wait_finished,
)

FPS = 8.0  # the embedded model's frame rate


@pytest.fixture(scope="module")
def one_job(server_url: str) -> dict[str, Any]:
    """One /v1/jobs job read at the same time over SSE, NDJSON, WebSocket and video.mp4."""

    async def scenario() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=60) as client:
            created = await client.post(f"{server_url}/v1/jobs", json=SMALL)
            assert created.status_code == 202, created.text
            job = created.json()
            events = f"{server_url}/v1/jobs/{job['id']}/events"
            sse, lines, ws, (body, body_headers) = await asyncio.gather(
                read_sse(client, "GET", events),
                read_ndjson(client, "GET", events),
                read_ws(server_url, {"subscribe": job["id"], "from_seq": 0}),
                read_body(client, f"{server_url}/v1/jobs/{job['id']}/video.mp4"),
            )
            finished = await wait_finished(client, server_url, job["id"])
            return {
                "created": created,
                "sse": sse,
                "ndjson": lines,
                "ws": ws,
                "mp4": body,
                "mp4_headers": body_headers,
                "finished": finished,
            }

    return asyncio.run(scenario())


def test_job_is_accepted_with_links(one_job: dict[str, Any]) -> None:
    created = one_job["created"]
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["total_segments"] == 3
    assert job["links"]["events"].endswith("/events")
    assert one_job["finished"]["status"] == "completed"
    assert one_job["finished"]["segments_done"] == 3 and one_job["finished"]["frames_done"] == 28


def test_sse_event_log_is_ordered_and_complete(one_job: dict[str, Any]) -> None:
    sse = one_job["sse"]
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.headers["cache-control"] == "no-cache"
    assert sse.headers["x-accel-buffering"] == "no"
    assert sse.retry == 2000
    kinds = [kind for kind, _ in sse.events]
    assert [data["seq"] for _, data in sse.events] == list(range(len(kinds)))
    assert kinds[0] == "start" and kinds[-1] == "complete"
    assert kinds.count("segment") == 3 and kinds.count("progress") == 3 * 2
    start = sse.events[0][1]
    assert start["codec"].startswith("avc1.") and start["codec"] in start["mime"]
    assert (start["width"], start["height"], start["total_segments"]) == (64, 64, 3)
    segments = [data for kind, data in sse.events if kind == "segment"]
    assert [s["segment_index"] for s in segments] == [0, 1, 2]
    assert [s["start_frame"] for s in segments] == [0, 12, 20]
    assert [s["num_frames"] for s in segments] == [12, 8, 8]
    assert [s["is_final"] for s in segments] == [False, False, True]
    assert all(s["total_segments"] == 3 for s in segments)
    assert segments[1]["start_time"] == pytest.approx(12 / FPS)
    assert segments[2]["end_time"] == pytest.approx(28 / FPS)
    complete = sse.events[-1][1]
    assert complete["total_segments"] == 3 and complete["final"] is True
    assert complete["duration"] == pytest.approx(28 / FPS)


def test_every_transport_delivers_byte_identical_fragments(one_job: dict[str, Any]) -> None:
    sse_events = one_job["sse"].events
    init = b64(sse_events[0][1], "init_segment")
    sse_fragments = [b64(data, "fragment") for kind, data in sse_events if kind == "segment"]
    nd_lines = one_job["ndjson"]
    assert nd_lines[0]["status"] == "started" and nd_lines[-1]["status"] == "completed"
    assert [line["seq"] for line in nd_lines] == [data["seq"] for _, data in sse_events]
    assert b64(nd_lines[0], "init_segment") == init
    nd_fragments = [b64(line, "fragment") for line in nd_lines if line["status"] == "segment"]
    ws = one_job["ws"]
    assert ws.close_code == 1000
    assert ws.messages[0]["type"] == "start" and ws.messages[0]["data"]["init_segment"] == init
    ws_fragments = [m["data"]["fragment"] for m in ws.messages if m["type"] == "segment"]
    assert len(sse_fragments) == 3
    assert sse_fragments == nd_fragments == ws_fragments
    assert one_job["mp4_headers"]["content-type"] == "video/mp4"
    assert one_job["mp4"] == init + b"".join(sse_fragments)


def test_continuous_mp4_decodes_to_every_frame(one_job: dict[str, Any]) -> None:
    frames = decode(one_job["mp4"])
    assert len(frames) == 28
    assert (frames[0].width, frames[0].height) == (64, 64)
    times = [frame.time for frame in frames]
    assert times == sorted(times) and times[0] == 0.0
    assert times[-1] == pytest.approx(27 / FPS)


def test_each_segment_plays_alone_and_concat_gives_the_duration(
    one_job: dict[str, Any], tmp_path: Path
) -> None:
    segments = [b64(data, "segment") for kind, data in one_job["sse"].events if kind == "segment"]
    listing = []
    for index, data in enumerate(segments):
        frames = decode(data)
        assert len(frames) == (12, 8, 8)[index]
        assert frames[0].time == 0.0, "a self-contained segment starts at time 0"
        path = tmp_path / f"segment_{index}.mp4"
        path.write_bytes(data)
        listing.append(f"file '{path}'")
    (tmp_path / "list.txt").write_text("\n".join(listing) + "\n")
    joined = tmp_path / "joined.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"),
         "-c", "copy", str(joined)],
        check=True,
    )  # fmt: skip
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(joined)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert float(json.loads(probe.stdout)["format"]["duration"]) == pytest.approx(
        28 / FPS, abs=0.01
    )
    assert len(decode(joined.read_bytes())) == 28


def test_finished_video_supports_ranges(one_job: dict[str, Any], server_url: str) -> None:
    job_id = one_job["finished"]["id"]
    url = f"{server_url}/v1/jobs/{job_id}/video.mp4"
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == one_job["mp4"]
    assert whole.headers["accept-ranges"] == "bytes"
    part = httpx.get(url, headers={"Range": "bytes=100-299"})
    assert part.status_code == 206
    assert part.content == one_job["mp4"][100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(one_job['mp4'])}"
    beyond = httpx.get(url, headers={"Range": f"bytes={len(one_job['mp4']) + 10}-"})
    assert beyond.status_code == 416


def test_late_joiner_gets_start_and_the_whole_backlog(
    one_job: dict[str, Any], server_url: str
) -> None:
    job_id = one_job["finished"]["id"]

    async def read() -> Any:
        async with httpx.AsyncClient(timeout=30) as client:
            return await read_sse(client, "GET", f"{server_url}/v1/jobs/{job_id}/events")

    late = asyncio.run(read())
    assert [data for _, data in late.events] == [data for _, data in one_job["sse"].events]


def test_generate_stream_sends_segment_0_while_segment_1_is_generated(server_url: str) -> None:
    request = {**SMALL, "num_steps": 3, "seed": 5}

    async def scenario() -> tuple[Any, list[dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=60) as client:
            sse = await read_sse(client, "POST", f"{server_url}/generate-stream", json_body=request)
            lines = await read_ndjson(
                client, "POST", f"{server_url}/generate-stream-chunked", json_body=request
            )
            return sse, lines

    sse, lines = asyncio.run(scenario())
    kinds = [(kind, data.get("segment_index"), data.get("step")) for kind, data in sse.events]
    # Segment 0 leaves the encoder (and reaches the client) before segment 1 is denoised.
    assert kinds.index(("segment", 0, None)) < kinds.index(("progress", 1, 3))
    assert sse.headers["x-job-id"] == sse.events[0][1]["job_id"]
    segments = [data for kind, data in sse.events if kind == "segment"]
    assert all(b64(s, "segment")[: len(b64(sse.events[0][1], "init_segment"))]
               == b64(sse.events[0][1], "init_segment") for s in segments)  # fmt: skip
    # The same seed gives the same bytes over NDJSON (a second job).
    nd_segments = [line for line in lines if line["status"] == "segment"]
    assert [b64(s, "fragment") for s in nd_segments] == [b64(s, "fragment") for s in segments]
    assert lines[-1]["status"] == "completed" and lines[-1]["total_segments"] == 3


def test_websocket_generate_request(server_url: str) -> None:
    ws = asyncio.run(read_ws(server_url, {**SMALL, "seed": 11}))
    assert ws.close_code == 1000
    kinds = [m["type"] for m in ws.messages]
    assert kinds[0] == "start" and kinds[-1] == "complete" and kinds.count("segment") == 3
    assert [m["seq"] for m in ws.messages] == list(range(len(kinds)))
    fragments = [m["data"]["fragment"] for m in ws.messages if m["type"] == "segment"]
    assert len(decode(ws.messages[0]["data"]["init_segment"] + b"".join(fragments))) == 28


def test_h2c_prior_knowledge(server_url: str, one_job: dict[str, Any]) -> None:
    job_id = one_job["finished"]["id"]

    async def read() -> tuple[str, Any]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            health = await client.get(f"{server_url}/health")
            sse = await read_sse(client, "GET", f"{server_url}/v1/jobs/{job_id}/events?from_seq=1")
            return health.http_version, sse

    version, sse = asyncio.run(read())
    assert version == "HTTP/2"
    assert [data["seq"] for _, data in sse.events] == [
        data["seq"] for _, data in one_job["sse"].events[1:]
    ]


def test_generate_waits_and_answers_in_each_format(server_url: str) -> None:
    request = {**SMALL, "num_frames": 12, "num_steps": 1}
    mp4 = httpx.post(f"{server_url}/generate", json=request, timeout=60)
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    assert len(decode(mp4.content)) == 12
    b64_json = httpx.post(
        f"{server_url}/generate", json={**request, "response_format": "b64_json"}, timeout=60
    ).json()
    assert b64_json["object"] == "video.generation" and b64_json["total_frames"] == 12
    assert base64.b64decode(b64_json["data"][0]["b64_json"]) == mp4.content  # same seed
    url = httpx.post(
        f"{server_url}/generate", json={**request, "response_format": "url"}, timeout=60
    ).json()
    linked = httpx.get(url["data"][0]["url"])
    assert linked.status_code == 200 and linked.content == mp4.content


@pytest.mark.redis
def test_redis_broker_carries_the_same_stream() -> None:
    """The same job over a server whose broker is a private redis-server."""
    redis_server = RedisServer()
    redis_server.start()
    try:
        with running_server({"broker": redis_server.url}) as url:
            sse, ws, body = asyncio.run(_three_readers(url))
    finally:
        redis_server.close()
    assert sse.events[-1][1]["total_segments"] == 3 and sse.events[-1][1]["total_frames"] == 28
    fragments = [b64(data, "fragment") for kind, data in sse.events if kind == "segment"]
    assert fragments == [m["data"]["fragment"] for m in ws.messages if m["type"] == "segment"]
    assert body == b64(sse.events[0][1], "init_segment") + b"".join(fragments)
    assert len(decode(body)) == 28


async def _three_readers(url: str) -> tuple[Any, Any, bytes]:
    async with httpx.AsyncClient(timeout=60) as client:
        job = (await client.post(f"{url}/v1/jobs", json=SMALL)).json()
        sse, ws, (body, _) = await asyncio.gather(
            read_sse(client, "GET", f"{url}/v1/jobs/{job['id']}/events"),
            read_ws(url, {"subscribe": job["id"]}),
            read_body(client, f"{url}/v1/jobs/{job['id']}/video.mp4"),
        )
        return sse, ws, body


def test_text_subscribers_may_take_one_byte_form(one_job: dict[str, Any], server_url: str) -> None:
    job_id = one_job["finished"]["id"]
    events = f"{server_url}/v1/jobs/{job_id}/events"

    async def read(query: str) -> Any:
        async with httpx.AsyncClient(timeout=30) as client:
            return await read_sse(client, "GET", f"{events}?{query}")

    fragments_only = [d for k, d in asyncio.run(read("payload=fragment")).events if k == "segment"]
    assert all("fragment_base64" in d and "segment_base64" not in d for d in fragments_only)
    full = [d for k, d in one_job["sse"].events if k == "segment"]
    assert [b64(d, "fragment") for d in fragments_only] == [b64(d, "fragment") for d in full]
    segments_only = [d for k, d in asyncio.run(read("payload=segment")).events if k == "segment"]
    assert all("segment_base64" in d and "fragment_base64" not in d for d in segments_only)
    bad = httpx.get(f"{events}?payload=everything")
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "payload"
