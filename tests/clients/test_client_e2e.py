"""The client against a real streamgen server (embedded model, tiny settings): every
transport, the CLI, resuming after a dropped connection, errors."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from streamgen_client import (
    GenerateRequest,
    JobFailed,
    Recording,
    RequestRejected,
    RetryPolicy,
    SegmentEvent,
    StartEvent,
    StreamClient,
)

from tests.clients.proxy import CuttingProxy

# 64x64, 2 steps; 20 frames in windows of 8 overlapping by 2: segments of 8, 6 and 6 frames.
TINY = {"width": 64, "height": 64, "num_inference_steps": 2, "num_frames": 20,
        "segment_frames": 8, "overlap_frames": 2, "seed": 11}  # fmt: skip
SEGMENT_FRAMES = [8, 6, 6]
# A longer job for the resume tests, so a drop after segment 1 leaves segments to come.
LONGER = {**TINY, "num_frames": 32}  # segments of 8, 6, 6, 6, 6
LONGER_SEGMENTS = 5
NO_WAIT = RetryPolicy(max_retries=3, initial_delay_s=0.0, max_delay_s=0.0)
TRANSPORTS = ["sse", "ndjson", "ws"]


def decode(data: bytes) -> tuple[int, tuple[int, int], float]:
    """(frames, (width, height), first frame time in seconds)."""
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    return len(frames), (frames[0].width, frames[0].height), float(frames[0].time)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamgen_client.stream_client", *args],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )  # fmt: skip


def tiny_flags(request: dict) -> list[str]:
    flags = [
        "--size", f"{request['width']}x{request['height']}",
        "--steps", str(request["num_inference_steps"]),
        "--segment-frames", str(request["segment_frames"]),
        "--overlap-frames", str(request["overlap_frames"]),
        "--seed", str(request["seed"]),
    ]  # fmt: skip
    if "num_frames" in request:
        flags += ["--num-frames", str(request["num_frames"])]
    return flags


@pytest.fixture(scope="module")
def cli_runs(server_url, tmp_path_factory):
    """The CLI run once per transport: transport -> (process, output dir, concatenated mp4)."""
    runs = {}
    for transport in TRANSPORTS:
        root = tmp_path_factory.mktemp(transport)
        process = cli(
            "--server", server_url, "--transport", transport, "--prompt", "a red ball moves right",
            *tiny_flags(TINY), "--output-dir", str(root / "segments"),
            "--concatenate", str(root / "out.mp4"),
        )  # fmt: skip
        runs[transport] = (process, root / "segments", root / "out.mp4")
    return runs


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cli_saves_segments_and_one_playable_mp4(cli_runs, transport):
    process, segments, out = cli_runs[transport]
    assert process.returncode == 0, process.stderr
    assert "complete: 3 segments, 20 frames, 2.50 s" in process.stdout
    assert decode(out.read_bytes())[:2] == (sum(SEGMENT_FRAMES), (64, 64))
    joined = (segments / "init.mp4").read_bytes() + b"".join(
        (segments / f"fragment_{i:04d}.m4s").read_bytes() for i in range(len(SEGMENT_FRAMES))
    )
    assert joined == out.read_bytes()
    assert not out.with_name("out.mp4.part").exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_saved_segment_plays_alone(cli_runs, transport):
    _, segments, _ = cli_runs[transport]
    for index, frames in enumerate(SEGMENT_FRAMES):
        assert decode((segments / f"segment_{index:04d}.mp4").read_bytes()) == (
            frames, (64, 64), 0.0
        )  # fmt: skip


def test_the_three_transports_carry_byte_identical_video(cli_runs):
    files = {}
    for transport, (process, segments, out) in cli_runs.items():
        assert process.returncode == 0, process.stderr
        files[transport] = {p.name: p.read_bytes() for p in segments.iterdir()}
        files[transport]["out.mp4"] = out.read_bytes()
    assert len(files["sse"]) == 1 + 2 * len(SEGMENT_FRAMES) + 1
    assert files["sse"] == files["ndjson"] == files["ws"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_422_is_reported_with_its_parameter_and_exit_code_2(server_url, transport):
    process = cli("--server", server_url, "--transport", transport, "--prompt", "p",
                  "--width", "99999", "--quiet")  # fmt: skip
    assert process.returncode == 2
    status = "WebSocket close 1008" if transport == "ws" else "HTTP 422"
    assert (
        f"streamgen-client: the server rejected the request ({status} invalid_request, "
        "parameter width): 99999x128 is over the cap of 512x512 for streamgen-tiny"
    ) in process.stderr
    assert process.stdout == ""


def test_attaching_to_an_unknown_job_is_a_404(server_url):
    process = cli("--server", server_url, "--job", "job_missing", "--quiet")
    assert process.returncode == 2
    assert "(HTTP 404 job_not_found, parameter job_id)" in process.stderr


def drop_after_segment_1(stream, recording: Recording, seqs: list[int]) -> None:
    """Consume `stream` into `recording` and `seqs`, dropping its connection right after
    segment 1 arrives."""
    for event in stream:
        seqs.append(event.seq)
        recording.add(event)  # refuses a gap or a duplicate segment
        if isinstance(event, SegmentEvent) and event.segment_index == 1:
            stream.drop()


def check_whole(recording: Recording, seqs: list[int], segments: int) -> None:
    assert seqs == list(range(len(seqs)))  # every event once, in order
    assert [s.segment_index for s in recording.segments] == list(range(segments))
    frames, size, _ = decode(recording.video())
    assert (frames, size) == (recording.num_frames, (64, 64))
    assert recording.complete is not None and recording.complete.total_frames == frames


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_queued_job_resumes_after_a_dropped_connection(server_url, transport):
    with StreamClient(server_url, retry=NO_WAIT) as client:
        job_id = client.submit(GenerateRequest(prompt="a blue square", **LONGER))
        stream = client.attach(job_id, transport=transport)
        recording, seqs = Recording(), []
        drop_after_segment_1(stream, recording, seqs)
    assert stream.reconnects == 1
    check_whole(recording, seqs, LONGER_SEGMENTS)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dropped_request_scoped_stream_resumes_into_its_cancellation(server_url, transport):
    """The protocol cancels a request-scoped job (`POST /generate-stream`, `-chunked`, a
    WebSocket generate) when its last client disconnects. The client still resumes with
    Last-Event-ID / from_seq and gets every event up to the cancellation, then `JobFailed`:
    a clear error, never a hang or a silently short video."""
    recording, seqs = Recording(), []
    with StreamClient(server_url, retry=NO_WAIT) as client:
        stream = client.generate(GenerateRequest(prompt="a blue square", **LONGER), transport)
        with pytest.raises(JobFailed) as failed:
            drop_after_segment_1(stream, recording, seqs)
    assert failed.value.code == "cancelled" and failed.value.job_id == stream.job_id
    assert stream.reconnects == 1
    assert seqs == list(range(len(seqs)))  # every event before the error once, in order
    assert len(recording.segments) >= 2 and recording.complete is None


def through_proxy(upstream_port: int, job_id: str, transport: str, cut_after_bytes: int | None):
    """Attach to `job_id` through a `CuttingProxy`; (proxy, stream, recording, seqs)."""
    with (
        CuttingProxy(upstream_port, cut_after_bytes=cut_after_bytes) as proxy,
        StreamClient(proxy.url, retry=NO_WAIT) as client,
    ):
        stream = client.attach(job_id, transport=transport)
        recording, seqs = Recording(), []
        for event in stream:
            seqs.append(event.seq)
            recording.add(event)
    return proxy, stream, recording, seqs


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_connection_cut_mid_event_by_the_network_is_resumed(server, transport):
    with StreamClient(server.url) as direct:
        job_id = direct.submit(GenerateRequest(prompt="a green disc", **LONGER))
    # First pass: measure the whole stream; second: cut it halfway, inside some event.
    whole, _, _, _ = through_proxy(server.port, job_id, transport, None)
    half = whole.downstream_bytes[0] // 2
    proxy, stream, recording, seqs = through_proxy(server.port, job_id, transport, half)
    assert proxy.cut.is_set() and proxy.downstream_bytes[0] == half
    assert stream.reconnects == 1
    check_whole(recording, seqs, LONGER_SEGMENTS)


def test_attaching_from_a_seq_replays_the_same_events_from_there(server_url):
    with StreamClient(server_url, retry=NO_WAIT) as client:
        job_id = client.submit(GenerateRequest(prompt="a red ball", **TINY))
        whole = list(client.attach(job_id))
        late = list(client.attach(job_id, from_seq=5))
    assert isinstance(whole[0], StartEvent) and late == whole[5:]


def test_a_cancelled_job_raises_job_failed(server_url):
    with StreamClient(server_url, retry=NO_WAIT) as client:
        job_id = client.submit(GenerateRequest(prompt="a red ball", **LONGER))
        stream = client.attach(job_id, transport="ws")
        received = []
        with pytest.raises(JobFailed) as failed:
            for event in stream:
                received.append(event)
                if isinstance(event, StartEvent):
                    client.cancel(job_id)
        with pytest.raises(RequestRejected) as again:
            client.cancel(job_id)  # already finished
    assert failed.value.code == "cancelled" and failed.value.job_id == job_id
    assert again.value.status == 409
    assert isinstance(received[0], StartEvent)


def test_ctrl_c_ends_an_unbounded_stream_keeping_a_playable_video(server_url, tmp_path):
    flags = tiny_flags({k: v for k, v in TINY.items() if k != "num_frames"})
    process = subprocess.Popen(
        [sys.executable, "-m", "streamgen_client.stream_client", "--server", server_url,
         "--prompt", "a red ball", *flags, "--unbounded", "--quiet",
         "--output-dir", str(tmp_path / "segs"), "--concatenate", str(tmp_path / "out.mp4")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "segs" / "fragment_0001.m4s").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no second segment within 60 s"
            time.sleep(0.02)  # polling a deadline, not synchronising
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    segments = len(list((tmp_path / "segs").glob("fragment_*.m4s")))
    frames = 8 + 6 * (segments - 1)
    assert segments >= 2
    assert f"stopped: {segments} segments, {frames} frames" in stdout
    assert decode((tmp_path / "out.mp4").read_bytes())[:2] == (frames, (64, 64))
