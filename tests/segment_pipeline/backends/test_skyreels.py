"""The SkyReels-V2 Diffusion Forcing backend, end to end on CPU with a tiny random checkpoint
built in-process (`skyreels_tiny.py`): real classes, `from_pretrained` with local files only,
DF text-to-video, image-to-video and video-to-video (the overlap as clean prefix latents)
windows, batching, the causal block size, and a server streaming a job of it."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from segment_pipeline import GenerationRequest, InvalidRequest, ModelLoadError, SegmentPipeline
from segment_pipeline.backends.skyreels import DiffusionForcing, SkyReelsGenerator
from segment_pipeline.errors import GenerationCancelled
from segment_pipeline.generator import CancelEvent, WindowTask
from tests.server import ServerThread
from tests.streamgen.stream_reading import b64, read_sse

from .ltx_tiny import build_other_pipeline
from .skyreels_tiny import build_tiny_skyreels

NO_CALIBRATION = {
    "calibrate_at_start": False,
    "calibrate_when_idle": False,
}  # its default window is slow on a CPU

SIZE = 32  # 2x2 tokens a latent frame: Wan's VAE compresses 8x, the transformer patches 2x2
# 13-frame windows (4 latent frames) overlapping 5 (2 latent frames): 13 new frames, then 8.
SMALL = {"width": SIZE, "height": SIZE, "fps": 8.0, "segment_frames": 13, "overlap_frames": 5,
         "num_inference_steps": 2, "guidance_scale": 1.0}  # fmt: skip


@pytest.fixture(scope="module")
def skyreels_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_skyreels(tmp_path_factory.mktemp("skyreels") / "tiny-skyreels-df")


@pytest.fixture(scope="module")
def skyreels(skyreels_dir: Path) -> SkyReelsGenerator:
    return SkyReelsGenerator(skyreels_dir)


def request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"prompt": "a red ball moving left", "seed": 7, "num_frames": 29}
    fields.update(SMALL)
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def window(generator: SkyReelsGenerator, given: np.ndarray, index: int = 1, **overrides: object):  # type: ignore[no-untyped-def]
    resolved = generator.resolve(request(**overrides))
    return generator.generate_window(resolved, index, given, lambda step, total: None)


def clip(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_three_segments_stream_as_one_fmp4(skyreels: SkyReelsGenerator) -> None:
    steps: list[tuple[int, int, int]] = []
    job = SegmentPipeline(skyreels).open(request())
    assert job.total_segments == 3
    fragments: list[bytes] = []
    starts: list[int] = []
    job.run(
        lambda piece: (fragments.append(piece.fragment), starts.append(piece.segment.start_frame)),
        progress=lambda *call: steps.append(call),
    )
    assert starts == [0, 13, 21]  # overlap frames emitted once: 13 + 8 + 8 frames
    assert decode(job.init_segment + b"".join(fragments)).shape == (29, SIZE, SIZE, 3)
    assert steps == [(s, k, 2) for s in range(3) for k in (1, 2)]  # every step reported


def test_same_seed_same_frames_other_seed_other_frames(skyreels: SkyReelsGenerator) -> None:
    def frames(seed: int) -> np.ndarray:
        return np.concatenate([s.frames for s in skyreels.segments(request(seed=seed))])

    first = frames(7)
    assert first.shape == (29, SIZE, SIZE, 3) and first.std() > 0
    np.testing.assert_array_equal(first, frames(7))
    assert not np.array_equal(first, frames(8))


def test_the_overlap_conditions_the_next_window(skyreels: SkyReelsGenerator) -> None:
    none = np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8)
    plain, with_a, with_b = (
        window(skyreels, given) for given in (none, clip(5, 0), 255 - clip(5, 0))
    )
    assert with_a.shape == (13, SIZE, SIZE, 3)
    np.testing.assert_array_equal(with_a, window(skyreels, clip(5, 0)))  # (seed, index, given)
    # The frames after the prefix follow the given frames: other frames, another future.
    assert not np.array_equal(plain[5:], with_a[5:])
    assert not np.array_equal(with_a[5:], with_b[5:])


def test_reference_image_is_frame_zero_and_conditions(skyreels: SkyReelsGenerator) -> None:
    image = np.full((SIZE, SIZE, 3), (200, 40, 40), dtype=np.uint8)
    with_image = np.concatenate(
        [s.frames for s in skyreels.segments(request(num_frames=13, reference_image=image))]
    )
    without = np.concatenate([s.frames for s in skyreels.segments(request(num_frames=13))])
    assert with_image.shape == (13, SIZE, SIZE, 3)
    np.testing.assert_array_equal(with_image[0], image)
    assert not np.array_equal(with_image[1:], without[1:])


def test_extend_video_continues_after_its_frames(skyreels: SkyReelsGenerator) -> None:
    def extended(video: np.ndarray) -> np.ndarray:
        made = skyreels.segments(request(num_frames=16, extend_video=video))
        return np.concatenate([s.frames for s in made])

    frames = extended(clip(7, 1))  # conditions on its last 5 frames
    assert frames.shape == (16, SIZE, SIZE, 3)  # the video's own frames are not repeated
    assert not np.array_equal(frames, extended(clip(7, 2)))


def test_windows_batch_as_they_come_out_alone(tmp_path: Path) -> None:
    # Only without the frame-rate embedding: diffusers adds it for a batch of one.
    directory = build_tiny_skyreels(tmp_path / "no-fps-embedding", inject_sample_info=False)
    generator = SkyReelsGenerator(directory)
    tasks = [
        WindowTask(generator.resolve(request(prompt=prompt, seed=seed)), 1, clip(5, seed))
        for prompt, seed in (("a red ball", 1), ("a blue circle moving right", 2))
    ]
    assert generator.batch_key(tasks[0]) == generator.batch_key(tasks[1]) is not None
    calls: list[tuple[int, int, int]] = []
    batched = generator.generate_windows(tasks, lambda *call: calls.append(call))
    alone = [
        generator.generate_window(t.request, t.index, t.given, lambda s, n: None) for t in tasks
    ]
    for together, single in zip(batched, alone, strict=True):
        assert np.abs(together.astype(int) - single.astype(int)).max() <= 1  # float rounding
    assert not np.array_equal(batched[0], batched[1])
    assert calls == [(item, k, 2) for k in (1, 2) for item in (0, 1)]
    other = WindowTask(tasks[0].request, 1, clip(1, 3))  # another prefix length
    assert generator.batch_key(other) != generator.batch_key(tasks[0])
    blocks = SkyReelsGenerator(directory, forcing=DiffusionForcing(ar_step=1, causal_block_size=2))
    assert blocks.batch_key(tasks[0]) != generator.batch_key(tasks[0])  # another schedule
    assert generator.describe()["batching"] is True


def test_with_a_frame_rate_embedding_windows_go_alone(skyreels: SkyReelsGenerator) -> None:
    task = WindowTask(skyreels.resolve(request()), 1, clip(5, 1))
    assert skyreels.batch_key(task) is None
    assert skyreels.describe()["batching"] is False
    two = skyreels.generate_windows([task, task], lambda *call: None)  # one after another
    np.testing.assert_array_equal(two[0], two[1])


def test_causal_block_size_is_set_again_for_every_window(skyreels_dir: Path) -> None:
    synchronous = SkyReelsGenerator(skyreels_dir)
    before = window(synchronous, clip(5, 4))
    # A stock pipeline call on the same transformer leaves its block size behind.
    synchronous.pipe.transformer._set_ar_attention(2)
    np.testing.assert_array_equal(window(synchronous, clip(5, 4)), before)

    forcing = DiffusionForcing(ar_step=1, causal_block_size=2, addnoise_condition=20.0)
    asynchronous = SkyReelsGenerator(skyreels_dir, forcing=forcing)
    resolved = asynchronous.resolve(request())
    steps: list[tuple[int, int]] = []
    staggered = asynchronous.generate_window(resolved, 1, clip(1, 4), lambda *s: steps.append(s))
    # Two blocks of 2 latent frames, the second 1 step behind: 3 transformer steps, not 2.
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert not np.array_equal(staggered[1:], window(synchronous, clip(1, 4))[1:])
    assert asynchronous.pipe.transformer.config.num_frame_per_block == 2
    # 9-frame windows are 3 latent frames: not whole blocks of 2.
    with pytest.raises(InvalidRequest, match="causal_block_size 2") as caught:
        asynchronous.resolve(request(segment_frames=9, overlap_frames=5))
    assert caught.value.param == "segment_frames"


def test_settings_out_of_range_are_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError) as caught:
        DiffusionForcing(causal_block_size=0)
    assert caught.value.param == "causal_block_size"


def test_cancel_stops_within_one_step(skyreels: SkyReelsGenerator) -> None:
    cancel = CancelEvent()
    calls: list[tuple[int, int, int]] = []

    def progress(segment: int, step: int, total: int) -> None:
        calls.append((segment, step, total))
        if (segment, step) == (1, 1):
            cancel.set()

    with pytest.raises(GenerationCancelled):
        list(skyreels.segments(request(), progress=progress, cancel=cancel))
    assert calls == [(0, 1, 2), (0, 2, 2), (1, 1, 2)]


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"segment_frames": 12}, "segment_frames"),  # not 4k+1
        ({"overlap_frames": 4}, "overlap_frames"),
        ({"extend_video": clip(3, 0), "num_frames": 9}, "extend_video"),
        ({"segment_frames": 257, "num_frames": 257}, "segment_frames"),  # 65 latent frames
    ],
)
def test_sizes_skyreels_cannot_take_are_invalid(
    skyreels: SkyReelsGenerator, overrides: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        skyreels.resolve(request(**overrides))
    assert caught.value.param == param
    assert param in str(caught.value)


def test_a_size_past_the_rotary_tables_is_refused_naming_the_largest(
    skyreels: SkyReelsGenerator,
) -> None:
    with pytest.raises(InvalidRequest) as caught:  # 65 columns of 16 pixels: past the tables
        skyreels.resolve(request(width=1040))
    assert caught.value.param == "width" and "the largest size of that shape" in str(caught.value)


def test_a_size_off_the_multiple_is_made_at_the_nearest(skyreels: SkyReelsGenerator) -> None:
    made = skyreels.resolve(request(width=40, height=56))
    assert (made.width, made.height) == (32, 48)  # multiples of 16, ties down


def test_defaults_and_description(skyreels: SkyReelsGenerator) -> None:
    resolved = skyreels.resolve(GenerationRequest(prompt="a ball", seed=1))
    assert (resolved.width, resolved.height, resolved.fps) == (960, 544, 24.0)
    assert (resolved.segment_frames, resolved.overlap_frames) == (97, 17)
    card = skyreels.describe()
    assert card["backend"] == "skyreels" and set(card["modes"]) == {"t2v", "i2v", "extend"}
    assert card["size_multiple"] == 16 and card["frame_multiple"] == 4
    assert card["diffusion_forcing"]["causal_block_size"] == 1


def test_checkpoints_skyreels_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a directory") as caught:
        SkyReelsGenerator(tmp_path / "nowhere")
    assert caught.value.param == "model_path"
    other = build_other_pipeline(tmp_path / "ddpm")
    with pytest.raises(ModelLoadError, match="DDPMPipeline pipeline, not SkyReels-V2"):
        SkyReelsGenerator(other)


def test_the_server_streams_a_skyreels_job(skyreels: SkyReelsGenerator) -> None:
    server = ServerThread(NO_CALIBRATION, generator=skyreels).start()
    try:

        async def scenario() -> object:
            body = {"prompt": "a red ball moving left", "seed": 5, "size": f"{SIZE}x{SIZE}",
                    "num_frames": 21, **{k: v for k, v in SMALL.items()
                                         if k not in ("width", "height")}}  # fmt: skip
            async with httpx.AsyncClient(timeout=120) as client:
                return await read_sse(client, "POST", f"{server.url}/generate-stream",
                                      json_body=body)  # fmt: skip

        stream = asyncio.run(scenario())
    finally:
        server.stop()
    kinds = [kind for kind, _ in stream.events]  # type: ignore[attr-defined]
    assert kinds[0] == "start" and kinds[-1] == "complete", kinds
    segments = [data for kind, data in stream.events if kind == "segment"]  # type: ignore[attr-defined]
    assert [len(decode(b64(data, "segment"))) for data in segments] == [13, 8]


def test_the_registry_loads_a_skyreels_checkpoint_by_its_model_index(skyreels_dir: Path) -> None:
    from segment_pipeline import load_generator
    from segment_pipeline.backends.registry import REGISTRY
    from segment_pipeline.backends.skyreels import SKYREELS_PIPELINES

    assert {b.name: b for b in REGISTRY}["skyreels"].pipelines == SKYREELS_PIPELINES
    assert isinstance(load_generator(model_path=skyreels_dir), SkyReelsGenerator)
