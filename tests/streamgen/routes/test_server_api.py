"""The HTTP surface of a real server: errors as JSON with the right status and param,
health, models, OpenAPI, the player's static files, WebSocket errors and cancel, and the
OpenAI-style /v1/videos."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamgen.streams.ws import unpack_message
from tests.server import ServerThread
from tests.streamgen.stream_reading import SMALL, decode, job_state, poll, wait_finished

GENERATING = ["/generate-stream", "/generate-stream-chunked", "/generate", "/v1/jobs"]
UNBOUNDED = {"prompt": "a ball", "size": "64x64", "unbounded": True, "num_steps": 1}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with a 10 kB body cap and a static/ folder of its own."""
    static = tmp_path_factory.mktemp("static")
    (static / "index.html").write_text("<!doctype html><title>player</title>")
    (static / "player.js").write_text("export const ok = 1;")
    server = ServerThread({"max_body_bytes": 10_000, "static_dir": str(static)}).start()
    yield server
    server.stop()


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"code", "message", "param"}, body
    return dict(body["error"])


# Bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", GENERATING)
def test_malformed_bodies_are_400(server_url: str, path: str) -> None:
    for content in (b"{not json", b"", b'["a list"]', "\u00ff".encode("latin-1")):
        error = _error(httpx.post(f"{server_url}{path}", content=content), 400)
        assert error["code"] == "malformed_request"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"size": "1280x720"}, "width"),  # over the embedded model's 512x512
        ({"size": "64x1792"}, "height"),
        ({"num_steps": 0}, "num_inference_steps"),
        ({"model": "another-model"}, "model"),
        ({"colour": "red"}, "colour"),
        ({"seconds": 2}, "num_frames"),
        ({"prompt": "   "}, "prompt"),
        ({"fps": -1}, "fps"),
        ({"segment_frames": 40}, "segment_frames"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(server_url: str, change: dict, param: str) -> None:
    for path in GENERATING:
        error = _error(httpx.post(f"{server_url}{path}", json={**SMALL, **change}), 422)
        assert error["param"] == param, (path, error)


def test_oversized_bodies_are_413(small: ServerThread) -> None:
    body = {**SMALL, "reference_image": "A" * 20_000}
    for path in GENERATING:
        assert _error(httpx.post(f"{small.url}{path}", json=body), 413)["code"] == (
            "payload_too_large"
        )


def test_unknown_routes_jobs_and_methods(server_url: str) -> None:
    assert _error(httpx.get(f"{server_url}/no/such/route"), 404)["code"] == "not_found"
    for method, suffix in (
        ("GET", ""),
        ("DELETE", ""),
        ("GET", "/events"),
        ("GET", "/video.mp4"),
    ):
        response = httpx.request(method, f"{server_url}/v1/jobs/job_missing{suffix}")
        error = _error(response, 404)
        assert error["code"] == "job_not_found" and error["param"] == "job_id"
    assert _error(httpx.get(f"{server_url}/v1/videos/job_missing"), 404)["param"] == "job_id"
    wrong = httpx.get(f"{server_url}/generate-stream")
    assert _error(wrong, 405)["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


# Service descriptions ------------------------------------------------------------------------
def test_health_and_models(server_url: str) -> None:
    health = httpx.get(f"{server_url}/health").json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert health["streaming_supported"] is True and health["model"] == "streamgen-tiny"
    assert isinstance(health["queue_depth"], int) and health["version"]
    models = httpx.get(f"{server_url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == health["model"]
    assert models["data"][0]["details"]["defaults"]["fps"] == 8.0


def test_openapi_describes_every_route_and_resolves_its_refs(server_url: str) -> None:
    doc = httpx.get(f"{server_url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path, method in (
        ("/generate-stream", "post"),
        ("/generate-stream-chunked", "post"),
        ("/generate", "post"),
        ("/v1/jobs", "post"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/v1/jobs/{job_id}/events", "get"),
        ("/v1/jobs/{job_id}/video.mp4", "get"),
        ("/v1/videos", "post"),
        ("/v1/videos/{video_id}/content", "get"),
        ("/health", "get"),
    ):
        assert method in doc["paths"][path], path
    body = doc["paths"]["/generate-stream"]["post"]["requestBody"]["content"]["application/json"]
    schema = doc["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert {"prompt", "size", "num_frames", "unbounded", "priority"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    fields = schema["properties"]  # the real constraints, the server's caps as maxima
    assert fields["width"]["maximum"] == 1920 and fields["width"]["minimum"] == 2
    assert fields["num_inference_steps"]["maximum"] == 200
    assert fields["prompt"]["maxLength"] == 2000 and fields["prompt"]["minLength"] == 1
    assert fields["fps"]["minimum"] == 1 and fields["fps"]["maximum"] == 60
    assert fields["seed"]["anyOf"][0]["maximum"] == 2**63 - 1
    assert fields["priority"]["minimum"] == -100 and fields["priority"]["maximum"] == 100
    assert "pattern" in fields["size"]
    refs = {v for v in _walk(doc) if isinstance(v, str) and v.startswith("#/components/schemas/")}
    assert refs and all(ref.rsplit("/", 1)[1] in doc["components"]["schemas"] for ref in refs)


def _walk(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def test_player_and_static_files(small: ServerThread) -> None:
    index = httpx.get(f"{small.url}/")
    assert index.status_code == 200 and "<title>player</title>" in index.text
    assert index.headers["content-type"].startswith("text/html")
    script = httpx.get(f"{small.url}/static/player.js")
    assert script.status_code == 200 and script.text == "export const ok = 1;"
    _error(httpx.get(f"{small.url}/static/missing.js"), 404)
    _error(httpx.get(f"{small.url}/static/..%2F..%2Fetc%2Fpasswd"), 404)


def test_missing_player_is_404_json() -> None:
    with_no_player = ServerThread({"static_dir": "/nonexistent/static"}).start()
    try:
        assert "player" in _error(httpx.get(f"{with_no_player.url}/"), 404)["message"]
    finally:
        with_no_player.stop()


# WebSocket -------------------------------------------------------------------------------
async def _ws_close(url: str, first: str) -> tuple[int | None, dict[str, Any]]:
    async with connect(url.replace("http://", "ws://") + "/ws") as websocket:
        await websocket.send(first)
        with contextlib.suppress(ConnectionClosed):
            async for _ in websocket:
                pass
        return websocket.close_code, json.loads(websocket.close_reason or "{}")


def test_websocket_request_errors_close_with_their_codes(server_url: str) -> None:
    cases = [
        ("{not json", 1008, "malformed_request", None),
        (json.dumps({**SMALL, "size": "1280x720"}), 1008, "invalid_request", "width"),
        (json.dumps({"subscribe": "job_missing"}), 4404, "job_not_found", "job_id"),
        (json.dumps({"cancel": True}), 1008, "conflict", "cancel"),
    ]
    for first, code, error_code, param in cases:
        close_code, reason = asyncio.run(_ws_close(server_url, first))
        assert close_code == code, first
        assert reason["code"] == error_code and reason["param"] == param


def test_websocket_cancel(server_url: str) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int | None, dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        async with connect(server_url.replace("http://", "ws://") + "/ws") as websocket:
            await websocket.send(json.dumps(UNBOUNDED))
            async for payload in websocket:
                messages.append(unpack_message(payload))  # type: ignore[arg-type]
                if messages[-1]["type"] == "segment" and len(messages) < 100:
                    await websocket.send(json.dumps({"cancel": True}))
            return messages, websocket.close_code, json.loads(websocket.close_reason or "{}")

    messages, code, reason = asyncio.run(scenario())
    assert code == 1000 and reason["code"] == "cancelled"
    assert messages[-1]["type"] == "error" and messages[-1]["data"]["code"] == "cancelled"
    state = httpx.get(f"{server_url}/v1/jobs/{messages[0]['job_id']}").json()
    assert state["status"] == "cancelled"


# OpenAI-style videos -----------------------------------------------------------------------
def test_videos_api(small: ServerThread) -> None:
    url = small.url

    async def scenario() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=60) as client:
            blocker = (await client.post(f"{url}/v1/jobs", json=UNBOUNDED)).json()
            created = await client.post(
                f"{url}/v1/videos", json={"model": "streamgen-tiny", "prompt": "a red ball",
                                          "seconds": "3", "size": "64x64"}
            )  # fmt: skip
            video = created.json()
            early = await client.get(f"{url}/v1/videos/{video['id']}/content")
            await client.delete(f"{url}/v1/jobs/{blocker['id']}")

            async def completed() -> dict[str, Any] | None:
                state = (await client.get(f"{url}/v1/videos/{video['id']}")).json()
                return state if state["status"] == "completed" else None

            done = await poll(completed)
            content = await client.get(f"{url}/v1/videos/{video['id']}/content")
            bad = await client.post(f"{url}/v1/videos", json={"prompt": "x", "seconds": "four"})
            return {
                "created": created,
                "early": early,
                "done": done,
                "content": content,
                "bad": bad,
            }

    result = asyncio.run(scenario())
    created = result["created"].json()
    assert result["created"].status_code == 200
    assert created["object"] == "video" and created["status"] == "queued"
    assert created["seconds"] == "3" and created["size"] == "64x64" and created["progress"] == 0
    early = _error(result["early"], 409)
    assert early["code"] == "video_not_ready" and "/video.mp4" in early["message"]
    assert result["done"]["progress"] == 100 and result["done"]["completed_at"] is not None
    assert len(decode(result["content"].content)) == 24
    assert _error(result["bad"], 422)["param"] == "seconds"


def test_job_state_reports_progress(server_url: str) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            job = (await client.post(f"{server_url}/v1/jobs", json=SMALL)).json()

            async def has_progress() -> dict[str, Any] | None:
                state = await job_state(client, server_url, job["id"])
                return state if state["progress"] else None

            during = await poll(has_progress)
            return during, await wait_finished(client, server_url, job["id"])

    during, after = asyncio.run(scenario())
    assert during["progress"]["total_steps"] == 2
    assert after["status"] == "completed" and after["started_at"] >= after["created_at"]
    assert after["finished_at"] >= after["started_at"] and after["last_seq"] == 3 * 3 + 1
