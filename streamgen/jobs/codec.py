"""How a job is kept in Redis: its hash fields (`new_record`, read back by `job_from_view`,
`apply_view` and `job_from_claim`), msgpack of its request (with its pixel inputs), its
error and its terminal event, and the small conversions of Redis replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from segment_pipeline import AudioClip, ResolvedRequest

from ..errors import Conflict, GenerationFailed, InvalidParameter, ServiceError, ServiceUnavailable
from ..events import CompletePayload, ErrorPayload, Terminal, from_data, to_data
from .record import Job
from .redis_schema import VIEW_FIELDS


def new_record(job: Job) -> dict[str, Any]:
    """The hash fields of a job just submitted (queued, nothing done)."""
    return {
        "id": job.id,
        "request": pack_request(job.request, arrays=False),
        "inputs": pack_arrays(job.request),
        "model": job.model,
        "priority": job.priority,
        "request_scoped": "1" if job.request_scoped else "0",
        "live": "1" if job.live else "0",
        "remixed_from": job.remixed_from or "",
        "listed": "1" if job.listed else "0",
        "key_id": job.key_id or "",
        "charged_seconds": repr(job.charged_seconds),
        "charged_day": job.charged_day,
        "cap_seconds": repr(job.cap_seconds),
        "traceparent": job.traceparent,
        "created_at": repr(job.created_at),
        "max_attempts": job.max_attempts,
        "status": "queued",
        "attempt": 0,
        "worker": "",
        "started_at": "",
        "finished_at": "",
        "segments_done": 0,
        "frames_done": 0,
        "last_seq": 0,
        "progress": b"",
        "error": b"",
        "realtime_factor": "",
        "estimated_start_at": ""
        if job.estimated_start_at is None
        else repr(job.estimated_start_at),
    }


def progress_fields(job: Job) -> dict[str, Any]:
    """The hash fields a worker updates after each event."""
    return {
        "last_seq": job.last_seq,
        "segments_done": job.segments_done,
        "frames_done": job.frames_done,
        "progress": pack(job.progress) if job.progress is not None else b"",
        "realtime_factor": _number_text(job.realtime_factor),
        "estimated_start_at": _number_text(job.estimated_start_at),
    }


def job_from_view(job_id: str, values: list[Any]) -> Job:
    """A replica's handle of a job from its `VIEW_FIELDS` values (state applied after)."""
    view = dict(zip(VIEW_FIELDS, values, strict=True))
    return Job(
        id=job_id,
        request=unpack_request(view["request"]),
        model=text(view["model"]),
        priority=int(view["priority"]),
        request_scoped=view["request_scoped"] == b"1",
        live=view["live"] == b"1",
        remixed_from=text(view["remixed_from"]) or None,
        listed=view["listed"] == b"1",
        **_key_fields(view),
        created_at=float(view["created_at"]),
        max_attempts=int(view["max_attempts"] or 1),
    )


def _key_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """key_id, charged_seconds, charged_day and cap_seconds from a job's hash fields (absent in jobs
    stored before keys existed)."""
    return {
        "key_id": text(fields.get("key_id") or b"") or None,
        "charged_seconds": number(fields.get("charged_seconds")) or 0.0,
        "charged_day": int(number(fields.get("charged_day")) or 0),
        "cap_seconds": number(fields.get("cap_seconds")) or 0.0,
    }


def apply_view(job: Job, values: list[Any]) -> None:
    """Bring `job` up to date with its `VIEW_FIELDS` values."""
    view = dict(zip(VIEW_FIELDS, values, strict=True))
    job.status = text(view["status"])  # type: ignore[assignment]
    job.worker = text(view["worker"]) or None
    job.attempt = int(view["attempt"] or 0)
    job.started_at = number(view["started_at"])
    job.finished_at = number(view["finished_at"])
    job.segments_done = int(view["segments_done"] or 0)
    job.frames_done = int(view["frames_done"] or 0)
    job.next_seq = max(job.next_seq, int(view["last_seq"] or 0) + 1)
    job.progress = msgpack.unpackb(view["progress"], raw=False) if view["progress"] else None
    job.error = unpack_error(view["error"])
    job.realtime_factor = number(view["realtime_factor"])
    job.estimated_start_at = number(view["estimated_start_at"])
    if job.finished:
        job.done.set()
        if job.orphan_timer is not None:
            job.orphan_timer.cancel()
            job.orphan_timer = None


def job_from_claim(fields: dict[str, Any]) -> Job:
    """The running job a worker took: all of its hash `fields` (the request's arrays too)."""
    job_id = text(fields["id"]) if "id" in fields else None
    request = unpack_request(fields["request"], fields.get("inputs") or b"")
    job = Job(
        id=job_id or "",
        request=request,
        model=text(fields["model"]),
        priority=int(fields["priority"]),
        request_scoped=fields["request_scoped"] in (b"1", "1"),
        live=fields.get("live") in (b"1", "1"),
        **_key_fields(fields),
        traceparent=text(fields.get("traceparent") or b""),
        created_at=float(fields["created_at"]),
        max_attempts=int(fields.get("max_attempts") or 1),
        status="running",
    )
    job.worker = text(fields["worker"])
    job.attempt = int(fields["attempt"])
    job.started_at = number(fields.get("started_at"))
    job.segments_done = int(fields.get("segments_done") or 0)
    job.frames_done = int(fields.get("frames_done") or 0)
    job.next_seq = int(fields.get("last_seq") or 0) + 1
    job.estimated_start_at = number(fields.get("estimated_start_at"))
    return job


_REQUEST_FIELDS = (
    "prompt", "negative_prompt", "seed", "width", "height", "fps", "total_frames",
    "num_inference_steps", "guidance_scale", "segment_frames", "overlap_frames",
)  # fmt: skip
_LATER_FIELDS = {"audio_scale": 1.0}  # fields added since the first release, with defaults
_ARRAY_FIELDS = ("reference_image", "extend_video")


def pack_request(request: ResolvedRequest, *, arrays: bool = True) -> bytes:
    """msgpack of a resolved request (its arrays too, unless `arrays` is False)."""
    fields = {name: _plain(getattr(request, name)) for name in (*_REQUEST_FIELDS, *_LATER_FIELDS)}
    if arrays:
        fields["inputs"] = pack_arrays(request)
    return pack(fields)


def pack_arrays(request: ResolvedRequest) -> bytes:
    """msgpack of the request's inputs: pixels (uint8 arrays with their shapes) and audio
    (float32 samples with their shape and rate)."""
    out: dict[str, Any] = {}
    for name in _ARRAY_FIELDS:
        array = getattr(request, name)
        if array is not None:
            array = np.ascontiguousarray(array, dtype=np.uint8)
            out[name] = {"shape": list(array.shape), "data": array.tobytes()}
    if request.audio is not None:
        samples = np.ascontiguousarray(request.audio.samples, dtype=np.float32)
        out["audio"] = {"shape": list(samples.shape), "data": samples.tobytes(),
                        "rate": request.audio.sample_rate}  # fmt: skip
    return pack(out)


def unpack_request(packed: bytes, inputs: bytes = b"") -> ResolvedRequest:
    """The `ResolvedRequest` of `pack_request` (with the arrays of `inputs`, if given)."""
    fields = msgpack.unpackb(packed, raw=False)
    arrays = fields.pop("inputs", None)
    if inputs:
        arrays = inputs
    values: dict[str, Any] = {name: fields[name] for name in _REQUEST_FIELDS}
    values.update({name: fields.get(name, default) for name, default in _LATER_FIELDS.items()})
    if arrays:
        for name, item in msgpack.unpackb(arrays, raw=False).items():
            if name == "audio":
                samples = np.frombuffer(item["data"], dtype=np.float32).reshape(item["shape"])
                values[name] = AudioClip(samples, int(item["rate"]))
            else:
                values[name] = np.frombuffer(item["data"], dtype=np.uint8).reshape(item["shape"])
    return ResolvedRequest(**values)


_ERRORS: dict[int, type[ServiceError]] = {
    409: Conflict,
    422: InvalidParameter,
    500: GenerationFailed,
    503: ServiceUnavailable,
}


def pack_error(error: ServiceError | None) -> bytes:
    """msgpack of `error` with its HTTP status (b"" for None)."""
    if error is None:
        return b""
    return pack({"status": error.status, **to_data(ErrorPayload.of(error))})


def unpack_error(packed: bytes | None) -> ServiceError | None:
    """The `ServiceError` of `pack_error` (the class of its status), or None."""
    if not packed:
        return None
    fields = msgpack.unpackb(packed, raw=False)
    cls = _ERRORS.get(int(fields.get("status", 500)), ServiceError)
    error = cls(fields["message"], param=fields.get("param"), code=fields["code"])
    if cls is ServiceError:
        error.status = int(fields.get("status", 500))
    return error


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number msgpack can pack."""
    return value.item() if isinstance(value, np.generic) else value


def pack(value: Any) -> bytes:
    """msgpack with raw bytes."""
    return msgpack.packb(value, use_bin_type=True)


def pack_terminal(payload: Terminal) -> bytes:
    """msgpack of a job's terminal event (stored before it is published)."""
    return pack({"type": payload.type, "data": to_data(payload)})


def unpack_terminal(packed: bytes | str) -> Terminal:
    """The terminal payload of `pack_terminal`."""
    fields = msgpack.unpackb(packed, raw=False)
    payload = from_data(fields["type"], fields["data"])
    if not isinstance(payload, CompletePayload | ErrorPayload):
        raise ValueError(f"a terminal event is complete or error, not {fields['type']!r}")
    return payload


def pairs(mapping: Mapping[str, Any]) -> list[Any]:
    """``[k1, v1, k2, v2, …]``: a mapping as the arguments of HSET."""
    out: list[Any] = []
    for key, value in mapping.items():
        out.extend((key, value))
    return out


def hash_fields(flat: list[Any]) -> dict[str, Any]:
    """A flat HGETALL reply as a dict with text keys."""
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def text(value: Any) -> str:
    """A Redis reply value as text ("" for None)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def number(value: Any) -> float | None:
    """A Redis reply value as a float (None when empty or missing)."""
    as_text = text(value)
    return float(as_text) if as_text else None


def _number_text(value: float | None) -> str:
    return "" if value is None else repr(value)
