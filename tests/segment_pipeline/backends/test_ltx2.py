"""The LTX-2 backend (video with its audio), end to end on CPU with a tiny random checkpoint
built in-process (`ltx2_tiny.py`): real classes, `from_pretrained` with local files only,
overlap conditioning, the generated audio as the job's AAC track, and a request's own audio
in its place when given."""

from __future__ import annotations

import asyncio
import copy
import io
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from segment_pipeline import (
    SAMPLE_RATE,
    AudioClip,
    GeneratedWindow,
    GenerationRequest,
    InvalidRequest,
    Limits,
    ModelLoadError,
    SegmentPipeline,
    load_generator,
)
from segment_pipeline.backends.ltx2 import LTX2Generator
from tests.server import ServerThread
from tests.streamgen.stream_reading import b64, read_sse

from ..test_audio import clicks, onsets
from .ltx2_tiny import build_tiny_ltx2

NO_CALIBRATION = {
    "calibrate_at_start": False,
    "calibrate_when_idle": False,
}  # its default window is slow on a CPU

AAC_FRAME_S = 1024 / SAMPLE_RATE
SMALL = {"width": 32, "height": 32, "fps": 8.0, "num_frames": 21, "segment_frames": 9,
         "overlap_frames": 1, "num_inference_steps": 2}  # fmt: skip


@pytest.fixture(scope="module")
def ltx2(tmp_path_factory: pytest.TempPathFactory) -> LTX2Generator:
    directory = build_tiny_ltx2(tmp_path_factory.mktemp("ltx2") / "tiny-ltx2")
    generator = load_generator("ltx2", directory)
    assert isinstance(generator, LTX2Generator)
    return generator


def decode_both(data: bytes) -> tuple[int, np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(io.BytesIO(data)) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return frames, audio


def test_a_window_comes_with_audio_over_its_span(ltx2: LTX2Generator) -> None:
    card = ltx2.describe()
    assert card["backend"] == "ltx2" and card["audio"]["generates"] is True
    request = ltx2.resolve(GenerationRequest(prompt="a red ball", seed=1, **SMALL))  # type: ignore[arg-type]
    steps: list[tuple[int, int]] = []
    window = ltx2.generate_window(request, 0, np.zeros((0, 32, 32, 3), np.uint8),
                                  lambda s, n: steps.append((s, n)))  # fmt: skip
    assert isinstance(window, GeneratedWindow)
    assert window.frames.shape == (9, 32, 32, 3) and window.frames.dtype == np.uint8
    assert window.audio.channels == 2 and window.audio.sample_rate == 16000
    assert abs(window.audio.seconds - 9 / 8) <= 0.05  # as long as its frames
    assert steps == [(1, 2), (2, 2)]


def test_a_job_streams_video_and_its_audio_in_one_fmp4(ltx2: LTX2Generator) -> None:
    request = ltx2.resolve(GenerationRequest(prompt="a talking face", seed=2, **SMALL))  # type: ignore[arg-type]
    assert request.total_segments == 3
    job = SegmentPipeline(ltx2).open(request)
    assert job.codec_string == "avc1.64000a,mp4a.40.2"
    parts, encoded = [job.init_segment], []
    job.run(lambda piece: (parts.append(piece.fragment), encoded.append(piece.encoded)))
    frames, audio = decode_both(b"".join(parts))
    assert frames == 21 and audio.shape[0] == 2
    assert abs(audio.shape[1] / SAMPLE_RATE - 21 / 8) <= AAC_FRAME_S
    assert float(np.abs(audio).max()) > 0.0  # the model's sound, not silence
    for piece in encoded:  # generated audio: the encoder may hold back up to 3 AAC frames
        video_s = piece.start_frame / 8
        assert abs(piece.audio_start / SAMPLE_RATE - video_s) <= 3 * AAC_FRAME_S


def test_a_requests_own_audio_is_the_track(ltx2: LTX2Generator) -> None:
    audio = AudioClip(clicks(3), SAMPLE_RATE)
    fields = {**SMALL, "num_frames": None}
    request = ltx2.resolve(GenerationRequest(prompt="a face", seed=4, audio=audio, **fields))  # type: ignore[arg-type]
    assert request.total_frames == 24  # as long as its audio
    job = SegmentPipeline(ltx2).open(request)
    parts = [job.init_segment]
    job.run(lambda piece: parts.append(piece.fragment))
    _, decoded = decode_both(b"".join(parts))
    assert decoded.shape[0] == 1  # the request's mono track, not the model's stereo
    assert all(abs(offset) <= SAMPLE_RATE / 8 for offset in onsets(decoded[0], 3))


def test_sizes_and_checkpoints_ltx2_cannot_take(ltx2: LTX2Generator, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as info:
        ltx2.resolve(GenerationRequest(prompt="a", **{**SMALL, "segment_frames": 8}))  # type: ignore[arg-type]
    assert info.value.param == "segment_frames"
    with pytest.raises(InvalidRequest) as info:
        ltx2.resolve(GenerationRequest(prompt="a", **{**SMALL, "overlap_frames": 2}))  # type: ignore[arg-type]
    assert info.value.param == "overlap_frames"
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_generator("ltx2", tmp_path / "missing")


def test_its_rotary_space_caps_the_sizes(ltx2: LTX2Generator) -> None:
    config = ltx2.pipe.transformer.config
    assert (ltx2.max_width, ltx2.max_height) == (config.base_width, config.base_height)
    # Under service caps above it, the checkpoint's own cap is the one that binds.
    wide = copy.copy(ltx2)
    wide.limits = Limits(max_width=4096, max_height=4096, max_pixels=4096 * 4096)
    assert wide.size_rule().max_width == config.base_width
    fields = {**SMALL, "width": config.base_width + 64, "height": 64}
    with pytest.raises(InvalidRequest) as caught:
        wide.resolve(GenerationRequest(prompt="a", **fields))  # type: ignore[arg-type]
    assert caught.value.param == "width"
    assert f"{config.base_width}x{config.base_height}" in caught.value.message
    # A size off its multiple is made at the nearest one.
    made = ltx2.resolve(GenerationRequest(prompt="a", **{**SMALL, "width": 41}))  # type: ignore[arg-type]
    assert made.width % ltx2.size_multiple == 0 and abs(made.width - 41) <= ltx2.size_multiple / 2


def test_the_server_streams_an_ltx2_job_with_both_tracks(ltx2: LTX2Generator) -> None:
    server = ServerThread(NO_CALIBRATION, generator=ltx2).start()
    try:

        async def scenario() -> object:
            body = {"prompt": "a red ball moving left", "seed": 5, "size": "32x32",
                    **{k: v for k, v in SMALL.items() if k not in ("width", "height")}}  # fmt: skip
            async with httpx.AsyncClient(timeout=120) as client:
                return await read_sse(client, "POST", f"{server.url}/generate-stream",
                                      json_body=body)  # fmt: skip

        stream = asyncio.run(scenario())
    finally:
        server.stop()
    kinds = [kind for kind, _ in stream.events]  # type: ignore[attr-defined]
    assert kinds[0] == "start" and kinds[-1] == "complete", kinds
    start = stream.events[0][1]  # type: ignore[attr-defined]
    assert start["mime"] == 'video/mp4; codecs="avc1.64000a,mp4a.40.2"'
    segments = [data for kind, data in stream.events if kind == "segment"]  # type: ignore[attr-defined]
    assert len(segments) == 3
    for data in segments:  # each segment file plays alone, with sound
        with av.open(io.BytesIO(b64(data, "segment"))) as container:
            assert sorted(s.type for s in container.streams) == ["audio", "video"]
