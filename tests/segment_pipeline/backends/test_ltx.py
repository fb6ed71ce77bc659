"""The LTX-Video backend, end to end on CPU with a tiny random checkpoint built in-process.

The checkpoint (see `ltx_tiny.py`) has LTX-Video's real classes and compression ratios, so
these tests run the same `LTXConditionPipeline` code path as a published checkpoint does:
loading with `local_files_only`, overlap conditioning, per-step callbacks, decoding.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from segment_pipeline.backends import load_generator
from segment_pipeline.backends.ltx import LTXGenerator
from segment_pipeline.errors import GenerationCancelled, InvalidRequest, ModelLoadError
from segment_pipeline.generator import CancelEvent
from segment_pipeline.pipeline import EncodedSegment, SegmentPipeline
from segment_pipeline.request import GenerationRequest

from .ltx_tiny import build_other_pipeline, build_tiny_ltx

SIZE = 32  # one latent pixel: LTX-Video's VAE compresses 32x in space


@pytest.fixture(scope="session")
def ltx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx")


@pytest.fixture(scope="session")
def ltx(ltx_dir: Path) -> LTXGenerator:
    generator = load_generator("ltx", ltx_dir)
    assert isinstance(generator, LTXGenerator)
    return generator


def tiny_request(**overrides: object) -> GenerationRequest:
    """17-frame segments overlapping 9: 17 new frames first, then 8 per segment."""
    fields: dict[str, object] = dict(
        prompt="a red ball moving left",
        seed=7,
        width=SIZE,
        height=SIZE,
        fps=8.0,
        num_frames=33,
        segment_frames=17,
        overlap_frames=9,
        num_inference_steps=2,
    )
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def all_frames(generator: LTXGenerator, request: GenerationRequest) -> np.ndarray:
    return np.concatenate([segment.frames for segment in generator.segments(request)])


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_three_segments_stream_as_one_fmp4(ltx: LTXGenerator) -> None:
    job = SegmentPipeline(ltx).open(tiny_request())
    assert job.total_segments == 3
    encoded: list[EncodedSegment] = []
    job.run(encoded.append)

    # Overlap frames are emitted once: 17 + 8 + 8 frames, starting where the last one ended.
    assert [e.segment.num_frames for e in encoded] == [17, 8, 8]
    assert [e.segment.start_frame for e in encoded] == [0, 17, 25]
    assert encoded[-1].segment.is_final
    video = decode(job.init_segment + b"".join(e.fragment for e in encoded))
    assert video.shape == (33, SIZE, SIZE, 3)
    for e in encoded:
        assert decode(e.standalone).shape == (e.segment.num_frames, SIZE, SIZE, 3)


def test_window_has_the_segment_shape(ltx: LTXGenerator) -> None:
    request = ltx.resolve(tiny_request())
    given = np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8)
    window = ltx.generate_window(request, 0, given, lambda step, total: None)
    assert window.dtype == np.uint8
    assert window.shape == (17, SIZE, SIZE, 3)
    assert window.std() > 0  # decoded, not a blank frame


def test_same_seed_same_frames_other_seed_other_frames(ltx: LTXGenerator) -> None:
    request = tiny_request(num_frames=25)
    first = all_frames(ltx, request)
    again = all_frames(ltx, request)
    other = all_frames(ltx, tiny_request(num_frames=25, seed=8))
    assert first.shape == (25, SIZE, SIZE, 3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_given_frames_condition_the_window(ltx: LTXGenerator) -> None:
    request = ltx.resolve(tiny_request())
    rng = np.random.default_rng(0)
    clip_a = rng.integers(0, 256, (9, SIZE, SIZE, 3), dtype=np.uint8)
    clip_b = 255 - clip_a
    none = np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8)
    plain, with_a, with_b = (
        ltx.generate_window(request, 1, given, lambda s, t: None)
        for given in (none, clip_a, clip_b)
    )
    again_a = ltx.generate_window(request, 1, clip_a, lambda s, t: None)
    np.testing.assert_array_equal(with_a, again_a)  # deterministic for (seed, index, given)
    assert not np.array_equal(plain, with_a)
    assert not np.array_equal(with_a, with_b)


def test_reference_image_is_frame_zero(ltx: LTXGenerator) -> None:
    image = np.full((SIZE, SIZE, 3), (200, 40, 40), dtype=np.uint8)
    with_image = all_frames(ltx, tiny_request(num_frames=17, reference_image=image))
    without = all_frames(ltx, tiny_request(num_frames=17))
    assert with_image.shape == (17, SIZE, SIZE, 3)
    np.testing.assert_array_equal(with_image[0], image)
    assert not np.array_equal(with_image[1:], without[1:])


def test_extend_video_continues_after_its_frames(ltx: LTXGenerator) -> None:
    clip = np.random.default_rng(1).integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    frames = all_frames(ltx, tiny_request(num_frames=16, extend_video=clip))
    assert frames.shape == (16, SIZE, SIZE, 3)  # the video's own frames are not repeated


def test_guidance_and_negative_prompt_pass_through(ltx: LTXGenerator) -> None:
    def window(**overrides: object) -> np.ndarray:
        request = ltx.resolve(tiny_request(**overrides))
        given = np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8)
        return ltx.generate_window(request, 0, given, lambda s, t: None)

    unguided = window(guidance_scale=1.0, negative_prompt="blue")
    np.testing.assert_array_equal(unguided, window(guidance_scale=1.0, negative_prompt="left"))
    guided_blue = window(guidance_scale=4.0, negative_prompt="blue")
    assert not np.array_equal(guided_blue, unguided)
    assert not np.array_equal(guided_blue, window(guidance_scale=4.0, negative_prompt="right"))


def test_progress_is_reported_after_every_step(ltx: LTXGenerator) -> None:
    calls: list[tuple[int, int, int]] = []
    request = tiny_request(num_frames=25, num_inference_steps=3)
    segments = list(ltx.segments(request, progress=lambda *call: calls.append(call)))
    assert len(segments) == 2
    assert calls == [(s, k, 3) for s in range(2) for k in range(1, 4)]


def test_cancel_stops_within_one_step(ltx: LTXGenerator) -> None:
    cancel = CancelEvent()
    calls: list[tuple[int, int, int]] = []

    def progress(segment: int, step: int, total: int) -> None:
        calls.append((segment, step, total))
        if (segment, step) == (1, 1):
            cancel.set()

    job = SegmentPipeline(ltx).open(tiny_request(num_inference_steps=4))
    encoded: list[EncodedSegment] = []
    with pytest.raises(GenerationCancelled):
        job.run(encoded.append, progress=progress, cancel=cancel)
    assert calls == [(0, k, 4) for k in range(1, 5)] + [(1, 1, 4)]
    assert [e.index for e in encoded] == [0]  # the finished segment still went out

    # The pipeline is left usable: the next job runs in full and is still deterministic.
    request = tiny_request(num_frames=17)
    np.testing.assert_array_equal(all_frames(ltx, request), all_frames(ltx, request))


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"segment_frames": 16}, "segment_frames"),
        ({"overlap_frames": 4}, "overlap_frames"),
        (
            {"extend_video": np.zeros((4, SIZE, SIZE, 3), dtype=np.uint8), "num_frames": 9},
            "extend_video",
        ),
    ],
)
def test_sizes_ltx_cannot_take_are_invalid(
    ltx: LTXGenerator, overrides: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        SegmentPipeline(ltx).open(tiny_request(**overrides))
    assert caught.value.param == param
    assert param in str(caught.value)


def test_a_size_off_the_multiple_is_made_at_the_nearest_one(ltx: LTXGenerator) -> None:
    assert ltx.size_multiple == SIZE
    for asked, made in (((1280, 720), (1280, 704)), ((720, 1280), (704, 1280)),
                        ((960, 544), (960, 544)), ((832, 480), (832, 480))):  # fmt: skip
        resolved = ltx.resolve(tiny_request(width=asked[0], height=asked[1]))
        assert (resolved.width, resolved.height) == made
    # A small generation at a rounded size: 80x40 is made as 64x32.
    request = tiny_request(width=80, height=40, num_frames=17)
    assert all_frames(ltx, request).shape == (17, 32, 64, 3)


def test_a_size_over_the_caps_names_the_largest_allowed(ltx: LTXGenerator) -> None:
    with pytest.raises(InvalidRequest) as caught:
        ltx.resolve(tiny_request(width=3840, height=2160))
    assert caught.value.param == "width"
    assert "1920x1920" in caught.value.message and "1920x1056" in caught.value.message


def test_defaults_are_sizes_ltx_can_take(ltx: LTXGenerator) -> None:
    resolved = ltx.resolve(GenerationRequest(prompt="a ball", seed=1))
    assert (resolved.width, resolved.height, resolved.fps) == (768, 512, 24.0)
    assert (resolved.segment_frames, resolved.overlap_frames) == (33, 9)
    assert ltx.describe()["backend"] == "ltx"


def test_missing_directory_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a directory") as caught:
        LTXGenerator(tmp_path / "nowhere")
    assert caught.value.param == "model_path"


def test_directory_without_model_index_is_a_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "transformer").mkdir()
    with pytest.raises(ModelLoadError, match=r"model_index\.json") as caught:
        load_generator("ltx", tmp_path)
    assert caught.value.param == "model_path"


def test_another_pipeline_is_a_model_load_error(tmp_path: Path) -> None:
    other = build_other_pipeline(tmp_path / "ddpm")
    with pytest.raises(ModelLoadError, match="DDPMPipeline pipeline, not LTX-Video"):
        LTXGenerator(other)


def test_broken_component_is_a_model_load_error(ltx_dir: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(ltx_dir, tmp_path / "broken"))
    weights = next((broken / "transformer").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load the LTX-Video checkpoint") as caught:
        LTXGenerator(broken)
    assert caught.value.param == "model_path"


def test_scheduler_with_dynamic_shifting_still_generates(ltx_dir: Path, tmp_path: Path) -> None:
    # Published LTX-Video configs may ask for dynamic shifting, which LTXConditionPipeline
    # cannot feed (it passes no `mu`): that must not fail in the middle of a job.
    shifted = Path(shutil.copytree(ltx_dir, tmp_path / "shifted"))
    config_file = shifted / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["use_dynamic_shifting"] = True
    config_file.write_text(json.dumps(config))
    generator = LTXGenerator(shifted)
    frames = all_frames(generator, tiny_request(num_frames=9, segment_frames=9, overlap_frames=1))
    assert frames.shape == (9, SIZE, SIZE, 3)
