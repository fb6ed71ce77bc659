"""Sizes as people ask for them and the Dynamo request's fields, against a real server
(the embedded model: sides in multiples of 16, at most 512x512): the answer says the size
made, a size over the caps is a 422 naming the largest allowed, `/v1/videos` takes `fps`,
`num_frames`, steps, guidance, `negative_prompt`, `seed`, `user` and `response_format`."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.streamgen.stream_reading import decode

# 70x70 is off the embedded model's multiple of 16: it is made as 64x64.
ASKED = {"prompt": "a red ball moving left", "size": "70x70", "seed": 3}
DYNAMO = {"fps": 8, "num_frames": 9, "num_inference_steps": 1, "guidance_scale": 1.0,
          "negative_prompt": "blur", "user": "user-1"}  # fmt: skip


def _made(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_dynamo_request_is_answered_done_with_the_video_in_base64(server_url: str) -> None:
    body = {**ASKED, **DYNAMO, "seconds": 4, "response_format": "b64_json"}
    video = _made(httpx.post(f"{server_url}/v1/videos", json=body, timeout=120))
    assert video["status"] == "completed" and video["progress"] == 100
    assert (video["size"], video["width"], video["height"]) == ("64x64", 64, 64)
    assert video["seconds"] == "1.125"  # num_frames (9 at 8 fps) wins over seconds
    assert video["inference_time_s"] > 0
    frames = decode(base64.b64decode(video["data"][0]["b64_json"]))
    assert len(frames) == 9 and (frames[0].width, frames[0].height) == (64, 64)
    # The same video stays listed, with its making time.
    again = _made(httpx.get(f"{server_url}/v1/videos/{video['id']}"))
    assert again["inference_time_s"] == video["inference_time_s"] and again["data"] is None


def test_a_dynamo_request_for_a_url_links_the_finished_content(server_url: str) -> None:
    extension = {name: value for name, value in DYNAMO.items() if name != "user"}
    body = {**ASKED, "response_format": "url", "user": "user-1", "nvext": extension}
    video = _made(httpx.post(f"{server_url}/v1/videos", json=body, timeout=120))
    content = httpx.get(video["data"][0]["url"])
    assert content.status_code == 200 and len(decode(content.content)) == 9


def test_a_queued_video_says_the_size_it_makes(server_url: str) -> None:
    video = _made(httpx.post(f"{server_url}/v1/videos", json={**ASKED, "seconds": "1"}))
    assert video["status"] in ("queued", "in_progress")
    assert (video["size"], video["width"], video["height"]) == ("64x64", 64, 64)
    assert video["inference_time_s"] is None and video["data"] is None
    httpx.delete(f"{server_url}/v1/videos/{video['id']}", timeout=60)


def test_generate_reports_the_size_made_and_its_inference_time(server_url: str) -> None:
    body = {**ASKED, "num_frames": 9, "num_steps": 1, "response_format": "b64_json"}
    result = _made(httpx.post(f"{server_url}/generate", json=body, timeout=120))
    assert (result["width"], result["height"]) == (64, 64)
    assert result["inference_time_s"] > 0
    job = _made(httpx.get(f"{server_url}/v1/jobs/{result['id']}"))
    assert (job["width"], job["height"]) == (64, 64)


def test_a_size_over_the_caps_is_a_422_naming_the_largest_allowed(server_url: str) -> None:
    for path, param in (("/v1/videos", "size"), ("/v1/jobs", "width")):
        response = httpx.post(f"{server_url}{path}", json={**ASKED, "size": "720p"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["param"] == param
        assert "512x512" in error["message"] and "512x288" in error["message"]


def test_models_say_their_sizes(server_url: str) -> None:
    (card,) = httpx.get(f"{server_url}/v1/models").json()["data"]
    sizes = card["details"]["sizes"]
    assert (sizes["multiple"], sizes["max_width"], sizes["max_height"]) == (16, 512, 512)
    assert sizes["presets"]["720p"] == "1280x720"
