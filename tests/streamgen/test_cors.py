"""Origins: same-origin pages and clients with no `Origin` use the server; pages from other
origins only when `cors_allowed_origins` lists them (CORS headers, preflights, `/ws`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.server import running_server

APP = "https://app.example"
ELSEWHERE = "https://elsewhere.example"
JOB = {"prompt": "a red ball", "seconds": 0.5}


@pytest.fixture(scope="module")
def listed_url() -> Iterator[str]:
    with running_server({"cors_allowed_origins": f"{APP}, https://other.example"}) as url:
        yield url


def _forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["param"] == "Origin"
    assert "cors_allowed_origins" in response.json()["error"]["message"]
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_page_elsewhere_cannot_start_or_cancel_jobs(server_url: str) -> None:
    foreign = {"Origin": ELSEWHERE}
    _forbidden(httpx.post(f"{server_url}/v1/jobs", json=JOB, headers=foreign))
    form = httpx.post(f"{server_url}/generate", data={"prompt": "a red ball"}, headers=foreign)
    _forbidden(form)  # a form post needs no preflight: the origin check is what stops it
    job = httpx.post(f"{server_url}/v1/jobs", json=JOB).json()  # no Origin: not a browser
    _forbidden(httpx.delete(f"{server_url}/v1/jobs/{job['id']}", headers=foreign))
    read = httpx.get(f"{server_url}/v1/jobs/{job['id']}", headers=foreign)
    assert read.status_code == 200  # a read; without CORS headers the page cannot see it
    assert "Access-Control-Allow-Origin" not in read.headers


def test_the_servers_own_pages_need_no_listing(server_url: str) -> None:
    own = {"Origin": server_url}
    created = httpx.post(f"{server_url}/v1/jobs", json=JOB, headers=own)
    assert created.status_code == 202, created.text
    assert "Access-Control-Allow-Origin" not in created.headers  # same origin: none needed


def test_a_listed_origin_gets_preflights_and_cors_headers(listed_url: str) -> None:
    preflight = httpx.options(
        f"{listed_url}/v1/jobs",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "content-type" in allowed and "authorization" in allowed
    assert "Origin" in preflight.headers["Vary"]

    created = httpx.post(f"{listed_url}/v1/jobs", json=JOB, headers={"Origin": APP})
    assert created.status_code == 202, created.text
    assert created.headers["Access-Control-Allow-Origin"] == APP
    assert "X-Job-Id" in created.headers["Access-Control-Expose-Headers"]

    refused = httpx.options(
        f"{listed_url}/v1/jobs",
        headers={"Origin": ELSEWHERE, "Access-Control-Request-Method": "POST"},
    )
    _forbidden(refused)
    _forbidden(httpx.post(f"{listed_url}/v1/jobs", json=JOB, headers={"Origin": ELSEWHERE}))


def test_any_origin_with_a_star() -> None:
    with running_server({"cors_allowed_origins": "*"}) as url:
        created = httpx.post(f"{url}/v1/jobs", json=JOB, headers={"Origin": ELSEWHERE})
        assert created.status_code == 202, created.text
        assert created.headers["Access-Control-Allow-Origin"] == ELSEWHERE


async def _ws_subscribe(url: str, origin: str | None) -> int:
    """Open /ws with `origin` and follow a job that does not exist: its close code."""
    ws_url = url.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws_url, origin=origin) as socket:
        await socket.send(json.dumps({"subscribe": "job_missing"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_the_websocket_checks_the_origin(listed_url: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(_ws_subscribe(listed_url, ELSEWHERE))
    assert refused.value.response.status_code == 403
    # Accepted (the job is unknown: 4404) for a listed origin, the server's own, or none.
    assert asyncio.run(_ws_subscribe(listed_url, APP)) == 4404
    assert asyncio.run(_ws_subscribe(listed_url, listed_url)) == 4404
    assert asyncio.run(_ws_subscribe(listed_url, None)) == 4404
