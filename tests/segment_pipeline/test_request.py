import numpy as np
import pytest

from segment_pipeline import GenerationRequest, InvalidRequest, Limits, remix
from segment_pipeline.media import read_image
from segment_pipeline.request import GeneratorDefaults, resolve

DEFAULTS = GeneratorDefaults()


def check(**fields):
    return resolve(GenerationRequest(**{"prompt": "a red ball", **fields}), DEFAULTS, Limits())


def test_defaults_fill_every_field():
    r = check(seed=3)
    assert (r.width, r.height, r.fps, r.total_frames, r.seed) == (128, 128, 8.0, 32, 3)
    assert r.total_segments == 4  # 12 + 8 + 8 + 8 >= 32


def test_random_seed_is_drawn_when_missing():
    assert isinstance(check().seed, int)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 3000}, "prompt"),
        ({"width": 0}, "width"),
        ({"width": 2000}, "width"),
        ({"height": -8}, "height"),
        ({"width": 128.5}, "width"),
        ({"fps": 0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": -1}, "seconds"),
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 10**7}, "num_frames"),
        ({"seconds": 1, "num_frames": 8}, "num_frames"),
        ({"unbounded": True, "seconds": 2}, "seconds"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 10_000}, "num_inference_steps"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"segment_frames": 1}, "segment_frames"),
        ({"overlap_frames": 12}, "overlap_frames"),
        ({"overlap_frames": -1}, "overlap_frames"),
        ({"seed": -5}, "seed"),
    ],
)
def test_bad_fields_name_the_parameter(fields, param):
    with pytest.raises(InvalidRequest) as info:
        check(**fields)
    assert info.value.param == param


def test_an_odd_size_rounds_to_even_for_h264():
    r = check(width=129, height=97)  # H.264 4:2:0 needs even sides; ties go down
    assert (r.width, r.height) == (128, 96)


def test_unbounded_has_no_total():
    r = check(unbounded=True)
    assert r.total_frames is None and r.total_segments is None


def test_segment_count_and_frames_add_up():
    r = check(num_frames=13, segment_frames=6, overlap_frames=2)
    # 6 + 4 + 4 = 14 >= 13
    assert r.total_segments == 3


def test_reference_image_is_resized_and_checked():
    image = np.zeros((64, 48, 3), np.uint8)
    r = check(reference_image=image)
    assert r.reference_image.shape == (128, 128, 3)
    with pytest.raises(InvalidRequest) as info:
        check(reference_image=np.zeros((8, 8), np.float32))
    assert info.value.param == "reference_image"


def test_reference_image_and_extend_video_exclude_each_other():
    with pytest.raises(InvalidRequest):
        check(
            reference_image=np.zeros((8, 8, 3), np.uint8),
            extend_video=np.zeros((2, 8, 8, 3), np.uint8),
        )


def test_unreadable_image_is_invalid_request(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InvalidRequest) as info:
        read_image(bad)
    assert info.value.param == "reference_image"
    with pytest.raises(InvalidRequest):
        read_image(tmp_path / "missing.png")


def test_a_remix_keeps_every_resolved_field_but_the_prompt_and_inputs():
    image = np.full((64, 64, 3), 9, np.uint8)
    source = check(seed=5, width=64, height=64, fps=12.0, num_frames=30, audio_scale=0.3,
                   guidance_scale=2.0, segment_frames=10, overlap_frames=2, negative_prompt="b",
                   num_inference_steps=3, reference_image=image)  # fmt: skip
    remixed = remix(source, "a green ball", Limits())
    assert remixed.prompt == "a green ball" and remixed.reference_image is None
    for name in ("seed", "width", "height", "fps", "total_frames", "audio_scale",
                 "guidance_scale", "segment_frames", "overlap_frames", "negative_prompt",
                 "num_inference_steps"):  # fmt: skip
        assert getattr(remixed, name) == getattr(source, name), name
    with pytest.raises(InvalidRequest) as info:
        remix(source, "x" * 3000, Limits())
    assert info.value.param == "prompt"


def test_a_video_to_transform_sets_the_length_and_strength():
    video = np.zeros((20, 64, 64, 3), np.uint8)
    r = check(video=video)
    assert r.total_frames == 20 and r.strength == 0.8  # its length; diffusers' strength
    assert r.video is not None and r.video.shape == (20, 128, 128, 3)  # at the request's size
    assert check(video=video, num_frames=9, strength=1).total_frames == 9  # its start
    assert remix(r, "another", Limits()).video is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"strength": 0.5}, "strength"),
        ({"video": np.zeros((4, 8, 8, 3), np.uint8), "strength": 0}, "strength"),
        ({"video": np.zeros((4, 8, 8, 3), np.uint8), "seconds": 10.0}, "seconds"),
        ({"video": np.zeros((4, 8, 8, 3), np.uint8), "unbounded": True}, "unbounded"),
        (
            {"video": np.zeros((4, 8, 8, 3), np.uint8), "extend_video": np.zeros((2, 8, 8, 3))},
            "video",
        ),
    ],
)
def test_video_fields_that_cannot_be_met_name_the_parameter(fields, param):
    with pytest.raises(InvalidRequest) as caught:
        check(**fields)
    assert caught.value.param == param


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"reference_image": np.zeros((128, 128, 3), np.uint8)},
        {"extend_video": np.zeros((6, 128, 128, 3), np.uint8)},
    ],
)
def test_window_start_is_where_the_segment_loop_starts_each_window(fields):
    from segment_pipeline import SegmentCursor

    request = check(num_frames=40, **fields)
    cursor = SegmentCursor(request)
    for index in range(request.total_segments):
        task = cursor.next_task()
        assert request.window_start(index) == task.start_frame
        cursor.advance(np.zeros((12, 128, 128, 3), np.uint8), 0.0)
