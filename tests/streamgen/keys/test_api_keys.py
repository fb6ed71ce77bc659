"""API keys against a real server: open mode until a key exists, keys made and revoked with
`streamgen keys` while the server runs, each policy field refused with the field named and
no job made, rate-limit headers and 429s, unfinished-job and daily-quota limits given back
when jobs end, the WebSocket handshake, key ids (never secrets) in the JSON access log,
and two replicas on Redis counting one key's requests together.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from streamgen.cli import main as streamgen_main
from streamgen.keys.usage import utc_day
from tests.redis_server import RedisServer, running_redis
from tests.server import ServerThread
from tests.streamgen.conftest import Lines
from tests.streamgen.stream_reading import poll, wait_finished

SMALL = {"prompt": "a red ball moving left", "size": "64x64", "num_steps": 1, "seed": 3}


def keys_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """Run `streamgen keys --json ARGS` here; its JSON output."""
    capsys.readouterr()
    assert streamgen_main(["keys", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    keys_file = tmp_path / "keys.json"
    server = ServerThread({"keys_file": str(keys_file)}).start()
    try:
        yield server, keys_file
    finally:
        server.stop()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def jobs_made(server: ServerThread) -> int:
    """Jobs the server's (memory) store holds, finished or not."""
    return len(server.call(lambda: list(server.app.extensions["streamgen"].runtime.store.jobs)))


def test_open_until_a_key_exists_then_every_api_call_needs_one(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, keys_file = keyed
    assert httpx.get(f"{server.url}/v1/models").status_code == 200  # open mode
    created = keys_cli(capsys, "--keys-file", str(keys_file), "create", "--name", "ci")
    assert created["id"].startswith("key_") and created["secret"].startswith("sgk_")
    assert created["secret"] not in keys_file.read_text()  # only its hash is stored

    missing = httpx.get(f"{server.url}/v1/models")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["error"]["param"] == "Authorization"
    wrong = httpx.get(f"{server.url}/v1/models", headers=bearer("sgk_nope"))
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")

    secret = created["secret"]
    assert httpx.get(f"{server.url}/v1/models", headers=bearer(secret)).status_code == 200
    assert httpx.get(f"{server.url}/v1/models", headers={"X-API-Key": secret}).status_code == 200
    # a query key is for what cannot set headers (EventSource, WebSocket) only
    assert httpx.get(f"{server.url}/v1/models?api_key={secret}").status_code == 401
    posted = httpx.post(f"{server.url}/v1/jobs?api_key={secret}", json=SMALL)
    assert posted.status_code == 401
    job = httpx.post(f"{server.url}/v1/jobs", json={**SMALL, "num_frames": 8},
                     headers=bearer(secret)).json()  # fmt: skip
    events = httpx.get(f"{server.url}/v1/jobs/{job['id']}/events?api_key={secret}")
    assert events.status_code == 200 and b"event: complete" in events.content
    for open_path in ("/health", "/openapi.json", "/", "/metrics"):
        assert httpx.get(f"{server.url}{open_path}").status_code == 200, open_path

    listed = keys_cli(capsys, "--keys-file", str(keys_file), "list")
    assert [k["id"] for k in listed] == [created["id"]] and "digest" not in listed[0]
    assert keys_cli(capsys, "--keys-file", str(keys_file), "revoke", created["id"])
    # the last key went: nobody gets in (keys stay required) ...
    revoked = httpx.get(f"{server.url}/v1/models", headers=bearer(secret))
    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "invalid_api_key")
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    # ... until the operator opens the server on purpose
    opened = keys_cli(capsys, "--keys-file", str(keys_file), "open", "--yes")
    assert opened == {"deleted": 0, "open": True}
    assert httpx.get(f"{server.url}/v1/models").status_code == 200


def test_a_revoked_key_is_refused_while_others_remain(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, keys_file = keyed
    first = keys_cli(capsys, "--keys-file", str(keys_file), "create")
    second = keys_cli(capsys, "--keys-file", str(keys_file), "create")
    keys_cli(capsys, "--keys-file", str(keys_file), "revoke", first["id"])
    refused = httpx.get(f"{server.url}/v1/models", headers=bearer(first["secret"]))
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_api_key")
    assert httpx.get(f"{server.url}/v1/models", headers=bearer(second["secret"])).is_success


@pytest.mark.parametrize(
    ("change", "param"),
    [({"priority": 5}, "priority"), ({"unbounded": True}, "unbounded"),
     ({"num_frames": 40}, "seconds")],
)  # fmt: skip
def test_each_policy_field_is_refused_by_name_and_makes_no_job(
    keyed: tuple[ServerThread, Path],
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    param: str,
) -> None:
    server, keys_file = keyed
    key = keys_cli(capsys, "--keys-file", str(keys_file), "create", "--max-seconds", "2")
    body = {**SMALL, "num_frames": 8, **change}
    if change.get("unbounded"):
        body.pop("num_frames")
    refused = httpx.post(f"{server.url}/v1/jobs", json=body, headers=bearer(key["secret"]))
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("key_policy", param)
    assert key["id"] in error["message"]
    assert jobs_made(server) == 0


def test_rate_limit_headers_and_429(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, keys_file = keyed
    answers: list[httpx.Response] = []

    def four() -> list[int]:
        key = keys_cli(
            capsys, "--keys-file", str(keys_file), "create", "--requests-per-minute", "3"
        )
        answers[:] = [
            httpx.get(f"{server.url}/v1/models", headers=bearer(key["secret"])) for _ in range(4)
        ]
        return [a.status_code for a in answers]

    assert in_one_minute(four) == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
    last = answers[3]
    assert last.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    assert int(last.headers["X-RateLimit-Reset"]) == int(last.headers["Retry-After"])


def test_unfinished_jobs_and_daily_seconds_are_counted_and_given_back(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, keys_file = keyed
    key = keys_cli(
        capsys, "--keys-file", str(keys_file), "create", "--max-concurrent-jobs", "1",
        "--daily-seconds", "100", "--max-seconds", "0", "--unbounded",
    )  # fmt: skip
    headers = bearer(key["secret"])
    # 128x128 at the default steps: 100 s of video take far longer than the test needs
    endless = {"prompt": "a red ball moving left", "unbounded": True}
    gate = server.app.extensions["streamgen"].runtime.keys

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60, headers=headers) as client:
            # an unbounded job takes what is left of today's quota (100 s) as its cap
            first = await client.post(f"{server.url}/v1/jobs", json=endless)
            assert first.status_code == 202, first.text
            job_id = first.json()["id"]
            second = await client.post(f"{server.url}/v1/jobs", json={**SMALL, "num_frames": 8})
            assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_jobs"
            assert int(second.headers["Retry-After"]) >= 1

            async def made_a_segment() -> bool:
                state = (await client.get(f"{server.url}/v1/jobs/{job_id}")).json()
                return bool(state["segments_done"] >= 1)

            await poll(made_a_segment)
            assert (await client.delete(f"{server.url}/v1/jobs/{job_id}")).status_code == 200
            ended = await wait_finished(client, server.url, job_id)
            made = ended["frames_done"] / 8.0  # fps 8
            # settled: the unused seconds went back (the hook runs right after settling)
            store = server.app.extensions["streamgen"].runtime.store
            day = server.call(lambda: store.get(job_id)).spec.charge.charged_day
            assert day == utc_day(ended["created_at"])
            used = await poll(lambda: _used_if_refunded(server, gate, key["id"], day))
            assert used == pytest.approx(made, abs=1e-6) and 0 < made < 100

            # 100 s never fits once anything was made; 1 s does
            over = await client.post(f"{server.url}/v1/jobs", json={**SMALL, "num_frames": 800})
            assert over.status_code == 429
            assert (over.json()["error"]["code"], over.json()["error"]["param"]) == (
                "quota_exceeded",
                "seconds",
            )
            assert 1 <= int(over.headers["Retry-After"]) <= 86400
            fits = await client.post(f"{server.url}/v1/jobs", json={**SMALL, "num_frames": 8})
            assert fits.status_code == 202, fits.text  # the job slot was given back too
            await wait_finished(client, server.url, fits.json()["id"])

    asyncio.run(main())


async def _used_if_refunded(server: ServerThread, gate: Any, key_id: str, day: int) -> float | None:
    used = server.call(lambda: gate.usage.used(key_id, day))
    return float(used) if used < 100 - 1e-6 else None


def in_one_minute(requests: Callable[[], list[int]]) -> list[int]:
    """`requests()`'s status codes, made within one clock minute (the rate window): run
    again, once, if the minute turned meanwhile."""
    for _ in range(2):
        minute = int(time.time() // 60)
        codes = requests()
        if int(time.time() // 60) == minute:
            return codes
    raise AssertionError("two minute boundaries in two short runs")


def test_the_websocket_handshake_needs_the_key(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, keys_file = keyed
    key = keys_cli(capsys, "--keys-file", str(keys_file), "create")
    ws_url = server.url.replace("http", "ws") + "/ws"

    async def main() -> None:
        # refused after the handshake, so a browser can read why (close code 4401)
        async with websockets.connect(ws_url) as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert "API key" in closed.value.rcvd.reason
        async with websockets.connect(f"{ws_url}?api_key=sgk_wrong") as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert "invalid_api_key" in closed.value.rcvd.reason
        async with websockets.connect(f"{ws_url}?api_key={key['secret']}") as socket:
            await socket.send(json.dumps({**SMALL, "num_frames": 8}))
            first = await socket.recv()
            assert isinstance(first, bytes)  # the start event: the job runs under the key

    asyncio.run(main())


def test_the_access_log_names_the_key_id_never_the_secret(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str], access_lines: Lines
) -> None:
    server, keys_file = keyed
    key = keys_cli(capsys, "--keys-file", str(keys_file), "create")
    httpx.get(f"{server.url}/v1/models", headers={**bearer(key["secret"]),
                                                 "X-Request-Id": "keyed-1"})  # fmt: skip
    httpx.get(f"{server.url}/v1/models",
              headers={"X-API-Key": key["secret"], "X-Request-Id": "keyed-2"})  # fmt: skip
    mine = [line for line in access_lines.lines
            if line.get("request_id") in ("keyed-1", "keyed-2")]  # fmt: skip
    assert len(mine) == 2 and all(line["key_id"] == key["id"] for line in mine)
    assert key["secret"] not in json.dumps(access_lines.lines)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.mark.redis
def test_two_replicas_share_a_keys_rate_limit(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "keys" + secrets.token_hex(4)
    monkeypatch.setenv("STREAMGEN_REDIS_KEY_PREFIX", prefix)
    settings = {"broker": redis_server.url, "redis_key_prefix": prefix}
    a, b = ServerThread(settings).start(), ServerThread(settings).start()
    try:
        key: dict[str, Any] = {}

        def six() -> list[int]:
            key.update(keys_cli(
                capsys, "--broker", redis_server.url, "create", "--requests-per-minute", "4"
            ))  # fmt: skip
            return [
                httpx.get(f"{r.url}/v1/models", headers=bearer(key["secret"])).status_code
                for r in (a, b, a, b, a, b)
            ]

        assert in_one_minute(six) == [200, 200, 200, 200, 429, 429]
        headers = bearer(key["secret"])
        # revoked on one replica's Redis: refused by both at once
        keys_cli(capsys, "--broker", redis_server.url, "revoke", key["id"])
        other = keys_cli(capsys, "--broker", redis_server.url, "create")
        for replica in (a, b):
            gone = httpx.get(f"{replica.url}/v1/models", headers=headers)
            assert gone.status_code == 401
            kept = httpx.get(f"{replica.url}/v1/models", headers=bearer(other["secret"]))
            assert kept.status_code == 200
    finally:
        a.stop()
        b.stop()


def test_concurrent_requests_cannot_pass_the_job_limit(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, keys_file = keyed
    key = keys_cli(
        capsys, "--keys-file", str(keys_file), "create", "--max-concurrent-jobs", "1",
        "--unbounded", "--max-seconds", "0",
    )  # fmt: skip
    endless = {"prompt": "a red ball moving left", "unbounded": True}

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60, headers=bearer(key["secret"])) as client:
            answers = await asyncio.gather(
                *(client.post(f"{server.url}/v1/jobs", json=endless) for _ in range(6))
            )
            codes = sorted(a.status_code for a in answers)
            assert codes == [202, 429, 429, 429, 429, 429]
            made = next(a.json()["id"] for a in answers if a.status_code == 202)
            await client.delete(f"{server.url}/v1/jobs/{made}")

    asyncio.run(main())
    assert jobs_made(server) == 1


def test_a_key_sees_only_its_own_jobs(
    keyed: tuple[ServerThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, keys_file = keyed
    mine = keys_cli(capsys, "--keys-file", str(keys_file), "create")
    theirs = keys_cli(capsys, "--keys-file", str(keys_file), "create")
    body = {"prompt": "a red ball", "seconds": "1", "size": "128x128"}
    video = httpx.post(f"{server.url}/v1/videos", json=body, headers=bearer(mine["secret"]))
    assert video.status_code == 200, video.text
    video_id = video.json()["id"]
    other = bearer(theirs["secret"])
    for method, path in [("GET", f"/v1/videos/{video_id}"), ("GET", f"/v1/jobs/{video_id}"),
                         ("GET", f"/v1/jobs/{video_id}/events"),
                         ("GET", f"/v1/videos/{video_id}/content"),
                         ("DELETE", f"/v1/jobs/{video_id}"),
                         ("DELETE", f"/v1/videos/{video_id}")]:  # fmt: skip
        answer = httpx.request(method, f"{server.url}{path}", headers=other)
        assert answer.status_code == 404, (method, path, answer.status_code)
    assert httpx.get(f"{server.url}/v1/videos", headers=other).json()["data"] == []
    listed = httpx.get(f"{server.url}/v1/videos", headers=bearer(mine["secret"])).json()
    assert [v["id"] for v in listed["data"]] == [video_id]
    assert httpx.get(f"{server.url}/v1/videos/{video_id}",
                     headers=bearer(mine["secret"])).status_code == 200  # fmt: skip


@pytest.mark.redis
def test_keys_answer_503_while_redis_is_down(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "keys" + secrets.token_hex(4)
    monkeypatch.setenv("STREAMGEN_REDIS_KEY_PREFIX", prefix)
    server = ServerThread({"broker": redis_server.url, "redis_key_prefix": prefix}).start()
    try:
        key = keys_cli(capsys, "--broker", redis_server.url, "create")
        assert httpx.get(f"{server.url}/v1/models", headers=bearer(key["secret"])).is_success
        redis_server.kill()
        down = httpx.get(f"{server.url}/v1/models", headers=bearer(key["secret"]), timeout=30)
        assert down.status_code == 503 and down.json()["error"]["code"] == "keys_unavailable"
    finally:
        server.stop()
