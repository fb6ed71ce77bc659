"""Request and response models at the HTTP edge (pydantic); nothing past `jobs` sees them.

`GenerationParams` is what every generating endpoint accepts (`/generate-stream`,
`/generate-stream-chunked`, `/generate`, `/v1/jobs`, a WebSocket request). It takes the
aliases clients use (`num_steps`, `size: "WxH"`, `duration`), rejects unknown fields, and
`to_generation_request` turns it into a `segment_pipeline.GenerationRequest`; range checks
are left to `SegmentedGenerator.resolve`, whose `InvalidRequest.param` becomes a 422.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from segment_pipeline import (
    MAX_SEED,
    SIZE_PATTERN,
    GenerationRequest,
    InvalidRequest,
    MediaLimits,
    parse_size,
    read_audio,
    read_image,
    read_video,
    read_video_tail,
)

from .errors import InvalidParameter, MalformedRequest

_M = TypeVar("_M", bound="BaseModel")
# Constraints the generator checks (with messages naming the field), stated for OpenAPI.
_POSITIVE: dict[str, Any] = {"exclusiveMinimum": 0}
_AT_LEAST_1: dict[str, Any] = {"minimum": 1}
_AT_LEAST_2: dict[str, Any] = {"minimum": 2}
_DATA_URL = re.compile(r"^data:[\w/+.-]+(;[\w=.-]+)*;base64,", re.IGNORECASE)


def _media(value: object) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    raise PydanticCustomError("string_type", "Input should be a valid string")


# A media file: base64 (or a data URL) in a JSON body, the uploaded bytes themselves from a
# multipart form, so an upload is never encoded only to be decoded again. Errors and the
# schema are those of a string field: what a JSON client sends.
Media = Annotated[str | bytes, PlainValidator(_media), WithJsonSchema({"type": "string"})]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class GenerationParams(_Model):
    """A generation request: a prompt and optional parameters (backend defaults otherwise)."""

    prompt: str = Field(description="What the video shows.", json_schema_extra={"minLength": 1})
    negative_prompt: str = Field("", description="What to steer away from (with guidance).")
    model: str | None = Field(None, description="Model id (see /v1/models); the loaded one.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Noise seed; random when left out."
    )
    width: int | None = Field(
        None, description="Frame width (pixels, even).", json_schema_extra=_AT_LEAST_2
    )
    height: int | None = Field(
        None, description="Frame height (pixels, even).", json_schema_extra=_AT_LEAST_2
    )
    size: str | None = Field(
        None,
        description='"WxH" (pixels) or a preset (480p, 540p, 720p, 1080p); instead of width '
        "and height. Rounded to the nearest size the model makes (the answer says which).",
        json_schema_extra={"pattern": SIZE_PATTERN},
    )
    fps: float | None = Field(None, description="Frames per second.")
    seconds: float | None = Field(
        None, description="Video length (seconds).", json_schema_extra=_POSITIVE
    )
    duration: float | None = Field(
        None, description="Same as seconds.", json_schema_extra=_POSITIVE
    )
    num_frames: int | None = Field(
        None, description="Video length (frames).", json_schema_extra=_AT_LEAST_1
    )
    unbounded: bool = Field(False, description="Generate segments until cancelled.")
    num_inference_steps: int | None = Field(
        None,
        validation_alias=AliasChoices("num_inference_steps", "num_steps"),
        description="Denoising steps per segment (alias: num_steps).",
        json_schema_extra=_AT_LEAST_1,
    )
    guidance_scale: float | None = Field(
        None, description="Classifier-free guidance scale.", json_schema_extra={"minimum": 0}
    )
    segment_frames: int | None = Field(
        None, description="Frames per generated window.", json_schema_extra=_AT_LEAST_2
    )
    overlap_frames: int | None = Field(
        None,
        description="Frames each segment is conditioned on from the one before (fewer than "
        "segment_frames).",
        json_schema_extra={"minimum": 0},
    )
    reference_image: Media | None = Field(
        None,
        validation_alias=AliasChoices("reference_image", "image_base64"),
        description="Image (base64 or data URL) that becomes frame 0 (alias: image_base64).",
        repr=False,
    )
    extend_video: Media | None = Field(
        None, description="Video (base64 or data URL) whose end the output continues.", repr=False
    )
    video: Media | None = Field(
        None, description="Video (base64 or data URL) to re-make at its length (v2v).", repr=False
    )
    strength: float | None = Field(None, gt=0, le=1, description="With video: how much is re-made.")
    audio: Media | None = Field(
        None,
        validation_alias=AliasChoices("audio", "audio_base64"),
        description="Audio (base64 or data URL of a WAV, MP3, AAC, FLAC, Ogg or M4A file): "
        "the video's audio track; the video lasts as long as it unless seconds or num_frames "
        "is given (alias: audio_base64).",
        repr=False,
    )
    audio_scale: float | None = Field(
        None, ge=0, description="How strongly a model that follows audio follows it (1)."
    )
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first; FIFO within.")


class GenerateRequest(GenerationParams):
    """`POST /generate`: waits for the whole video."""

    response_format: Literal["mp4", "b64_json", "url"] = Field(
        "mp4", description="mp4: the bytes; b64_json: JSON with base64; url: a link."
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class JobLinks(BaseModel):
    self: str
    events: str
    video: str


class JobObject(BaseModel):
    """A job's state (`/v1/jobs/{id}`). Times are Unix seconds."""

    id: str
    object: Literal["job"] = "job"
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    model: str
    prompt: str
    priority: int
    request_scoped: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    width: int
    height: int
    fps: float
    seed: int
    total_segments: int | None
    total_frames: int | None
    segments_done: int
    frames_done: int
    progress: dict[str, Any] | None
    last_seq: int
    error: ErrorBody | None
    links: JobLinks
    live: bool = Field(description="A live stream: scheduled by its viewer's deadline.")
    realtime_factor: float | None = Field(
        description="Video seconds made / wall seconds running (>= 1: faster than real time)."
    )
    estimated_start_at: float | None = Field(
        description="While queued: when a worker should take it (Unix seconds)."
    )


class StreamInfo(BaseModel):
    """A job a worker runs now."""

    job_id: str
    live: bool
    realtime_factor: float | None = Field(description="Video seconds made / wall seconds.")
    video_seconds: float
    # A live stream's viewer, who plays startup_buffer_seconds after its first segment:
    first_segment_seconds: float | None = None  # from its creation to its first segment
    deadline_miss_rate: float | None = None  # share of segments after its buffer ran out
    jitter_seconds: float | None = None  # standard deviation of (arrival gap - segment s)


class CostModelInfo(BaseModel):
    """Where a worker's batch-cost estimates (admission, estimated starts) come from."""

    source: Literal["none", "startup calibration", "measured"]


class WorkerInfo(BaseModel):
    """A worker's last load report."""

    worker: str
    live_streams: int
    max_live_streams: int
    jobs: int
    max_jobs: int
    accepts_live: bool
    utilization: float | None = Field(description="Share of its time its live streams need.")
    cost_model: CostModelInfo
    streams: list[StreamInfo]


class HealthResponse(BaseModel):
    status: Literal["healthy", "shutting_down"]
    model_loaded: bool
    streaming_supported: bool
    model: str
    version: str
    queue_depth: int
    running_jobs: int
    broker: str
    running_streams: int = Field(description="Live streams running on every worker.")
    workers: list[WorkerInfo]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "streamgen"
    details: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def parse(model: type[_M], payload: Any) -> _M:
    """Validate `payload` as `model`; errors become `InvalidParameter` naming the field."""
    if not isinstance(payload, dict):
        raise MalformedRequest("the request body must be a JSON object", param=None)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: ValidationError) -> InvalidParameter:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return InvalidParameter(f"unknown field {param!r}", param=param)
    if first["type"] == "missing":
        return InvalidParameter(f"{param} is required", param=param)
    return InvalidParameter(f"{param}: {first['msg']}", param=param)


def to_generation_request(
    params: GenerationParams,
    limits: MediaLimits | None = None,
    default_overlap: int | None = None,
) -> GenerationRequest:
    """The pipeline request for `params`; decodes media (CPU work: call it off the loop),
    checked by their headers against `limits` first. Of a video to extend only the frames
    the first segment conditions on are decoded: `overlap_frames`, else `default_overlap`
    (the backend's), else all of them."""
    try:
        return _generation_request(params, limits, default_overlap)
    except InvalidRequest as exc:
        raise InvalidParameter(exc.message, param=exc.param) from exc


def _generation_request(
    params: GenerationParams, limits: MediaLimits | None, default_overlap: int | None
) -> GenerationRequest:
    overlap = params.overlap_frames if params.overlap_frames is not None else default_overlap
    # The frames the first segment conditions on: at least one, for a video to extend.
    given_frames = None if overlap is None else max(1, overlap)
    width, height = params.width, params.height
    if params.size is not None:
        if width is not None or height is not None:
            raise InvalidParameter("give either size or width/height, not both", param="size")
        width, height = parse_size(params.size)  # `InvalidRequest` naming size
    seconds = params.seconds
    if params.duration is not None:
        if seconds is not None:
            raise InvalidParameter("give either seconds or duration, not both", param="duration")
        seconds = params.duration
    return GenerationRequest(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        seed=params.seed,
        width=width,
        height=height,
        fps=params.fps,
        seconds=seconds,
        num_frames=params.num_frames,
        unbounded=params.unbounded,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        segment_frames=params.segment_frames,
        overlap_frames=params.overlap_frames,
        reference_image=(
            decode_image(params.reference_image, limits=limits)
            if params.reference_image is not None
            else None
        ),
        extend_video=(
            read_video_tail(
                media_bytes(params.extend_video, "extend_video"),
                overlap_frames=given_frames,
                limits=limits,
            )
            if params.extend_video is not None
            else None
        ),
        audio=read_audio(media_bytes(params.audio, "audio"), "audio")
        if params.audio is not None
        else None,
        audio_scale=params.audio_scale,
        video=None
        if params.video is None
        else read_video(media_bytes(params.video, "video"), "video", limits),
        strength=params.strength,
    )


def media_bytes(media: str | bytes, param: str) -> bytes:
    """The file `media` stands for: uploaded bytes as they are, text decoded as base64."""
    return media if isinstance(media, bytes) else decode_base64(media, param)


def decode_base64(text: str, param: str) -> bytes:
    """Bytes of a base64 string or a ``data:...;base64,`` URL."""
    body = _DATA_URL.sub("", text.strip(), count=1)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParameter(f"{param} is not valid base64: {exc}", param=param) from exc


def decode_image(
    media: str | bytes, param: str = "reference_image", limits: MediaLimits | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an uploaded or base64 image (any format Pillow reads)."""
    return read_image(media_bytes(media, param), param, limits)
