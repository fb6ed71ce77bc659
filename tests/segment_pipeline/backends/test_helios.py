"""The Helios backend, end to end on CPU with tiny random checkpoints built in-process.

The checkpoints (see `helios_tiny.py`) have Helios's real classes, so these tests run the
same code as a published one: loading with `local_files_only`, the stock pipelines denoising
one chunk at a time on the stream's latent history (kept in its `StreamState`), decoding.
Each window costs about a second on a busy CPU, so the tests ask for few.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from segment_pipeline.backends.helios import HeliosGenerator, HeliosHistory
from segment_pipeline.errors import InvalidRequest, ModelLoadError
from segment_pipeline.generator import SegmentCursor, WindowTask
from segment_pipeline.pipeline import EncodedSegment, SegmentPipeline
from segment_pipeline.request import GenerationRequest
from tests.server import ServerThread
from tests.streamgen.stream_reading import b64, read_sse

from .helios_tiny import build_tiny_helios, build_tiny_helios_distilled
from .ltx_tiny import build_other_pipeline

NO_CALIBRATION = {
    "calibrate_at_start": False,
    "calibrate_when_idle": False,
}  # its default window is slow on a CPU

SIZE = 32  # 4x4 latent pixels: Wan's VAE compresses 8x in space
SMALL = {"width": SIZE, "height": SIZE, "fps": 8.0, "num_frames": 18, "segment_frames": 9,
         "num_inference_steps": 2, "guidance_scale": 1.0}  # fmt: skip


@pytest.fixture(scope="module")
def helios(tmp_path_factory: pytest.TempPathFactory) -> HeliosGenerator:
    return HeliosGenerator(build_tiny_helios(tmp_path_factory.mktemp("helios") / "tiny-helios"))


def tiny_request(**overrides: object) -> GenerationRequest:
    """Two 9-frame chunks (18 frames), no overlap: Helios continues from its history."""
    fields: dict[str, object] = {"prompt": "a red ball moving left", "seed": 7, **SMALL}
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def no_step(item: int, step: int, total_steps: int) -> None:
    del item, step, total_steps


def test_two_chunks_stream_as_one_fmp4(helios: HeliosGenerator) -> None:
    job = SegmentPipeline(helios).open(tiny_request())
    encoded: list[EncodedSegment] = []
    job.run(encoded.append)
    # No overlap: each chunk's frames are all new, one after the other.
    assert [e.segment.num_frames for e in encoded] == [9, 9]
    assert [e.segment.start_frame for e in encoded] == [0, 9]
    video = decode(job.init_segment + b"".join(e.fragment for e in encoded))
    assert video.shape == (18, SIZE, SIZE, 3)
    assert video.std() > 0


def test_the_history_conditions_the_next_chunk_and_is_released(helios: HeliosGenerator) -> None:
    request = helios.resolve(tiny_request())
    cursor = SegmentCursor(request)
    first = cursor.next_task()
    (window,) = helios.run_batch([first], no_step)
    kept = cursor.state.value
    assert isinstance(kept, HeliosHistory) and kept.prefix is not None
    cursor.advance(window, 0.0)
    second = cursor.next_task()
    assert second.state is first.state  # one state for the stream's windows
    (continued,) = helios.run_batch([second], no_step)
    # The same window (seed, index, no given frames) without the stream's history differs:
    # the chunk is conditioned on what came before it, not only seeded.
    (alone,) = helios.run_batch([WindowTask(request, 1, second.given)], no_step)
    assert not np.array_equal(continued, alone)
    again = SegmentCursor(request)
    np.testing.assert_array_equal(helios.run_batch([again.next_task()], no_step)[0], window)
    cursor.release()
    assert cursor.state.value is None  # its latents go with the stream


def test_the_state_goes_when_a_stream_is_closed_early(helios: HeliosGenerator) -> None:
    stream = helios.segments(tiny_request())
    next(stream)
    frame = stream.gi_frame
    assert frame is not None
    cursor = frame.f_locals["cursor"]
    assert isinstance(cursor.state.value, HeliosHistory)
    stream.close()  # a cancelled or abandoned stream
    assert cursor.state.value is None


def test_reference_image_is_frame_zero(helios: HeliosGenerator) -> None:
    image = np.full((SIZE, SIZE, 3), (200, 40, 40), dtype=np.uint8)
    request = tiny_request(num_frames=9)
    with_image = np.concatenate(
        [s.frames for s in helios.segments(tiny_request(num_frames=9, reference_image=image))]
    )
    without = np.concatenate([s.frames for s in helios.segments(request)])
    assert with_image.shape == (9, SIZE, SIZE, 3)
    np.testing.assert_array_equal(with_image[0], image)
    assert not np.array_equal(with_image[1:], without[1:])


def test_extend_video_continues_without_repeating_it(helios: HeliosGenerator) -> None:
    clip = np.random.default_rng(1).integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    frames = np.concatenate(
        [s.frames for s in helios.segments(tiny_request(num_frames=9, extend_video=clip))]
    )
    plain = np.concatenate([s.frames for s in helios.segments(tiny_request(num_frames=9))])
    assert frames.shape == (9, SIZE, SIZE, 3)  # the video's own frames are not emitted
    assert not np.array_equal(frames, plain)  # its latents fill the history


def test_helios_distilled_streams_through_its_pyramid(tmp_path: Path) -> None:
    generator = HeliosGenerator(build_tiny_helios_distilled(tmp_path / "tiny-distilled"))
    assert generator.describe()["variant"] == "Helios-Distilled"
    assert generator.defaults.guidance_scale == 1.0
    calls: list[tuple[int, int, int]] = []
    request = tiny_request(width=64, height=64, num_inference_steps=3)
    segments = list(generator.segments(request, progress=lambda *call: calls.append(call)))
    assert [s.num_frames for s in segments] == [9, 9]
    assert calls == [(s, k, 3) for s in range(2) for k in range(1, 4)]  # every stage's step
    made = generator.resolve(tiny_request(width=96, height=160, num_inference_steps=3))
    assert (made.width, made.height) == (64, 128)  # a pyramid: multiples of 64, ties down


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"segment_frames": 10}, "segment_frames"),
        ({"overlap_frames": 1}, "overlap_frames"),
        ({"extend_video": np.zeros((4, SIZE, SIZE, 3), dtype=np.uint8)}, "extend_video"),
    ],
)
def test_what_helios_cannot_take_is_invalid(
    helios: HeliosGenerator, overrides: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        helios.resolve(tiny_request(**overrides))
    assert caught.value.param == param
    assert param in str(caught.value)


def test_a_size_off_the_multiple_is_made_at_the_nearest(helios: HeliosGenerator) -> None:
    made = helios.resolve(tiny_request(width=40, height=56))
    assert (made.width, made.height) == (32, 48)  # multiples of 16, ties down


def test_describe_says_what_it_can_do(helios: HeliosGenerator) -> None:
    info = helios.describe()
    assert info["backend"] == "helios" and info["variant"] == "Helios"
    assert set(info["modes"]) == {"t2v", "i2v", "extend"}
    assert info["batching"] is False and info["size_multiple"] == 16
    resolved = helios.resolve(GenerationRequest(prompt="a ball", seed=1))
    assert (resolved.width, resolved.height, resolved.segment_frames) == (640, 384, 33)


def test_another_pipeline_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="DDPMPipeline pipeline, not Helios"):
        HeliosGenerator(build_other_pipeline(tmp_path / "ddpm"))


def test_the_server_streams_a_helios_job(helios: HeliosGenerator) -> None:
    server = ServerThread(NO_CALIBRATION, generator=helios).start()
    try:

        async def scenario() -> object:
            body = {"prompt": "a red ball moving left", "seed": 5, "size": f"{SIZE}x{SIZE}",
                    **{k: v for k, v in SMALL.items() if k not in ("width", "height")}}  # fmt: skip
            async with httpx.AsyncClient(timeout=120) as client:
                return await read_sse(client, "POST", f"{server.url}/generate-stream",
                                      json_body=body)  # fmt: skip

        stream = asyncio.run(scenario())
    finally:
        server.stop()
    kinds = [kind for kind, _ in stream.events]  # type: ignore[attr-defined]
    assert kinds[0] == "start" and kinds[-1] == "complete", kinds
    segments = [data for kind, data in stream.events if kind == "segment"]  # type: ignore[attr-defined]
    assert len(segments) == 2
    for data in segments:  # each segment file plays alone, 9 frames
        assert decode(b64(data, "segment")).shape == (9, SIZE, SIZE, 3)


def test_the_registry_loads_a_helios_checkpoint_by_its_model_index(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from segment_pipeline import load_generator
    from segment_pipeline.backends.helios import HELIOS_PIPELINES
    from segment_pipeline.backends.registry import REGISTRY

    assert {b.name: b for b in REGISTRY}["helios"].pipelines == HELIOS_PIPELINES
    path = build_tiny_helios(tmp_path_factory.mktemp("by-index") / "tiny-helios")
    assert isinstance(load_generator(model_path=path), HeliosGenerator)
