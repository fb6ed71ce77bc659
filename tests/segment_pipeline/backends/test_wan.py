"""The Wan backend end to end on CPU with tiny random checkpoints built in-process
(`wan_tiny.py`): real classes, `from_pretrained` with local files only, the backend's own
denoising loop with the overlap held clean as prefix latents, Wan2.2's two experts, image to
video weights, video to video with `strength`, batching, and a server streaming a v2v job."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import torch

from segment_pipeline import (
    GenerationRequest,
    InvalidRequest,
    Limits,
    ModelLoadError,
    SegmentPipeline,
    WindowTask,
    remix,
)
from segment_pipeline.backends.embedded import EmbeddedGenerator
from segment_pipeline.backends.wan import WanGenerator
from segment_pipeline.generator import check_modes
from segment_pipeline.pipeline import EncodedSegment
from tests.server import ServerThread
from tests.streamgen.stream_reading import b64, read_sse

from .ltx_tiny import build_tiny_ltx
from .wan_tiny import build_tiny_wan, build_tiny_wan_i2v

NO_CALIBRATION = {
    "calibrate_at_start": False,
    "calibrate_when_idle": False,
}  # its default window is slow on a CPU

SIZE = 32  # 4x4 latent pixels: Wan's VAE compresses 8x in space
SMALL = {"width": SIZE, "height": SIZE, "fps": 8.0, "num_frames": 21, "segment_frames": 9,
         "overlap_frames": 5, "num_inference_steps": 2}  # fmt: skip
NONE = np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Toy convolutions: a second thread costs ~10x here in synchronisation, on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> WanGenerator:
    return WanGenerator(build_tiny_wan(tmp_path_factory.mktemp("wan") / "tiny-wan"))


@pytest.fixture(scope="module")
def wan_i2v(tmp_path_factory: pytest.TempPathFactory) -> WanGenerator:
    return WanGenerator(build_tiny_wan_i2v(tmp_path_factory.mktemp("wan") / "tiny-wan-i2v"))


def request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"prompt": "a red ball moving left", "seed": 7, **SMALL}
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def all_frames(generator: WanGenerator, asked: GenerationRequest) -> np.ndarray:
    return np.concatenate([segment.frames for segment in generator.segments(asked)])


def clip(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)


def test_four_segments_stream_as_one_fmp4(wan: WanGenerator) -> None:
    job = SegmentPipeline(wan).open(request())
    encoded: list[EncodedSegment] = []
    job.run(encoded.append)
    # 9 frames, then 4 new frames a window after its 5 held ones.
    assert [e.segment.num_frames for e in encoded] == [9, 4, 4, 4]
    with av.open(io.BytesIO(job.init_segment + b"".join(e.fragment for e in encoded))) as c:
        assert len(list(c.decode(video=0))) == 21
    assert wan.describe()["modes"] == ["t2v", "i2v", "v2v", "extend"]


def test_the_overlap_conditions_the_next_window(wan: WanGenerator) -> None:
    resolved = wan.resolve(request())
    held_a, held_b = clip(5, 1), clip(5, 2)
    with_a = wan.generate_window(resolved, 1, held_a, lambda s, t: None)
    again_a = wan.generate_window(resolved, 1, held_a, lambda s, t: None)
    with_b = wan.generate_window(resolved, 1, held_b, lambda s, t: None)
    plain = wan.generate_window(resolved, 1, NONE, lambda s, t: None)
    np.testing.assert_array_equal(with_a, again_a)  # deterministic for (seed, index, given)
    # The frames after the held ones follow them: other held frames, other new frames.
    assert not np.array_equal(with_a[5:], with_b[5:])
    assert not np.array_equal(with_a[5:], plain[5:])


def test_same_seed_same_video_other_seed_other_video(wan: WanGenerator) -> None:
    first = all_frames(wan, request())
    np.testing.assert_array_equal(first, all_frames(wan, request()))
    assert not np.array_equal(first, all_frames(wan, request(seed=8)))


def test_a_reference_image_is_frame_zero(wan: WanGenerator) -> None:
    image = np.full((SIZE, SIZE, 3), (200, 40, 40), dtype=np.uint8)
    frames = all_frames(wan, request(num_frames=9, reference_image=image))
    np.testing.assert_array_equal(frames[0], image)
    assert not np.array_equal(frames[1:], all_frames(wan, request(num_frames=9))[1:])


def test_extend_video_continues_after_its_frames(wan: WanGenerator) -> None:
    video = clip(12, 3)
    frames = all_frames(wan, request(num_frames=8, extend_video=video))
    assert frames.shape == (8, SIZE, SIZE, 3)  # the video's own frames are not repeated
    other = all_frames(wan, request(num_frames=8, extend_video=clip(12, 4)))
    assert not np.array_equal(frames, other)


def test_video_to_video_keeps_the_length_and_follows_strength(wan: WanGenerator) -> None:
    video = clip(13, 5)
    steps: list[tuple[int, int, int]] = []
    asked = request(num_frames=None, num_inference_steps=4, video=video, strength=0.5)
    segments = list(wan.segments(asked, progress=lambda *call: steps.append(call)))
    frames = np.concatenate([s.frames for s in segments])
    assert frames.shape == (13, SIZE, SIZE, 3)  # the video's own length
    assert steps == [(s, k, 2) for s in range(2) for k in (1, 2)]  # half of the 4 steps run
    stronger = all_frames(wan, request(num_frames=None, num_inference_steps=4, video=video))
    other = all_frames(wan, request(num_frames=None, num_inference_steps=4, video=clip(13, 6)))
    assert not np.array_equal(frames, stronger)
    assert not np.array_equal(stronger, other)


def test_a_size_off_the_multiple_is_made_at_the_nearest(wan: WanGenerator) -> None:
    made = wan.resolve(request(width=40, height=56))
    assert (made.width, made.height) == (32, 48)  # multiples of 16, ties down


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"strength": 0.5}, "strength"),  # no video to transform
        ({"video": clip(9), "strength": 1.5}, "strength"),
        ({"video": clip(9), "num_frames": 12}, "num_frames"),  # longer than the video
        ({"video": clip(9), "reference_image": clip(1)[0]}, "video"),
        ({"overlap_frames": 4}, "overlap_frames"),
    ],
)
def test_requests_wan_cannot_take_are_invalid(
    wan: WanGenerator, overrides: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        wan.resolve(request(**overrides))
    assert caught.value.param == param


def test_a_backend_without_v2v_refuses_a_video(tmp_path: Path) -> None:
    embedded = EmbeddedGenerator()
    with pytest.raises(InvalidRequest, match="cannot do video to video") as caught:
        embedded.resolve(GenerationRequest(prompt="a ball", video=clip(4)))
    assert caught.value.param == "video"


def test_windows_batch_as_they_come_out_alone(wan: WanGenerator) -> None:
    first = wan.resolve(request())
    second = wan.resolve(request(prompt="the blue circle", seed=9))
    tasks = [WindowTask(first, 1, clip(5, 1), 4), WindowTask(second, 1, clip(5, 2), 4)]
    assert wan.batch_key(tasks[0]) == wan.batch_key(tasks[1])
    batched = wan.run_batch(tasks, lambda item, step, total: None)
    for task, window in zip(tasks, batched, strict=True):
        alone = wan.generate_window(task.request, task.index, task.given, lambda s, t: None)
        assert np.abs(np.asarray(window, np.int16) - alone).max() <= 2  # float rounding only
    assert wan.describe()["batching"] is True


def test_wan22_switches_to_the_low_noise_expert(tmp_path: Path) -> None:
    two_stage = WanGenerator(build_tiny_wan(tmp_path / "wan22", two_stage=True))
    calls = {"transformer": 0, "transformer_2": 0}
    for name in calls:
        module = getattr(two_stage.pipe, name)

        def count(*args: object, _name: str = name) -> None:
            calls[_name] += 1

        module.register_forward_hook(count)
    frames = all_frames(two_stage, request(num_frames=9, num_inference_steps=4))
    assert frames.shape == (9, SIZE, SIZE, 3)
    # Guided (cond and uncond): two calls a step; the boundary (875) splits the 4 steps.
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0
    assert calls["transformer"] + calls["transformer_2"] == 8
    assert two_stage.describe()["two_stage"] is True


def test_image_to_video_weights_start_from_the_image(wan_i2v: WanGenerator) -> None:
    image = np.full((SIZE, SIZE, 3), (30, 160, 90), dtype=np.uint8)
    frames = all_frames(wan_i2v, request(num_frames=13, reference_image=image))
    assert frames.shape == (13, SIZE, SIZE, 3)
    np.testing.assert_array_equal(frames[0], image)
    other = all_frames(wan_i2v, request(num_frames=13, reference_image=255 - image))
    assert not np.array_equal(frames[1:], other[1:])  # the image conditions what follows
    assert wan_i2v.describe()["modes"] == ["i2v", "extend"]
    with pytest.raises(InvalidRequest) as caught:  # no text-to-video: it needs an image
        wan_i2v.resolve(request())
    assert caught.value.param == "reference_image"
    with pytest.raises(InvalidRequest) as refused:
        wan_i2v.resolve(request(num_frames=None, video=clip(9)))
    assert refused.value.param == "video"
    # A remix drops the source's image: the check the remix route makes refuses it too.
    remixed = remix(wan_i2v.resolve(request(reference_image=image)), "another", Limits())
    with pytest.raises(InvalidRequest) as no_image:
        check_modes(remixed, wan_i2v.modes, wan_i2v.name)
    assert no_image.value.param == "reference_image"


def test_another_family_is_a_model_load_error(tmp_path: Path) -> None:
    ltx = build_tiny_ltx(tmp_path / "ltx")
    with pytest.raises(ModelLoadError, match="LTXConditionPipeline pipeline, not Wan"):
        WanGenerator(ltx)
    with pytest.raises(ModelLoadError, match="not a directory"):
        WanGenerator(tmp_path / "missing")


def _mp4(frames: np.ndarray, fps: int = 8) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


def test_the_server_streams_a_video_to_video_job(wan: WanGenerator) -> None:
    source = np.zeros((13, SIZE, SIZE, 3), dtype=np.uint8)
    source[:, :, : SIZE // 2] = 220  # a bright left half, which survives the H.264 round trip
    body = {"prompt": "a red ball moving left", "seed": 5, "size": f"{SIZE}x{SIZE}",
            "segment_frames": 9, "overlap_frames": 5, "num_inference_steps": 2,
            "video": base64.b64encode(_mp4(source)).decode(), "strength": 0.5}  # fmt: skip
    server = ServerThread(NO_CALIBRATION, generator=wan).start()
    try:

        async def scenario() -> object:
            async with httpx.AsyncClient(timeout=120) as client:
                return await read_sse(client, "POST", f"{server.url}/generate-stream",
                                      json_body=body)  # fmt: skip

        stream = asyncio.run(scenario())
    finally:
        server.stop()
    kinds = [kind for kind, _ in stream.events]  # type: ignore[attr-defined]
    assert kinds[0] == "start" and kinds[-1] == "complete", kinds
    segments = [data for kind, data in stream.events if kind == "segment"]  # type: ignore[attr-defined]
    counts = []
    for data in segments:
        with av.open(io.BytesIO(b64(data, "segment"))) as container:
            counts.append(len(list(container.decode(video=0))))
    assert counts == [9, 4]  # the 13 frames of the video, transformed


def test_the_loop_leaves_gradients_on_for_the_process(wan: WanGenerator) -> None:
    # The loop runs under no_grad; it must not leave gradients off for the process.
    wan.generate_window(wan.resolve(request()), 0, NONE, lambda s, t: None)
    assert torch.is_grad_enabled()


def test_the_registry_loads_a_wan_checkpoint_by_its_model_index(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from segment_pipeline import load_generator
    from segment_pipeline.backends.registry import REGISTRY
    from segment_pipeline.backends.wan import WAN_PIPELINES

    assert {b.name: b for b in REGISTRY}["wan"].pipelines == WAN_PIPELINES
    path = build_tiny_wan(tmp_path_factory.mktemp("by-index") / "tiny-wan")
    assert isinstance(load_generator(model_path=path), WanGenerator)
