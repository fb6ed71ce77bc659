"""Hostile and malformed input against a real `streamgen serve` process: each gets a clear
4xx naming what is wrong, no job is left behind, and pictures cost the server little memory
(its peak RSS is reset before each request and read after it)."""

from __future__ import annotations

import base64
import io
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests.redis_server import free_port
from tests.scaleout.cluster import FAST, Replica
from tests.segment_pipeline.test_media import png_claiming

MiB = 1024 * 1024
START_TIMEOUT_S = 120.0
# Caps this server runs with, so the files that cross them stay small to make.
MAX_INPUT_FRAMES = 200


class Server:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.http = httpx.Client(base_url=replica.url, timeout=60.0)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.replica.popen.pid}/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        for line in Path(f"/proc/{self.replica.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.replica.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS in /proc")


@pytest.fixture(scope="module")
def isolated() -> Iterator[Server]:
    """A server in a process of its own: its memory is measured alone."""
    env = {**FAST, "STREAMGEN_MAX_INPUT_FRAMES": str(MAX_INPUT_FRAMES)}
    with tempfile.TemporaryDirectory(prefix="streamgen-hostile-") as logs:
        replica = Replica("hostile", env, Path(logs), free_port())
        try:
            _wait_healthy(replica, START_TIMEOUT_S)
            yield Server(replica)
        finally:
            replica.stop()


def _wait_healthy(replica: Replica, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not replica.healthy():
        if not replica.alive:
            raise RuntimeError(f"the server exited:\n{replica.log()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not start:\n{replica.log()}")
        time.sleep(0.1)  # polling a deadline, not synchronising


def _error(response: httpx.Response, status: int, param: str | None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert not re.search(r"\b0x[0-9a-f]+", error["message"]), error  # no memory addresses
    return str(error["message"])


def flat_video(width: int, height: int, frames: int) -> str:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "51", "g": "25"}
        for i in range(frames):
            pixels = np.full((height, width, 3), i % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return base64.b64encode(out.getvalue()).decode()


def test_a_seed_past_64_bits_is_refused_and_leaves_no_job(isolated: Server) -> None:
    for _ in range(70):  # more than max_queued_jobs (64): none of them may hold a place
        response = isolated.http.post("/v1/jobs", json={"prompt": "a red ball", "seed": 2**64})
        assert "less than or equal to" in _error(response, 422, "seed")
    assert isolated.http.get("/health").json()["queue_depth"] == 0
    job = isolated.http.post("/v1/jobs", json={"prompt": "a red ball", "seconds": 0.5})
    assert job.status_code == 202, job.text
    largest = isolated.http.post(
        "/v1/jobs", json={"prompt": "a red ball", "seconds": 0.5, "seed": 2**63 - 1}
    )
    assert largest.status_code == 202, largest.text
    assert largest.json()["seed"] == 2**63 - 1


@pytest.mark.parametrize("field", ["guidance_scale", "fps", "seconds", "audio_scale"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(isolated: Server, field: str, literal: str) -> None:
    body = f'{{"prompt": "a red ball", "{field}": {literal}}}'
    response = isolated.http.post(
        "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
    )
    assert "finite" in _error(response, 422, field)


def test_deeply_nested_json_is_a_400(isolated: Server) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    response = isolated.http.post(
        "/generate-stream", content=body, headers={"Content-Type": "application/json"}
    )
    assert "nests too deeply" in _error(response, 400, None)


def test_a_text_plain_body_is_refused(isolated: Server) -> None:
    """A page on another site can send text/plain without a CORS preflight."""
    response = isolated.http.post(
        "/v1/jobs", content=b'{"prompt": "a red ball"}', headers={"Content-Type": "text/plain"}
    )
    assert "application/json" in _error(response, 415, None)


@pytest.mark.parametrize("side", [12_000, 20_000])
def test_an_image_claiming_a_huge_picture_costs_nothing(isolated: Server, side: int) -> None:
    image = base64.b64encode(png_claiming(side, side)).decode()
    before = isolated.rss_mib()
    isolated.reset_peak()
    response = isolated.http.post(
        "/v1/jobs", json={"prompt": "a red ball", "reference_image": image}
    )
    assert "cap" in _error(response, 422, "reference_image")
    assert isolated.peak_mib() - before < 50  # decoding it would take 432 MB or more


def test_an_unreadable_image_names_the_field(isolated: Server) -> None:
    image = base64.b64encode(b"certainly not an image").decode()
    response = isolated.http.post(
        "/v1/jobs", json={"prompt": "a red ball", "reference_image": image}
    )
    assert "not a readable image" in _error(response, 422, "reference_image")


def test_only_the_end_of_a_video_to_extend_is_kept(isolated: Server) -> None:
    video = flat_video(640, 640, 150)  # 184 MB as RGB frames
    before = isolated.rss_mib()
    isolated.reset_peak()
    response = isolated.http.post(
        "/v1/jobs", json={"prompt": "a red ball", "seconds": 0.5, "extend_video": video}
    )
    assert response.status_code == 202, response.text
    assert isolated.peak_mib() - before < 80


def test_a_video_over_the_frame_cap_is_refused(isolated: Server) -> None:
    video = flat_video(64, 64, MAX_INPUT_FRAMES + 10)
    response = isolated.http.post("/v1/jobs", json={"prompt": "a red ball", "extend_video": video})
    message = _error(response, 422, "extend_video")
    assert f"cap is {MAX_INPUT_FRAMES}" in message or f"than {MAX_INPUT_FRAMES}" in message


def _finished_job(isolated: Server) -> str:
    job = isolated.http.post("/v1/jobs", json={"prompt": "a red ball", "seconds": 1}).json()
    with isolated.http.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
        for _ in events.iter_bytes():
            pass
    return str(job["id"])


def test_suffix_byte_ranges_on_both_mp4_endpoints(isolated: Server) -> None:
    job_id = _finished_job(isolated)
    whole = isolated.http.get(f"/v1/jobs/{job_id}/video.mp4").content
    for path in (f"/v1/jobs/{job_id}/video.mp4", f"/v1/videos/{job_id}/content"):
        tail = isolated.http.get(path, headers={"Range": "bytes=-100"})
        assert tail.status_code == 206, tail.text
        assert tail.content == whole[-100:]
        assert (
            tail.headers["Content-Range"]
            == f"bytes {len(whole) - 100}-{len(whole) - 1}/{len(whole)}"
        )
        everything = isolated.http.get(path, headers={"Range": f"bytes=-{len(whole) * 2}"})
        assert everything.status_code == 206
        assert everything.content == whole
        past = isolated.http.get(path, headers={"Range": f"bytes={len(whole) + 10}-"})
        assert past.status_code == 416
        assert past.headers["Content-Range"] == f"bytes */{len(whole)}"


def test_resume_points_past_64_bits_or_past_the_end(isolated: Server) -> None:
    job_id = _finished_job(isolated)
    events = f"/v1/jobs/{job_id}/events"
    _error(isolated.http.get(events, params={"from_seq": str(2**63)}), 422, "from_seq")
    _error(isolated.http.get(events, headers={"Last-Event-ID": str(2**63)}), 422, "Last-Event-ID")
    _error(isolated.http.get(events, params={"from_seq": "9" * 5000}), 422, "from_seq")
    last_seq = isolated.http.get(f"/v1/jobs/{job_id}").json()["last_seq"]
    past = isolated.http.get(events, params={"from_seq": str(last_seq + 2)})
    assert "past" in _error(past, 422, "from_seq")
    at_end = isolated.http.get(events, params={"from_seq": str(last_seq + 1)})
    assert at_end.status_code == 200  # nothing left to send; the stream ends


def test_a_resume_point_past_a_running_job_is_refused_at_once(isolated: Server) -> None:
    job = isolated.http.post("/v1/jobs", json={"prompt": "a red ball", "unbounded": True}).json()
    try:
        past = isolated.http.get(
            f"/v1/jobs/{job['id']}/events", params={"from_seq": "100000"}, timeout=10.0
        )
        assert "past" in _error(past, 422, "from_seq")
    finally:
        isolated.http.delete(f"/v1/jobs/{job['id']}")


def test_models_do_not_show_where_the_server_keeps_them(isolated: Server) -> None:
    text = isolated.http.get("/v1/models").text
    assert str(Path(__file__).resolve().parents[2]) not in text
    assert (
        isolated.http.get("/v1/models").json()["data"][0]["details"]["weights"] == "streamgen-tiny"
    )
