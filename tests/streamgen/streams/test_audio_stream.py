"""Audio through the server, with a real server and encoder: the seeds' client request shape
(`audio_base64`, `image_base64`, `audio_scale`), a stream whose length is its audio's, its
segments joined by ffmpeg into a file with both streams, the continuous MP4's audio equal
to the input, and bad audio refused with the field named."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from PIL import Image

from tests.segment_pipeline.test_audio import clicks, ffmpeg_concat, onsets, wav_bytes
from tests.streamgen.stream_reading import b64, read_sse, wait_finished

RATE = 48_000
AAC_FRAME_S = 1024 / RATE


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_seed_clients_request_streams_segments_with_sound(
    server_url: str, tmp_path: Path
) -> None:
    body: dict[str, Any] = {
        "prompt": "a red ball moving left",
        "image_base64": base64.b64encode(png()).decode(),
        "audio_base64": base64.b64encode(wav_bytes(clicks(3, 16000), 16000)).decode(),
        "audio_scale": 1.0,
        "size": "64x64",
        "num_steps": 2,
        "seed": 3,
    }

    async def scenario() -> Any:
        async with httpx.AsyncClient(timeout=120) as client:
            return await read_sse(client, "POST", f"{server_url}/generate-stream", json_body=body)

    stream = asyncio.run(scenario())
    kinds = [kind for kind, _ in stream.events]
    assert kinds[0] == "start" and kinds[-1] == "complete", kinds
    start = stream.events[0][1]
    assert start["mime"] == 'video/mp4; codecs="avc1.64000a,mp4a.40.2"', start["mime"]
    assert start["total_frames"] == 24  # 3 s of audio at 8 fps: as long as its audio
    files = []
    for index, (_, data) in enumerate(e for e in stream.events if e[0] == "segment"):
        path = tmp_path / f"segment_{index:04d}.mp4"
        path.write_bytes(b64(data, "segment"))
        files.append(path)
    joined = ffmpeg_concat(files, tmp_path)
    with av.open(str(joined)) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
        audio_s = sum(f.samples for f in container.decode(audio=0)) / RATE
    with av.open(str(joined)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 24 and abs(audio_s - 3.0) < 0.1


def test_a_jobs_mp4_carries_the_requests_audio_in_sync(server_url: str) -> None:
    seconds = 6
    wav = wav_bytes(clicks(seconds, 44100, channels=2), 44100)
    body = {"prompt": "a blue square moving up", "size": "64x64", "num_steps": 2,
            "audio": "data:audio/wav;base64," + base64.b64encode(wav).decode()}  # fmt: skip

    async def scenario() -> bytes:
        async with httpx.AsyncClient(timeout=120) as client:
            job = (await client.post(f"{server_url}/v1/jobs", json=body)).json()
            await wait_finished(client, server_url, job["id"])
            return (await client.get(f"{server_url}/v1/jobs/{job['id']}/video.mp4")).content

    video = asyncio.run(scenario())
    with av.open(io.BytesIO(video)) as container:
        audio = container.streams.audio[0]
        assert audio.channels == 2 and audio.sample_rate == RATE
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert abs(decoded.shape[1] / RATE - seconds) <= AAC_FRAME_S
    found = onsets(decoded[0], seconds)
    # Every burst where it was put (input resampled from 44.1 kHz), within a video frame.
    assert all(abs(offset) < RATE / 8 for offset in found) and max(found) - min(found) <= 4


def test_a_multipart_form_sends_the_audio_as_a_file(server_url: str) -> None:
    seconds = 3
    wav = wav_bytes(clicks(seconds, RATE), RATE)
    form = {"prompt": "a red ball moving left", "size": "64x64", "num_steps": "2", "seed": "4"}
    response = httpx.post(
        f"{server_url}/generate", data=form, files={"audio": ("voice.wav", wav)}, timeout=120
    )
    assert response.status_code == 200, response.text
    with av.open(io.BytesIO(response.content)) as container:
        audio = container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert frames == seconds * 8  # as long as the audio, at the model's 8 fps
    assert audio.channels == 1 and abs(decoded.shape[1] / RATE - seconds) <= AAC_FRAME_S
    found = onsets(decoded[0], seconds)
    assert max(abs(offset) for offset in found) <= 4

    # A wrong form field is named, as in JSON; a field sent twice is refused.
    refused = httpx.post(
        f"{server_url}/generate", data={**form, "sound": "x"}, files={"audio": ("a.wav", wav)}
    )
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "sound"
    twice = httpx.post(
        f"{server_url}/generate", data=form,
        files=[("audio", ("a.wav", wav)), ("audio", ("b.wav", wav))],
    )  # fmt: skip
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "audio"


def test_bad_audio_is_refused_naming_the_field(server_url: str) -> None:
    cases = [
        ({"audio": base64.b64encode(b"not audio at all").decode()}, "audio"),
        ({"audio_base64": "%%% not base64"}, "audio"),
        ({"audio_scale": -1}, "audio_scale"),
        ({"audio": base64.b64encode(wav_bytes(clicks(1), RATE)).decode(),
          "audio_base64": base64.b64encode(wav_bytes(clicks(1), RATE)).decode()},
         "audio_base64"),
    ]  # fmt: skip
    for extra, param in cases:
        response = httpx.post(
            f"{server_url}/generate-stream", json={"prompt": "a red ball", **extra}, timeout=60
        )
        assert response.status_code == 422, (extra.keys(), response.text)
        assert response.json()["error"]["param"] == param, response.text


def test_models_say_how_request_audio_is_used(server_url: str) -> None:
    card = httpx.get(f"{server_url}/v1/models", timeout=30).json()["data"][0]
    assert card["details"]["audio"]["generates"] is False
    assert card["details"]["audio"]["conditions_on_request_audio"] is False
