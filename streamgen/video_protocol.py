"""`/v1/videos` request and response models (pydantic, the HTTP edge): OpenAI's video API
and the fields of NVIDIA Dynamo's video request (`fps`, `num_frames`, `num_inference_steps`,
`guidance_scale`, `negative_prompt`, `seed`, `user`, `response_format`, and the same under
`nvext`). `video_params` turns a create request into the `GenerationParams` every generating
route submits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from segment_pipeline import MAX_SEED, SIZE_PATTERN

from .errors import InvalidParameter
from .protocol import ErrorBody, GenerationParams, Media

# The Dynamo request's generation fields, named as `GenerationParams` names them.
_DYNAMO_FIELDS = (
    "fps",
    "num_frames",
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "seed",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class ImageReference(_Model):
    """An image given by reference: only ``image_url`` as a data URL (or base64) is served."""

    image_url: str | None = Field(None, description="A data: URL (or base64) of the image.")
    file_id: str | None = Field(None, description="Not served: this server keeps no files.")


def _reference_kind(value: object) -> str:
    """Which form an `input_reference` takes: an object only when it is a valid one, so a
    wrong one is refused as a string is (``input_reference.str``), as a plain union does."""
    if isinstance(value, ImageReference):
        return "ImageReference"
    if isinstance(value, dict):
        try:
            ImageReference.model_validate(value)
        except ValidationError:
            return "str"
        return "ImageReference"
    return "str"


def _flat_union(schema: dict[str, Any]) -> None:
    """The schema of a tagged union or null as the plain ``anyOf`` of its forms (the tags
    are how the server reads a value, nothing a client sends)."""
    schema["anyOf"] = [form for part in schema["anyOf"] for form in part.get("oneOf", [part])]


class VideoNvExt(_Model):
    """The Dynamo request's NVIDIA extensions (`nvext`): the same fields as at the top."""

    fps: float | None = None
    num_frames: int | None = None
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


class VideoCreateRequest(_Model):
    """`POST /v1/videos`: OpenAI's fields, and the Dynamo request's (at the top level or
    under `nvext`). `num_frames` wins over `seconds` when both are given."""

    prompt: str
    model: str | None = None
    seconds: float | str | None = Field(None, description="Video length (seconds).")
    size: str | None = Field(
        None,
        description='"WxH" (pixels) or a preset (480p, 540p, 720p, 1080p); rounded to the '
        "nearest size the model makes (the answer's size says which).",
        json_schema_extra={"pattern": SIZE_PATTERN},
    )
    fps: float | None = Field(None, description="Frames per second.")
    num_frames: int | None = Field(
        None,
        description="Video length (frames); wins over seconds.",
        json_schema_extra={"minimum": 1},
    )
    negative_prompt: str | None = Field(None, description="What to steer away from.")
    num_inference_steps: int | None = Field(
        None, description="Denoising steps per segment.", json_schema_extra={"minimum": 1}
    )
    guidance_scale: float | None = Field(
        None, description="Classifier-free guidance scale.", json_schema_extra={"minimum": 0}
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Noise seed; random if none.")
    user: str | None = Field(
        None, max_length=256, description="The caller's end user (accepted, not stored)."
    )
    response_format: Literal["url", "b64_json"] | None = Field(
        None,
        description="Given: answer once the video is done, with data[0].url or data[0].b64_json "
        "(Dynamo-style); left out: answer at once, queued (OpenAI-style).",
    )
    nvext: VideoNvExt | None = Field(None, description="Dynamo's extensions (the same fields).")
    input_reference: (
        Annotated[
            Annotated[Media, Tag("str")] | Annotated[ImageReference, Tag("ImageReference")],
            Discriminator(_reference_kind),
        ]
        | None
    ) = Field(
        None,
        description="An image that becomes frame 0: a multipart file, base64 or a data URL, "
        'or {"image_url": data URL}.',
        repr=False,
        json_schema_extra=lambda schema: _flat_union(schema),
    )


class VideoRemixRequest(_Model):
    """`POST /v1/videos/{video_id}/remix`: the same video's settings and seed, a new prompt."""

    prompt: str


class VideoData(BaseModel):
    """The finished video, as `response_format` asked: a link or the MP4 in base64."""

    url: str | None = None
    b64_json: str | None = None


class VideoObject(BaseModel):
    """OpenAI-style video object (`/v1/videos/{id}`). Times are Unix seconds (integers)."""

    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = Field(description="Percent done, 0..100.")
    created_at: int
    completed_at: int | None
    model: str
    prompt: str
    seconds: str
    size: str = Field(description='"WxH": the size made (a size asked for is rounded).')
    width: int
    height: int
    error: ErrorBody | None
    remixed_from_video_id: str | None = None
    inference_time_s: float | None = Field(
        None, description="Once completed: wall seconds from its start to its end."
    )
    data: list[VideoData] | None = Field(
        default=None, description="With response_format: the finished video (url or b64_json)."
    )


class VideoList(BaseModel):
    """`GET /v1/videos`: a page of videos, newest first unless ``order=asc``."""

    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


def video_params(request: VideoCreateRequest) -> GenerationParams:
    """The generation parameters a `/v1/videos` request stands for."""
    seconds: float | None = None
    if request.seconds is not None:
        try:
            seconds = float(request.seconds)
        except ValueError as exc:
            raise InvalidParameter(
                f"seconds must be a number, got {request.seconds!r}", param="seconds"
            ) from exc
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "model": request.model,
        "size": request.size,
        "reference_image": _reference_image(request.input_reference),
    }
    extension = request.nvext.model_dump(exclude_none=True) if request.nvext else {}
    for name in _DYNAMO_FIELDS:
        value = getattr(request, name)
        if value is not None and name in extension:
            raise InvalidParameter(
                f"give {name} either at the top level or in nvext, not both", param=name
            )
        fields[name] = extension.get(name, value)
    # As the Dynamo server does: a frame count is the length, whatever seconds says.
    fields["seconds"] = None if fields["num_frames"] is not None else seconds
    return GenerationParams.model_validate({k: v for k, v in fields.items() if v is not None})


def _reference_image(reference: str | bytes | ImageReference | None) -> str | bytes | None:
    """The image (uploaded bytes, base64 or a data URL) an OpenAI-style `input_reference`
    stands for."""
    if reference is None or isinstance(reference, str | bytes):
        return reference
    if reference.file_id is not None:
        raise InvalidParameter(
            "input_reference.file_id: this server keeps no files; send the image itself "
            "(a multipart file, or image_url as a data URL)",
            param="input_reference",
        )
    url = reference.image_url
    if url is None:
        raise InvalidParameter("input_reference needs image_url", param="input_reference")
    if url.lower().startswith(("http://", "https://")):
        raise InvalidParameter(
            "input_reference.image_url: this server fetches nothing from the network; send "
            "the image as a data URL or a multipart file",
            param="input_reference",
        )
    return url
