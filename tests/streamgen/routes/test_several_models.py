"""Several models in one server: the embedded model and a tiny random LTX-Video checkpoint
(`--model ltx=DIR`, recognised by its model_index.json); the request's `model` chooses."""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import httpx
import pytest

from tests.segment_pipeline.backends.ltx_tiny import build_tiny_ltx
from tests.server import ServerThread

LTX_REQUEST = {
    "prompt": "a red ball moving left",
    "model": "ltx",
    "width": 32,
    "height": 32,
    "num_frames": 17,
    "segment_frames": 9,
    "overlap_frames": 1,
    "num_inference_steps": 2,
    "seed": 3,
    "response_format": "mp4",
}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    ltx_dir = build_tiny_ltx(tmp_path_factory.mktemp("models") / "tiny-ltx")
    thread = ServerThread({"models": f"ltx={ltx_dir}", "calibrate_when_idle": False}).start()
    yield thread
    thread.stop()


def frames_of(mp4: bytes) -> tuple[int, int, int]:
    """(frames, width, height) of an MP4, decoded."""
    with av.open(io.BytesIO(mp4)) as container:
        frames = list(container.decode(video=0))
    return len(frames), frames[0].width, frames[0].height


def test_models_lists_both_and_loads_the_second_on_first_use(two_models: ServerThread) -> None:
    def cards() -> dict[str, dict]:
        listed = httpx.get(f"{two_models.url}/v1/models").json()["data"]
        return {card["id"]: card["details"] for card in listed}

    before = cards()
    default = httpx.get(f"{two_models.url}/health").json()["model"]
    assert list(before) == [default, "ltx"]
    assert before[default]["loaded"] and before[default]["default"]
    assert before["ltx"] == {"id": "ltx", "backend": "ltx", "loaded": False, "default": False}
    made = httpx.post(f"{two_models.url}/generate", json=LTX_REQUEST, timeout=120)
    assert made.status_code == 200, made.text
    after = cards()["ltx"]
    assert after["loaded"] and after["backend"] == "ltx"
    assert after["modes"] == ["t2v", "i2v", "extend"] and after["sizes"]["multiple"] == 32
    assert after["frames_per_window"] == after["defaults"]["segment_frames"]


def test_the_request_model_chooses_which_model_makes_it(two_models: ServerThread) -> None:
    ltx = httpx.post(f"{two_models.url}/generate", json=LTX_REQUEST, timeout=120)
    assert ltx.status_code == 200, ltx.text
    assert frames_of(ltx.content) == (17, 32, 32)  # two LTX windows of 9, overlapping by 1
    embedded = httpx.post(
        f"{two_models.url}/generate",
        json={"prompt": "a red ball", "num_frames": 12, "response_format": "mp4"},
        timeout=120,
    )
    assert embedded.status_code == 200, embedded.text
    count, width, height = frames_of(embedded.content)
    assert count == 12 and (width, height) != (32, 32)  # the embedded model's own size


def test_a_model_not_served_is_a_422_naming_model(two_models: ServerThread) -> None:
    reply = httpx.post(f"{two_models.url}/v1/jobs", json={"prompt": "x", "model": "wan"})
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["param"] == "model" and "ltx" in error["message"]


def test_a_job_records_the_model_it_ran_on(two_models: ServerThread) -> None:
    request = {key: value for key, value in LTX_REQUEST.items() if key != "response_format"}
    job = httpx.post(f"{two_models.url}/v1/jobs", json=request).json()
    assert job["model"] == "ltx"
    assert httpx.get(f"{two_models.url}/v1/jobs/{job['id']}").json()["model"] == "ltx"
