"""A request is admitted once and resolved once on its way to a job, whichever route it
takes; a remix is the source's resolved request with a new prompt; multipart files reach
the media readers as their bytes."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from segment_pipeline import ResolvedRequest
from tests.server import ServerThread
from tests.streamgen.stream_reading import SMALL

QUICK = {**SMALL, "num_frames": 12, "num_steps": 1}


class Counted:
    """The server's `JobManager.admit`, counting its calls (it still does the work)."""

    def __init__(self, server: ServerThread) -> None:
        self.manager = server.app.extensions["streamgen"].manager
        self._admit = self.manager.admit
        self.calls = 0
        self.manager.admit = self._counting

    async def _counting(self, model: str | None, *, live: bool = False) -> None:
        self.calls += 1
        await self._admit(model, live=live)


SERVER_SETTINGS: dict[str, object] = {}  # a server of its own: its admissions are counted


@pytest.fixture(scope="module")
def served(server: ServerThread) -> tuple[ServerThread, Counted]:
    return server, Counted(server)


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _request_of(server: ServerThread, job_id: str) -> ResolvedRequest:
    manager = server.app.extensions["streamgen"].manager
    request: ResolvedRequest = server.call(manager.get, job_id).spec.request
    return request


def test_every_submitting_route_admits_its_request_once(
    served: tuple[ServerThread, Counted],
) -> None:
    server, admits = served
    png = _png(64, 64)
    posts: list[tuple[str, dict[str, Any]]] = [
        ("/v1/jobs", {"json": QUICK}),
        ("/generate", {"json": QUICK}),
        ("/v1/videos", {"json": {"prompt": "a red ball", "size": "64x64", "seconds": "1"}}),
        ("/v1/videos", {"data": {"prompt": "a red ball", "size": "64x64", "seconds": "1"},
                        "files": {"input_reference": ("ref.png", png, "image/png")}}),
    ]  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for path, body in posts:
            admits.calls = 0
            response = client.post(path, **body)
            assert response.status_code in (200, 202), (path, response.text)
            assert admits.calls == 1, (path, admits.calls)
        admits.calls = 0
        source = client.post("/v1/jobs", json=QUICK).json()["id"]
        admits.calls = 0
        remix = client.post(f"/v1/videos/{source}/remix", json={"prompt": "a green ball"})
        assert remix.status_code == 200, remix.text
        assert admits.calls == 1


def test_a_remix_keeps_every_resolved_setting_of_its_source(
    served: tuple[ServerThread, Counted],
) -> None:
    server, _ = served
    settings = {**QUICK, "audio_scale": 0.25, "guidance_scale": 2.5, "negative_prompt": "blur",
                "fps": 12, "segment_frames": 8, "overlap_frames": 3, "seed": 99}  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=60) as client:
        source_id = client.post("/v1/jobs", json=settings).json()["id"]
        remix = client.post(f"/v1/videos/{source_id}/remix", json={"prompt": "a green ball"})
    assert remix.status_code == 200, remix.text
    source, remixed = _request_of(server, source_id), _request_of(server, remix.json()["id"])
    assert remixed.audio_scale == 0.25
    assert remixed == dataclasses.replace(source, prompt="a green ball")


def test_a_remix_prompt_is_checked(served: tuple[ServerThread, Counted]) -> None:
    server, _ = served
    with httpx.Client(base_url=server.url, timeout=60) as client:
        source_id = client.post("/v1/jobs", json=QUICK).json()["id"]
        remix = client.post(f"/v1/videos/{source_id}/remix", json={"prompt": "  "})
    assert remix.status_code == 422
    assert remix.json()["error"]["param"] == "prompt"


def test_a_full_queue_is_429_before_any_media_are_decoded() -> None:
    server = ServerThread({"max_queued_jobs": 0}).start()
    try:
        body = {**QUICK, "extend_video": "not base64 at all!"}  # decoding it would be a 422
        response = httpx.post(f"{server.url}/v1/jobs", json=body, timeout=60)
    finally:
        server.stop()
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "queue_full"
