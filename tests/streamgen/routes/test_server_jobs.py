"""Job lifecycle on a real server: disconnect cancels, resume and late join are exact, slow
consumers are cut off (and resume), priorities, queue limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from streamgen_client.sse import SSEParser
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamgen.streams.ws import unpack_message
from tests.server import ServerThread, running_server
from tests.streamgen.stream_reading import (
    SMALL,
    job_state,
    poll,
    read_ndjson,
    read_sse,
    read_ws,
    wait_finished,
)

UNBOUNDED = {"prompt": "a blue square drifting right", "size": "64x64", "unbounded": True,
             "num_steps": 1, "seed": 2}  # fmt: skip
SMALL_BUFFER = 4  # events a subscriber of the `tight` server may fall behind


@pytest.fixture(scope="module")
def tight() -> Iterator[ServerThread]:
    """A second server (same model) with small limits: a 4-event subscriber buffer, a
    2-job queue, a 10 kB body cap, 0.2 s heartbeats, one job at a time (so one unbounded
    job keeps the worker busy); small socket buffers, so a client that stops reading backs
    up into the server within a few events."""
    server = ServerThread(
        {
            "max_concurrent_jobs": 1,
            "subscriber_buffer_events": SMALL_BUFFER,
            "max_queued_jobs": 3,
            "max_body_bytes": 10_000,
            "sse_heartbeat_seconds": 0.2,
            "resume_grace_seconds": 30.0,
        },
        send_buffer_bytes=8192,
    ).start()
    yield server
    server.stop()


def _events(stream: Any) -> list[dict[str, Any]]:
    return [data for _, data in stream.events]


# Disconnects -------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["sse", "ndjson", "ws"])
def test_last_subscriber_leaving_cancels_a_request_scoped_job(
    server_url: str, transport: str
) -> None:
    async def scenario() -> tuple[str, float, list[dict[str, Any]], dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            # An unbounded stream never ends: segment 0 arriving at all shows nothing buffers.
            if transport == "sse":
                stream = await read_sse(
                    client, "POST", f"{server_url}/generate-stream", json_body=UNBOUNDED,
                    stop=lambda kind, _: kind == "segment",
                )  # fmt: skip
                job_id = stream.events[0][1]["job_id"]
            elif transport == "ndjson":
                lines = await read_ndjson(
                    client, "POST", f"{server_url}/generate-stream-chunked", json_body=UNBOUNDED,
                    stop=lambda line: line["status"] == "segment",
                )  # fmt: skip
                job_id = lines[0]["job_id"]
            else:
                ws = await read_ws(server_url, UNBOUNDED, stop=lambda m: m["type"] == "segment")
                job_id = ws.messages[0]["job_id"]
            left_at = time.time()
            state = await wait_finished(client, server_url, job_id)
            log = await read_sse(client, "GET", f"{server_url}/v1/jobs/{job_id}/events")
            return job_id, left_at, _events(log), state

    _, left_at, log, state = asyncio.run(scenario())
    assert state["status"] == "cancelled"
    assert state["error"]["code"] == "cancelled"
    assert log[-1]["type"] == "error" and log[-1]["code"] == "cancelled"
    # The generator stopped: at most the step under way (plus the disconnect's own latency)
    # finished after the client left, and nothing was published after the error.
    late_steps = [e for e in log if e["type"] == "progress" and e["time"] > left_at]
    assert len(late_steps) <= 3, late_steps
    assert state["last_seq"] == log[-1]["seq"]


def test_a_second_subscriber_keeps_a_request_scoped_job_alive(server_url: str) -> None:
    async def first_events(chunks: AsyncIterator[bytes], parser: SSEParser) -> list[dict[str, Any]]:
        async for chunk in chunks:
            found = [json.loads(m.data) for m in parser.feed(chunk) if m.data]
            if found:
                return found
        raise AssertionError("the stream ended without an event")

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        request = {**SMALL, "num_steps": 3, "seed": 8}
        async with httpx.AsyncClient(timeout=60) as client:
            first = client.stream("POST", f"{server_url}/generate-stream", json=request)
            # Hold the body iterator: an abandoned one is closed when collected, and httpx
            # then closes the connection, which would be the creator leaving too early.
            chunks = (await first.__aenter__()).aiter_raw()
            job_id = (await first_events(chunks, SSEParser()))[0]["job_id"]
            events = f"{server_url}/v1/jobs/{job_id}/events"
            async with client.stream("GET", events) as second:  # its headers: it holds a lease
                await first.__aexit__(None, None, None)  # the creator leaves
                parser, log = SSEParser(), []
                async for chunk in second.aiter_raw():
                    log += [json.loads(m.data) for m in parser.feed(chunk) if m.data]
            return await job_state(client, server_url, job_id), log

    state, log = asyncio.run(scenario())
    assert state["status"] == "completed"
    assert log[-1]["type"] == "complete" and log[-1]["total_segments"] == 3


def test_delete_cancels_a_running_job_and_then_conflicts(server_url: str) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response, list[dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=60) as client:
            job = (await client.post(f"{server_url}/v1/jobs", json=UNBOUNDED)).json()

            async def running() -> bool:
                return (await job_state(client, server_url, job["id"]))["segments_done"] >= 1

            await poll(running)
            deleted = await client.delete(f"{server_url}/v1/jobs/{job['id']}")
            again = await client.delete(f"{server_url}/v1/jobs/{job['id']}")
            log = await read_sse(client, "GET", f"{server_url}/v1/jobs/{job['id']}/events")
            return deleted, again, _events(log)

    deleted, again, log = asyncio.run(scenario())
    assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled"
    assert again.status_code == 409 and again.json()["error"]["param"] == "job_id"
    assert log[-1]["code"] == "cancelled"


# Resume and late join ----------------------------------------------------------------------
def test_resume_with_last_event_id_gets_exactly_the_missing_events(server_url: str) -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            job = (await client.post(f"{server_url}/v1/jobs", json={**SMALL, "seed": 21})).json()
            events = f"{server_url}/v1/jobs/{job['id']}/events"
            first = await read_sse(client, "GET", events, stop=lambda kind, _: kind == "segment")
            last_id = first.events[-1][1]["seq"]
            rest = await read_sse(client, "GET", events, headers={"Last-Event-ID": str(last_id)})
            by_query = await read_sse(client, "GET", f"{events}?from_seq={last_id + 1}")
            whole = await read_sse(client, "GET", events)
            return _events(first), _events(rest), _events(by_query), _events(whole)

    first, rest, by_query, whole = asyncio.run(scenario())
    assert rest[0]["seq"] == first[-1]["seq"] + 1
    assert first + rest == whole, "no gap, no duplicate"
    assert by_query == rest
    assert whole[-1]["type"] == "complete"


def test_bad_resume_points_are_422(server_url: str) -> None:
    job = httpx.post(f"{server_url}/v1/jobs", json={**SMALL, "num_frames": 12}).json()
    events = f"{server_url}/v1/jobs/{job['id']}/events"
    for response, param in (
        (httpx.get(events, headers={"Last-Event-ID": "seven"}), "Last-Event-ID"),
        (httpx.get(f"{events}?from_seq=-3"), "from_seq"),
        (httpx.get(f"{events}?format=xml"), "format"),
    ):
        assert response.status_code == 422
        assert response.json()["error"]["param"] == param


# Slow consumers ----------------------------------------------------------------------------
def test_slow_sse_consumer_is_cut_off_alone_and_resumes(tight: ServerThread) -> None:
    url = tight.url

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            job = (await client.post(f"{url}/v1/jobs", json=UNBOUNDED)).json()
            events = f"{url}/v1/jobs/{job['id']}/events"
            small_window = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
            transport = httpx.AsyncHTTPTransport(socket_options=small_window)
            async with (
                httpx.AsyncClient(transport=transport, timeout=60) as slow,
                slow.stream("GET", events) as response,
            ):
                # A fast subscriber reads on while the slow one reads nothing.
                fast = await read_sse(client, "GET", events, stop=lambda _, e: e["seq"] >= 40)
                parser, cut = SSEParser(), []
                async for chunk in response.aiter_raw():
                    cut += [json.loads(m.data) for m in parser.feed(chunk) if m.data]
            resumed = await read_sse(
                client, "GET", events, headers={"Last-Event-ID": str(cut[-1]["seq"])},
                stop=lambda _, e: e["seq"] >= cut[-1]["resume_from"] + 5,
            )  # fmt: skip
            await client.delete(f"{url}/v1/jobs/{job['id']}")
            return _events(fast), cut, _events(resumed)

    fast, cut, resumed = asyncio.run(scenario())
    assert [e["seq"] for e in fast] == list(range(41)), "the fast subscriber was not slowed"
    final = cut[-1]
    assert final["type"] == "error" and final["code"] == "slow_consumer"
    assert [e["seq"] for e in cut[:-1]] == list(range(final["resume_from"]))
    assert final["resume_from"] < 40
    assert resumed[0]["seq"] == final["resume_from"]
    assert [e["seq"] for e in resumed] == list(range(resumed[0]["seq"], resumed[-1]["seq"] + 1))


def test_slow_websocket_consumer_is_closed_4408_and_resumes(tight: ServerThread) -> None:
    url = tight.url

    async def scenario() -> tuple[int | None, dict[str, Any], list[dict[str, Any]], Any]:
        async with httpx.AsyncClient(timeout=60) as client:
            job = (await client.post(f"{url}/v1/jobs", json=UNBOUNDED)).json()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", tight.port))
            ws_url = url.replace("http://", "ws://") + "/ws"
            got: list[dict[str, Any]] = []
            async with connect(ws_url, sock=sock, max_size=None, max_queue=1) as websocket:
                await websocket.send(json.dumps({"subscribe": job["id"]}))

                # A trained model's 64x64 segments are ~4 kB: far enough ahead to overflow the
                # socket buffers and the 4-event subscriber queue.
                async def far_ahead() -> bool:
                    return (await job_state(client, url, job["id"]))["last_seq"] >= 400

                await poll(far_ahead, timeout_s=120)  # the client read nothing meanwhile
                with contextlib.suppress(ConnectionClosed):  # raised for codes other than 1000
                    async for payload in websocket:
                        got.append(unpack_message(payload))  # type: ignore[arg-type]
                code, reason = websocket.close_code, json.loads(websocket.close_reason or "{}")
            resumed = await read_ws(
                url, {"subscribe": job["id"], "from_seq": reason.get("resume_from", 0)},
                stop=lambda m: len(m) > 0,
            )  # fmt: skip
            await client.delete(f"{url}/v1/jobs/{job['id']}")
            return code, reason, got, resumed

    code, reason, got, resumed = asyncio.run(scenario())
    assert code == 4408
    assert reason["code"] == "slow_consumer"
    assert [m["seq"] for m in got] == list(range(reason["resume_from"]))
    assert resumed.messages[0]["seq"] == reason["resume_from"]


def test_idle_sse_streams_get_keep_alive_comments(tight: ServerThread) -> None:
    async def scenario() -> Any:
        async with httpx.AsyncClient(timeout=60) as client:
            blocker = (await client.post(f"{tight.url}/v1/jobs", json=UNBOUNDED)).json()
            queued = (await client.post(f"{tight.url}/v1/jobs", json=SMALL)).json()
            events = f"{tight.url}/v1/jobs/{queued['id']}/events"
            async with client.stream("GET", events) as response:
                parser = SSEParser()
                async for chunk in response.aiter_raw():
                    parser.feed(chunk)
                    if parser.comments >= 2:
                        break
            state = await job_state(client, tight.url, queued["id"])
            for job in (queued, blocker):
                await client.delete(f"{tight.url}/v1/jobs/{job['id']}")
            return parser, state

    parser, state = asyncio.run(scenario())
    assert parser.comments >= 2 and state["status"] == "queued"


# Queue ------------------------------------------------------------------------------------
def test_priority_then_fifo_and_a_full_queue_is_429(tight: ServerThread) -> None:
    url = tight.url

    async def scenario() -> tuple[list[dict[str, Any]], httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            blocker = (await client.post(f"{url}/v1/jobs", json=UNBOUNDED)).json()

            async def started() -> bool:
                return (await job_state(client, url, blocker["id"]))["status"] == "running"

            await poll(started)
            quick = {**SMALL, "num_frames": 12, "num_steps": 1}
            low = (await client.post(f"{url}/v1/jobs", json={**quick, "priority": 0})).json()
            high_a = (await client.post(f"{url}/v1/jobs", json={**quick, "priority": 5})).json()
            high_b = (await client.post(f"{url}/v1/jobs", json={**quick, "priority": 5})).json()
            full = await client.post(f"{url}/v1/jobs", json=quick)
            await client.delete(f"{url}/v1/jobs/{blocker['id']}")
            states = [await wait_finished(client, url, j["id"]) for j in (low, high_a, high_b)]
            return states, full

    (low, high_a, high_b), full = asyncio.run(scenario())
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    assert all(s["status"] == "completed" for s in (low, high_a, high_b))
    assert high_a["started_at"] < high_b["started_at"] < low["started_at"]


# Shutdown ---------------------------------------------------------------------------------
def test_graceful_shutdown_finishes_or_ends_jobs_with_an_error_event() -> None:
    server = ServerThread({"graceful_timeout_seconds": 1.0, "max_concurrent_jobs": 1}).start()
    url = server.url

    async def scenario() -> tuple[list[Any], list[Any], httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            endless = (await client.post(f"{url}/v1/jobs", json=UNBOUNDED)).json()
            queued = (await client.post(f"{url}/v1/jobs", json=SMALL)).json()
            endless_log = asyncio.create_task(
                read_sse(client, "GET", f"{url}/v1/jobs/{endless['id']}/events")
            )
            queued_log = asyncio.create_task(
                read_sse(client, "GET", f"{url}/v1/jobs/{queued['id']}/events")
            )

            async def producing() -> bool:
                return (await job_state(client, url, endless["id"]))["segments_done"] >= 1

            await poll(producing)
            stopper = threading.Thread(target=server.stop)
            stopper.start()

            async def draining() -> httpx.Response | None:
                health = await client.get(f"{url}/health")
                return health if health.status_code == 503 else None

            health = await poll(draining)
            refused = await client.post(f"{url}/v1/jobs", json=SMALL)
            endless_events, queued_events = await endless_log, await queued_log
            await asyncio.to_thread(stopper.join)
            return _events(endless_events), _events(queued_events), health, refused

    endless_events, queued_events, health, refused = asyncio.run(scenario())
    assert health.json()["status"] == "shutting_down"
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert queued_events[-1]["type"] == "error" and queued_events[-1]["code"] == "shutting_down"
    assert endless_events[-1]["type"] == "error"
    assert endless_events[-1]["code"] == "shutting_down"
    assert any(e["type"] == "segment" for e in endless_events)


def test_late_joiner_of_a_trimmed_backlog_gets_start_then_the_stored_window() -> None:
    with running_server({"max_backlog_bytes": 20_000}) as url:

        async def scenario() -> tuple[list[dict[str, Any]], httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                job = (await client.post(f"{url}/v1/jobs", json=UNBOUNDED)).json()

                async def rolled() -> bool:
                    return (await job_state(client, url, job["id"]))["last_seq"] >= 30

                await poll(rolled)
                events = f"{url}/v1/jobs/{job['id']}/events"
                late = await read_sse(client, "GET", events, stop=lambda _, e: e["seq"] > 30)
                resume = await client.get(events, headers={"Last-Event-ID": "1"})
                await client.delete(f"{url}/v1/jobs/{job['id']}")
                return _events(late), resume

        late, resume = asyncio.run(scenario())
    assert late[0]["type"] == "start" and late[0]["seq"] == 0 and late[0]["init_segment_base64"]
    assert late[1]["seq"] > 1, "the early events rolled out of the 20 kB backlog"
    assert [e["seq"] for e in late[1:]] == list(range(late[1]["seq"], late[-1]["seq"] + 1))
    assert resume.status_code == 410
    error = resume.json()["error"]
    assert error["code"] == "backlog_trimmed" and error["resume_from"] >= late[1]["seq"]
