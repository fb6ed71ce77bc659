"""What each event of a job says: one frozen dataclass per event type.

A job's log (`streamgen.broker`) is a list of `Event(job_id, seq, type, data)`. `data` is a
payload's `to_data()` plus ``time`` (its publish time, Unix seconds): the plain mapping that
msgpack (Redis, WebSocket) and JSON (SSE, NDJSON) carry, its keys in the order of the
fields below. These classes are the one definition of each event's fields; code that reads
an event back uses `payload_of`, not string keys.

    start     StartPayload     the job is accepted: codec, init segment, size, rate
    queued    QueuedPayload    it waits for a worker: its place and estimated start
    progress  ProgressPayload  one denoising step of one segment is done
    segment   SegmentPayload   one segment left the encoder: both byte forms, time span
    complete  CompletePayload  the last segment was sent (terminal)
    error     ErrorPayload     the job failed or was cancelled (terminal)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .broker.base import Event

if TYPE_CHECKING:
    from .errors import ServiceError


@dataclass(frozen=True)
class StartPayload:
    """`codec` is the MSE codec string (``avc1.PPCCLL``), `mime` the full MSE type;
    `init_segment` is ``ftyp``+``moov``. Totals are None for an unbounded job."""

    type: ClassVar[str] = "start"
    codec: str
    mime: str
    init_segment: bytes
    width: int  # pixels
    height: int  # pixels
    fps: float
    total_segments: int | None
    total_frames: int | None
    seed: int
    model: str


@dataclass(frozen=True)
class QueuedPayload:
    """The job waits for a worker with room for it: `position` jobs wait before it, and it
    should start at `estimated_start_at` (Unix seconds; None when no worker reports yet),
    `estimated_wait_seconds` from when the event was published."""

    type: ClassVar[str] = "queued"
    position: int
    estimated_start_at: float | None
    estimated_wait_seconds: float | None


@dataclass(frozen=True)
class ProgressPayload:
    """Step `step` of `total_steps` of segment `segment_index` is done."""

    type: ClassVar[str] = "progress"
    segment_index: int
    step: int
    total_steps: int
    total_segments: int | None


@dataclass(frozen=True)
class SegmentPayload:
    """One generated segment. `fragment` is ``moof``+``mdat`` with continuous decode time
    (append it to the init segment); `segment` is init + fragment at time 0, a file that
    plays alone. Times are seconds of video; `*_seconds` are wall seconds spent."""

    type: ClassVar[str] = "segment"
    segment_index: int
    total_segments: int | None
    is_final: bool
    start_frame: int
    num_frames: int
    start_time: float
    end_time: float
    fragment: bytes
    segment: bytes
    generate_seconds: float
    encode_seconds: float


@dataclass(frozen=True)
class CompletePayload:
    """The job ended with `total_segments` segments, `total_frames` frames, `duration`
    seconds of video."""

    type: ClassVar[str] = "complete"
    total_segments: int
    total_frames: int
    duration: float
    final: bool = True


@dataclass(frozen=True)
class ErrorPayload:
    """The job ended without completing: the error object clients see (`code`, `message`,
    `param`), e.g. ``cancelled`` or ``generation_failed``."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    param: str | None = None

    @classmethod
    def of(cls, error: ServiceError) -> ErrorPayload:
        return cls(code=error.code, message=error.message, param=error.param)


Payload = (
    StartPayload | QueuedPayload | ProgressPayload | SegmentPayload | CompletePayload | ErrorPayload
)
Terminal = CompletePayload | ErrorPayload
"""The payload of a job's last event."""

PAYLOADS: dict[str, type[Payload]] = {
    cls.type: cls
    for cls in (
        StartPayload,
        QueuedPayload,
        ProgressPayload,
        SegmentPayload,
        CompletePayload,
        ErrorPayload,
    )
}


def to_data(payload: Payload) -> dict[str, Any]:
    """The event `data` of `payload` (without ``time``), keys in field order."""
    return {field.name: getattr(payload, field.name) for field in dataclasses.fields(payload)}


def from_data(kind: str, data: Any) -> Payload:
    """The payload of an event of type `kind` whose `data` is the mapping `data` (extra
    keys such as ``time`` are ignored; byte fields may come back as any buffer)."""
    cls = PAYLOADS.get(kind)
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            value = data[field.name]
            values[field.name] = bytes(value) if field.type == "bytes" else value
    return cls(**values)


def payload_of(event: Event) -> Payload:
    """The typed payload of `event`."""
    return from_data(event.type, event.data)
