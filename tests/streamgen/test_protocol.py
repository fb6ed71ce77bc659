"""Request models at the HTTP edge and the error hierarchy, without a server."""

from __future__ import annotations

import base64
import io

import av
import numpy as np
import pytest
from PIL import Image

from segment_pipeline import EncoderError, GenerationCancelled, InvalidRequest, ModelLoadError
from streamgen import errors
from streamgen.protocol import (
    GenerateRequest,
    GenerationParams,
    decode_image,
    parse,
    to_generation_request,
)
from streamgen.video_protocol import VideoCreateRequest, video_params


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_aliases_map_onto_the_pipeline_request() -> None:
    params = parse(
        GenerationParams,
        {"prompt": "a red ball", "num_steps": 3, "size": "96x64", "duration": 2.5, "seed": 4},
    )
    request = to_generation_request(params)
    assert request.num_inference_steps == 3
    assert (request.width, request.height) == (96, 64)
    assert request.seconds == 2.5 and request.num_frames is None and request.seed == 4


def test_num_frames_and_unbounded_pass_through() -> None:
    request = to_generation_request(parse(GenerationParams, {"prompt": "p", "num_frames": 20}))
    assert request.num_frames == 20 and request.seconds is None
    assert to_generation_request(
        parse(GenerationParams, {"prompt": "p", "unbounded": True})
    ).unbounded


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"prompt": "p", "colour": "red"}, "colour"),
        ({"prompt": "p", "width": "wide"}, "width"),
        ({"prompt": "p", "width": 64.5}, "width"),
        ({"num_frames": 3}, "prompt"),
        ({"prompt": "p", "priority": 1000}, "priority"),
        ({"prompt": "p", "unbounded": "sometimes"}, "unbounded"),
    ],
)
def test_bad_fields_are_422_naming_the_field(payload: dict, param: str) -> None:
    with pytest.raises(errors.InvalidParameter) as info:
        parse(GenerationParams, payload)
    assert info.value.status == 422 and info.value.param == param
    assert param in info.value.message


def test_response_format_is_only_for_generate() -> None:
    assert (
        parse(GenerateRequest, {"prompt": "p", "response_format": "url"}).response_format == "url"
    )
    with pytest.raises(errors.InvalidParameter) as info:
        parse(GenerationParams, {"prompt": "p", "response_format": "url"})
    assert info.value.param == "response_format"
    with pytest.raises(errors.InvalidParameter):
        parse(GenerateRequest, {"prompt": "p", "response_format": "gif"})


def test_a_body_that_is_not_an_object_is_400() -> None:
    with pytest.raises(errors.MalformedRequest) as info:
        parse(GenerationParams, ["prompt"])
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"prompt": "p", "size": "64 by 64"}, "size"),
        ({"prompt": "p", "size": "64x64", "width": 64}, "size"),
        ({"prompt": "p", "seconds": 1, "duration": 1}, "duration"),
        ({"prompt": "p", "reference_image": "not base64!"}, "reference_image"),
        ({"prompt": "p", "reference_image": base64.b64encode(b"text").decode()}, "reference_image"),
        (
            {"prompt": "p", "extend_video": base64.b64encode(b"not a video").decode()},
            "extend_video",
        ),
        ({"prompt": "p", "video": base64.b64encode(b"not a video").decode()}, "video"),
    ],
)
def test_conversion_errors_name_the_field(payload: dict, param: str) -> None:
    with pytest.raises(errors.InvalidParameter) as info:
        to_generation_request(parse(GenerationParams, payload))
    assert info.value.param == param


def _mp4(frames: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(frames):
            picture = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 90, np.uint8), "rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_a_video_to_transform_is_read_whole_in_every_form() -> None:
    mp4 = _mp4(7)
    text = base64.b64encode(mp4).decode()
    for sent in (mp4, text, "data:video/mp4;base64," + text):  # multipart, base64, data URL
        params = parse(GenerationParams, {"prompt": "p", "video": sent, "strength": 0.3})
        request = to_generation_request(params, default_overlap=1)
        assert request.video is not None and request.video.shape == (7, 16, 16, 3)
        assert request.strength == 0.3


def test_reference_image_as_base64_or_data_url() -> None:
    png = _png(8, 6)
    plain = decode_image(base64.b64encode(png).decode())
    data_url = decode_image("data:image/png;base64," + base64.b64encode(png).decode())
    assert plain.shape == data_url.shape == (6, 8, 3) and plain.dtype == np.uint8
    assert int(plain[0, 0, 0]) == 200


def test_uploaded_files_are_read_as_bytes_and_json_text_as_base64() -> None:
    png = _png(8, 6)
    uploaded = parse(GenerationParams, {"prompt": "p", "reference_image": png})
    assert uploaded.reference_image == png  # a multipart file: its bytes, no base64 trip
    sent = parse(GenerationParams, {"prompt": "p", "image_base64": base64.b64encode(png).decode()})
    for params in (uploaded, sent):
        image = to_generation_request(params).reference_image
        assert image is not None and image.shape == (6, 8, 3) and int(image[0, 0, 0]) == 200
    video = parse(VideoCreateRequest, {"prompt": "p", "input_reference": png})
    assert video_params(video).reference_image == png
    with pytest.raises(errors.InvalidParameter) as info:  # text is base64, never raw bytes
        to_generation_request(parse(GenerationParams, {"prompt": "p", "audio": "%%"}))
    assert info.value.param == "audio" and "not valid base64" in info.value.message


@pytest.mark.parametrize(
    ("model", "field", "param"),
    [
        (GenerationParams, "reference_image", "reference_image"),
        (GenerationParams, "extend_video", "extend_video"),
        (GenerationParams, "video", "video"),
        (VideoCreateRequest, "input_reference", "input_reference.str"),
    ],
)
@pytest.mark.parametrize("value", [5, ["x"], {"a": 1}])
def test_a_media_field_that_is_no_string_is_refused_as_a_string_field(
    model: type, field: str, param: str, value: object
) -> None:
    with pytest.raises(errors.InvalidParameter) as info:
        parse(model, {"prompt": "p", field: value})
    assert info.value.param == param
    assert info.value.message == f"{param}: Input should be a valid string"


def test_openai_video_request() -> None:
    params = video_params(
        parse(VideoCreateRequest, {"prompt": "p", "seconds": "4", "size": "64x32"})
    )
    request = to_generation_request(params)
    assert request.seconds == 4.0 and (request.width, request.height) == (64, 32)
    with pytest.raises(errors.InvalidParameter) as info:
        video_params(parse(VideoCreateRequest, {"prompt": "p", "seconds": "four"}))
    assert info.value.param == "seconds"


@pytest.mark.parametrize(
    ("size", "made"),
    [("480p", (832, 480)), ("540p", (960, 544)), ("720P", (1280, 720)), ("1080p", (1920, 1080)),
     ("720x1280", (720, 1280)), ("1024*1792", (1024, 1792))],
)  # fmt: skip
def test_sizes_and_presets_are_read_on_every_route(size: str, made: tuple[int, int]) -> None:
    for params in (
        parse(GenerationParams, {"prompt": "p", "size": size}),
        video_params(parse(VideoCreateRequest, {"prompt": "p", "size": size})),
    ):
        request = to_generation_request(params)
        assert (request.width, request.height) == made


DYNAMO = {"fps": 12.0, "num_frames": 25, "negative_prompt": "blur", "num_inference_steps": 3,
          "guidance_scale": 2.5, "seed": 9}  # fmt: skip


@pytest.mark.parametrize("where", ["top", "nvext"])
def test_the_dynamo_request_fields_reach_the_pipeline(where: str) -> None:
    body = {"prompt": "p", "model": "m", "seconds": 4, "user": "u-1", "response_format": "url"}
    body |= DYNAMO if where == "top" else {"nvext": DYNAMO}
    request = to_generation_request(video_params(parse(VideoCreateRequest, body)))
    assert request.fps == 12.0 and request.negative_prompt == "blur" and request.seed == 9
    assert request.num_inference_steps == 3 and request.guidance_scale == 2.5
    # num_frames wins over seconds, as the Dynamo server has it.
    assert request.num_frames == 25 and request.seconds is None


def test_a_dynamo_field_given_twice_or_unknown_is_refused() -> None:
    with pytest.raises(errors.InvalidParameter) as twice:
        video_params(parse(VideoCreateRequest, {"prompt": "p", "fps": 8, "nvext": {"fps": 12}}))
    assert twice.value.param == "fps"
    with pytest.raises(errors.InvalidParameter) as unknown:
        parse(VideoCreateRequest, {"prompt": "p", "nvext": {"boundary_ratio": 0.5}})
    assert unknown.value.param == "nvext.boundary_ratio"
    with pytest.raises(errors.InvalidParameter) as form:
        parse(VideoCreateRequest, {"prompt": "p", "response_format": "mp4"})
    assert form.value.param == "response_format"


def test_pipeline_errors_map_to_one_status_each() -> None:
    cases = [
        (InvalidRequest("bad", param="fps"), 422, "fps"),
        (GenerationCancelled(), 409, None),
        (ModelLoadError("missing"), 503, None),
        (EncoderError("x264"), 500, None),
    ]
    for exc, status, param in cases:
        mapped = errors.from_pipeline_error(exc)
        assert mapped.status == status and mapped.param == param
        body = mapped.to_dict()["error"]
        assert set(body) == {"code", "message", "param"} and body["message"]


def test_http_exceptions_map_to_json_errors() -> None:
    for status, cls in (
        (404, errors.NotFound),
        (405, errors.MethodNotAllowed),
        (413, errors.PayloadTooLarge),
    ):
        mapped = errors.from_http_exception(status, "text")
        assert isinstance(mapped, cls) and mapped.status == status
    odd = errors.from_http_exception(418, "teapot")
    assert odd.status == 418 and odd.to_dict()["error"]["code"] == "http_error"
