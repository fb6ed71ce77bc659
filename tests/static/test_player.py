"""The browser player at `/`, in headless Chromium, against a real streamgen server.

Each job is small (128x128, 8 s at 8 fps = 8 segments, 3 steps) but slow enough on this CPU
that playback is checked while the job is still generating: the page's video time and its
decoded frame count must grow before the last segment has arrived.
"""

from __future__ import annotations

import asyncio
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import httpx
import msgpack
import pytest

from streamgen.keys import FileKeyStore, KeyPolicy, new_key
from tests.server import ServerThread

pytestmark = pytest.mark.browser

JOB = {"seconds": 8, "width": 128, "height": 128, "num_inference_steps": 3}
FRAMES = 64  # 8 s at the embedded model's 8 fps
WAIT_MS = 90_000  # generous: the machine is shared

# Everything a test looks at, in one snapshot (so conditions on it are atomic).
SNAPSHOT_JS = """() => {
  const root = document.getElementById("player");
  const video = document.getElementById("video");
  const shown = (id) => {
    const el = document.getElementById(id);
    return el.hidden ? null : el.textContent;
  };
  return {
    state: root.dataset.state,
    jobId: root.dataset.jobId,
    transport: root.dataset.transport,
    received: Number(root.dataset.segmentsReceived),
    total: root.dataset.totalSegments === "" ? null : Number(root.dataset.totalSegments),
    time: video.currentTime,
    frames: video.getVideoPlaybackQuality().totalVideoFrames,
    error: shown("error"),
    download: shown("download"),
    timeline: [...document.querySelectorAll("#timeline .seg")].map(
      (b) => [b.className, b.textContent]),
  };
}"""


def snapshot(page: Any) -> dict[str, Any]:
    return page.evaluate(SNAPSHOT_JS)


def wait_for(page: Any, condition: str, arg: Any = None) -> dict[str, Any]:
    """Poll `condition` (a JS expression over `s`, the snapshot, and `arg`) until it holds;
    returns the snapshot that satisfied it."""
    handle = page.wait_for_function(
        f"""(arg) => {{ const s = ({SNAPSHOT_JS})(); return ({condition}) ? s : null; }}""",
        arg=arg,
        timeout=WAIT_MS,
        polling=50,
    )
    return handle.json_value()


def fill_and_start(page: Any, transport: str, **fields: Any) -> None:
    page.fill("textarea[name=prompt]", "a paper boat on a rainy street")
    for name, value in {**JOB, **fields}.items():
        if name == "unbounded":
            page.check("input[name=unbounded]")
        else:
            page.fill(f"input[name={name}]", str(value))
    page.select_option("select[name=transport]", transport)
    page.click("#generate")


def wait_playing_while_generating(page: Any) -> dict[str, Any]:
    """Playback starts and then moves on, both before the job's last segment arrived."""
    first = wait_for(page, "s.received >= 1 && s.received < s.total && s.time > 0 && s.frames > 0")
    later = wait_for(
        page,
        "s.received < s.total && s.time > arg.time && s.frames > arg.frames",
        {"time": first["time"], "frames": first["frames"]},
    )
    assert later["state"] == "streaming"
    return later


def download(page: Any) -> bytes:
    with page.expect_download() as info:
        page.click("#download")
    return Path(info.value.path()).read_bytes()


def decoded_frames(mp4: bytes) -> list[tuple[int, int]]:
    """(width, height) of every frame PyAV decodes from `mp4`."""
    with av.open(io.BytesIO(mp4)) as container:
        return [(f.width, f.height) for f in container.decode(video=0)]


@pytest.mark.parametrize("transport", ["websocket", "fetch-sse"])
def test_generate_plays_while_generating_then_downloads(
    page: Any, server_url: str, transport: str
) -> None:
    page.set_viewport_size({"width": 1200, "height": 900})
    page.goto(f"{server_url}/")
    fill_and_start(page, transport, seed=11)

    during = wait_playing_while_generating(page)
    assert during["transport"] == transport
    assert during["total"] == 8 and len(during["timeline"]) == 8
    assert httpx.get(f"{server_url}/v1/jobs/{during['jobId']}").json()["status"] in (
        "running",
        "completed",  # it may have finished since the snapshot; the snapshot said it had not
    )

    done = wait_for(page, "s.state === 'complete' && s.download !== null")
    assert done["received"] == 8 and done["error"] is None
    assert all("received" in cls for cls, _ in done["timeline"])
    # 12 frames, then 8 new ones a segment (4 overlap), the last cut to the 64th frame
    assert [label for _, label in done["timeline"]] == [
        "0.0–1.5 s", "1.5–2.5 s", "2.5–3.5 s", "3.5–4.5 s", "4.5–5.5 s", "5.5–6.5 s",
        "6.5–7.5 s", "7.5–8.0 s",
    ]  # fmt: skip
    assert f"{FRAMES} frames" in done["download"]
    # endOfStream() was called, so the video plays to its end instead of waiting for more
    assert page.evaluate("window.streamgenPlayer.mse.mediaSource.readyState") == "ended"
    wait_for(page, "document.getElementById('video').ended")
    final = snapshot(page)
    assert final["frames"] >= FRAMES - 2  # every frame was decoded (give or take the last)

    mp4 = download(page)
    assert decoded_frames(mp4) == [(128, 128)] * FRAMES
    # The page's init + fragments are byte for byte the server's continuous MP4.
    assert mp4 == httpx.get(f"{server_url}/v1/jobs/{done['jobId']}/video.mp4").content
    assert page.url.endswith(f"/?job={done['jobId']}")  # a link to watch it again
    if transport == "websocket" and os.environ.get("STREAMGEN_PLAYER_SCREENSHOT"):
        page.screenshot(path=os.environ["STREAMGEN_PLAYER_SCREENSHOT"])
    assert page.console_errors == []


def test_attach_by_job_id_plays_a_running_job_and_a_finished_one(
    page: Any, browser: Any, server_url: str
) -> None:
    created = httpx.post(f"{server_url}/v1/jobs", json={"prompt": "a lighthouse", **JOB, "seed": 5})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    page.goto(f"{server_url}/?job={job_id}")
    during = wait_playing_while_generating(page)
    assert during["transport"] == "events" and during["jobId"] == job_id
    done = wait_for(page, "s.state === 'complete' && s.download !== null")
    assert done["received"] == 8
    mp4 = download(page)
    assert decoded_frames(mp4) == [(128, 128)] * FRAMES
    assert mp4 == httpx.get(f"{server_url}/v1/jobs/{job_id}/video.mp4").content

    # A viewer who comes after the end replays the job's whole log and gets the same file.
    late = browser.new_context(accept_downloads=True).new_page()
    try:
        late.goto(f"{server_url}/?job={job_id}")
        late_done = wait_for(late, "s.state === 'complete' && s.download !== null")
        assert late_done["received"] == 8
        wait_for(late, "s.frames > 0 && s.time > 0")
        assert download(late) == mp4
    finally:
        late.context.close()
    assert page.console_errors == []


def test_a_dropped_stream_resumes_without_gaps_or_repeats(page: Any, server_url: str) -> None:
    """The page's WebSocket is cut (close 1001) right after segment 2; the page goes on from
    the next event over GET /v1/jobs/{id}/events and ends with the same file the server wrote.

    Only the page's side is closed: the proxy keeps the server's side open (and drops what
    comes), as a half-dead connection would. Closing it would make the server cancel this
    request-scoped job at once, which is the server's rule, not the page's."""
    cut = {"done": False}

    def proxy(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_server(message: bytes | str) -> None:
            if cut["done"]:
                return
            ws.send(message)
            event = msgpack.unpackb(message) if isinstance(message, bytes) else {}
            if event.get("type") == "segment" and event["data"]["segment_index"] == 2:
                cut["done"] = True
                ws.close(code=1001, reason='{"code":"test_cut","message":"cut by the test"}')

        server.on_message(from_server)
        ws.on_message(server.send)

    page.route_web_socket("**/ws", proxy)
    page.goto(f"{server_url}/")
    fill_and_start(page, "websocket", seed=21)
    resumed = wait_for(page, "s.transport === 'events' && s.received >= 3")
    assert cut["done"]
    done = wait_for(page, "s.state === 'complete' && s.download !== null")
    assert done["received"] == 8  # each segment once: a repeat would count twice
    mp4 = download(page)
    assert decoded_frames(mp4) == [(128, 128)] * FRAMES
    assert mp4 == httpx.get(f"{server_url}/v1/jobs/{resumed['jobId']}/video.mp4").content
    assert page.console_errors == []


def test_cancel_stops_an_unbounded_job_and_keeps_what_arrived(page: Any, server_url: str) -> None:
    page.goto(f"{server_url}/")
    fill_and_start(page, "websocket", unbounded=True, seconds="")
    started = wait_for(page, "s.received >= 1 && s.frames > 0")
    assert started["total"] is None  # unbounded: the timeline grows as segments come
    page.click("#cancel")

    cancelled = wait_for(page, "s.state === 'cancelled'")
    job = httpx.get(f"{server_url}/v1/jobs/{cancelled['jobId']}").json()
    assert job["status"] == "cancelled"
    assert cancelled["received"] == job["segments_done"]
    assert len(cancelled["timeline"]) >= cancelled["received"]
    assert "partial" in cancelled["download"]
    assert page.get_attribute("#download", "data-complete") == "false"
    mp4 = download(page)
    assert len(decoded_frames(mp4)) == job["frames_done"]
    assert page.is_disabled("#cancel")
    assert page.console_errors == []


def test_stop_closes_only_the_stream(page: Any, server_url: str) -> None:
    created = httpx.post(f"{server_url}/v1/jobs", json={"prompt": "a river", **JOB, "seconds": None,
                                                        "unbounded": True})  # fmt: skip
    assert created.status_code == 202, created.text
    job_url = f"{server_url}/v1/jobs/{created.json()['id']}"
    try:
        page.goto(f"{server_url}/?job={created.json()['id']}")
        wait_for(page, "s.received >= 1")
        page.click("#stop")
        stopped = wait_for(page, "s.state === 'stopped' && s.download !== null")
        assert "partial" in stopped["download"]
        assert page.evaluate("window.streamgenPlayer.mse.mediaSource.readyState") == "ended"
        # A job queued with POST /v1/jobs does not depend on its viewers.
        assert httpx.get(job_url).json()["status"] == "running"
    finally:
        httpx.delete(job_url)  # an unbounded job would hold the worker forever
    assert page.console_errors == []


@pytest.mark.parametrize("transport", ["websocket", "fetch-sse"])
def test_a_refused_request_shows_the_error_and_marks_the_field(
    page: Any, server_url: str, transport: str
) -> None:
    page.goto(f"{server_url}/")
    fill_and_start(page, transport, segment_frames=8, overlap_frames=8)
    failed = wait_for(page, "s.state === 'error'")
    assert "overlap_frames" in failed["error"]
    assert "must be less than segment_frames" in failed["error"]
    assert "invalid" in (page.get_attribute("input[name=overlap_frames]", "class") or "")
    assert failed["jobId"] == ""  # no job was made


def test_attaching_to_an_unknown_job_says_so(page: Any, server_url: str) -> None:
    page.goto(f"{server_url}/?job=job_doesnotexist")
    failed = wait_for(page, "s.state === 'error'")
    assert "job_not_found" in failed["error"]
    assert "job_doesnotexist" in failed["error"]


def test_a_job_with_an_audio_file_plays_with_its_sound(
    page: Any, server_url: str, tmp_path: Path
) -> None:
    from tests.segment_pipeline.test_audio import clicks, wav_bytes

    sound = tmp_path / "clicks.wav"
    sound.write_bytes(wav_bytes(clicks(8, 16000), 16000))
    page.goto(f"{server_url}/")
    page.set_input_files("input[name=audio]", str(sound))
    fill_and_start(page, "websocket", seed=21)
    during = wait_playing_while_generating(page)
    assert page.evaluate("document.getElementById('video').muted") is False
    # The browser decodes the audio track as it plays (Chromium's decoded-bytes counter).
    page.wait_for_function(
        "document.getElementById('video').webkitAudioDecodedByteCount > 0",
        timeout=WAIT_MS, polling=50,
    )  # fmt: skip
    done = wait_for(page, "s.state === 'complete' && s.download !== null")
    assert done["jobId"] == during["jobId"]
    mp4 = download(page)
    with av.open(io.BytesIO(mp4)) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
    assert page.console_errors == []


@pytest.mark.parametrize("transport", ["websocket", "fetch-sse"])
def test_a_server_with_keys_plays_once_the_key_is_given(
    page: Any, tmp_path: Path, transport: str
) -> None:
    keys = FileKeyStore(tmp_path / "keys.json")
    key, secret = new_key("player", KeyPolicy(unbounded=True))
    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs on this thread
        thread.submit(asyncio.run, keys.add(key)).result()
    server = ServerThread({"keys_file": str(keys.path)}).start()
    try:
        page.goto(f"{server.url}/")
        fill_and_start(page, transport, unbounded=True, seconds="")
        refused = wait_for(page, "s.state === 'error'")
        assert "unauthorized" in refused["error"] and refused["jobId"] == ""

        page.fill("input[name=api_key]", secret)
        page.click("#generate")
        started = wait_for(page, "s.received >= 1 && s.frames > 0")
        page.click("#cancel")  # DELETE with the key
        wait_for(page, "s.state === 'cancelled'")
        job_url = f"{server.url}/v1/jobs/{started['jobId']}"
        job = httpx.get(job_url, headers={"X-API-Key": secret}).json()
        assert job["status"] == "cancelled"

        # The key stays with the tab: attaching (EventSource, the key in its query) plays too.
        page.goto(f"{server.url}/?job={started['jobId']}")
        attached = wait_for(page, "s.state === 'cancelled' && s.received >= 1")
        assert attached["transport"] == "events" and attached["received"] == job["segments_done"]
        assert secret not in page.url
    finally:
        server.stop()
    assert [e for e in page.console_errors if "401" not in e] == []
