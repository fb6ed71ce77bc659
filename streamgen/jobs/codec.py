"""A job record as flat fields, and back: the one codec of every store.

`record_fields` writes a job's `JobSpec` and `JobState` as one flat mapping of text,
integers and bytes — the Redis hash (whose field names the Lua scripts of `redis_schema`
read), the disk archive's records and, later, a table's columns — and `spec_from_fields` /
`state_from_fields` read one back, from Redis's bytes or from native values alike. The
fields are derived from the dataclasses: a field of a type not taught here fails at import,
and the round-trip tests walk every field.

Also here: msgpack of a job's request (with its pixel inputs), of its error and of its
terminal event, the Redis forms of a record (`new_record`, `progress_fields`,
`job_from_view`, `apply_view`, `job_from_claim`) and the small conversions of Redis replies.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from segment_pipeline import AudioClip, ResolvedRequest

from ..errors import Conflict, GenerationFailed, InvalidParameter, ServiceError, ServiceUnavailable
from ..events import CompletePayload, ErrorPayload, Terminal, from_data, to_data
from .record import Job, JobSpec, JobState, JobStatus, KeyCharge

Flat = str | int | bytes
"""What a store keeps in one field (Redis hands every one back as bytes)."""

# The values of a record: its request, its error; its terminal event ----------------------
_ARRAY_FIELDS = ("reference_image", "extend_video", "video")
_INPUT_FIELDS = (*_ARRAY_FIELDS, "audio")  # packed apart (`pack_arrays`): the pixels and sound
# Every other field of the request, read from the dataclass so none can be forgotten; one
# with a default may be absent from a record written before it existed.
_REQUEST_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(ResolvedRequest)
    if f.name not in _INPUT_FIELDS and f.default is dataclasses.MISSING
)
_LATER_FIELDS = {
    f.name: f.default
    for f in dataclasses.fields(ResolvedRequest)
    if f.name not in _INPUT_FIELDS and f.default is not dataclasses.MISSING
}


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


# The record as flat fields -----------------------------------------------------------------
_NO_DEFAULT = dataclasses.MISSING


@dataclass(frozen=True)
class _Field:
    """One flat field: the attribute it holds and how its value is written and read."""

    name: str  # the stored name (a Redis hash field, an archive key, a column)
    path: tuple[str, ...]  # attribute names from the part (`JobSpec`, `JobState`) down
    encode: Callable[[Any], Flat]
    decode: Callable[[Any], Any]  # a stored value: bytes, text or a native value
    default: Any  # for a field empty in the store; _NO_DEFAULT: decode it anyway
    required: bool  # a record without it cannot be read (else: the dataclass makes it)


def _flag(value: Any) -> bool:
    return value in (True, 1, b"1", "1")


def _integer(value: Any) -> int:
    return int(number(value) or 0)


def _float(value: Any) -> float:
    return number(value) or 0.0


def _optional_text(value: Any) -> str | None:
    return text(value) or None


# How a field of each type is stored: (encode, decode). A type missing here fails at import.
_CODECS: dict[Any, tuple[Callable[[Any], Flat], Callable[[Any], Any]]] = {
    str: (str, text),
    JobStatus: (str, text),
    str | None: (lambda value: value or "", _optional_text),
    int: (int, _integer),
    float: (repr, _float),
    float | None: (_number_text, number),
    bool: (lambda value: "1" if value else "0", _flag),
    ResolvedRequest: (lambda value: pack_request(value, arrays=False), unpack_request),
    dict[str, Any] | None: (
        lambda value: b"" if value is None else pack(value),
        lambda value: msgpack.unpackb(value, raw=False),
    ),
    ServiceError | None: (pack_error, unpack_error),
}
_NESTED = (KeyCharge,)  # dataclasses whose fields are stored flat beside the others


def _next_seq_field() -> _Field:
    """`next_seq` is stored as the seq of the last event published (`last_seq`, which
    Redis's settle script compares). A record is first written just before the job's
    `start` event (seq 0) is published and read after it, so a fresh job's says 0."""
    return _Field(
        "last_seq",
        ("next_seq",),
        lambda next_seq: max(next_seq, 1) - 1,
        lambda last_seq: _integer(last_seq) + 1,
        1,
        False,
    )


def _fields_of(cls: type, path: tuple[str, ...] = ()) -> list[_Field]:
    hints = typing.get_type_hints(cls)
    out: list[_Field] = []
    for item in dataclasses.fields(cls):
        kind, where = hints[item.name], (*path, item.name)
        if kind in _NESTED:
            out += _fields_of(kind, where)
        elif where == ("next_seq",):
            out.append(_next_seq_field())
        elif kind in _CODECS:
            encode, decode = _CODECS[kind]
            required = item.default is _NO_DEFAULT and item.default_factory is _NO_DEFAULT
            out.append(_Field(item.name, where, encode, decode, item.default, required))
        else:
            raise TypeError(f"the job codec cannot store {cls.__name__}.{item.name} ({kind})")
    return out


SPEC_FIELDS: tuple[_Field, ...] = tuple(_fields_of(JobSpec))
STATE_FIELDS: tuple[_Field, ...] = tuple(_fields_of(JobState))
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in (*SPEC_FIELDS, *STATE_FIELDS))
"""Every field of a record (besides `inputs`, the request's arrays), as stored."""
_BY_NAME = {f.name: f for f in (*SPEC_FIELDS, *STATE_FIELDS)}


def _get(part: object, path: tuple[str, ...]) -> Any:
    for name in path:
        part = getattr(part, name)
    return part


def record_fields(job: Job, *, inputs: bool = True) -> dict[str, Flat]:
    """The flat fields of `job` (spec, then state); with `inputs`, also the request's
    pictures and sound (msgpack), which the disk archive does not keep."""
    out = {f.name: f.encode(_get(job.spec, f.path)) for f in SPEC_FIELDS}
    out.update(state_fields(job.state, tuple(f.name for f in STATE_FIELDS)))
    if inputs:
        out["inputs"] = pack_arrays(job.spec.request)
    return out


def state_fields(state: JobState, names: tuple[str, ...]) -> dict[str, Flat]:
    """The stored fields `names` of `state` (those a change rewrites)."""
    return {name: _BY_NAME[name].encode(_get(state, _BY_NAME[name].path)) for name in names}


def _read(fields: tuple[_Field, ...], stored: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """{attribute path: value} of `fields` in `stored`; an absent or empty field takes its
    default (a record from before the field existed), or its dataclass makes it."""
    values: dict[tuple[str, ...], Any] = {}
    for f in fields:
        value = stored.get(f.name)
        if value is None or (isinstance(value, bytes | str) and not value):
            if f.default is not _NO_DEFAULT:
                values[f.path] = f.default
                continue
            if value is None:
                if f.required:
                    raise KeyError(f"the job record has no {f.name!r}")
                continue  # made by its dataclass (created_at: now)
        values[f.path] = f.decode(value)
    return values


def _build(cls: type, values: dict[tuple[str, ...], Any], path: tuple[str, ...] = ()) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        where = (*path, item.name)
        if hints[item.name] in _NESTED:
            kwargs[item.name] = _build(hints[item.name], values, where)
        elif where in values:
            kwargs[item.name] = values[where]
    return cls(**kwargs)


def spec_from_fields(stored: Mapping[str, Any]) -> JobSpec:
    """The `JobSpec` of a stored record (its request with the arrays of `inputs`, if kept)."""
    values = _read(SPEC_FIELDS, stored)
    if stored.get("inputs"):
        values[("request",)] = unpack_request(stored["request"], stored["inputs"])
    spec: JobSpec = _build(JobSpec, values)
    return spec


def state_from_fields(stored: Mapping[str, Any]) -> JobState:
    """The `JobState` of a stored record."""
    state: JobState = _build(JobState, _read(STATE_FIELDS, stored))
    return state


# The Redis forms of a record ---------------------------------------------------------------
VIEW_FIELDS: tuple[str, ...] = ("status", *(n for n in FIELD_NAMES if n != "status"))
"""The fields a replica reads to show a job (not `inputs`, the worker's arrays); `status`
first, so the first value of an HMGET says whether the job exists."""
_PROGRESS = ("last_seq", "segments_done", "frames_done", "progress", "realtime_factor",
             "estimated_start_at")  # fmt: skip


def new_record(job: Job) -> dict[str, Flat]:
    """The hash fields of a job just submitted."""
    return record_fields(job)


def progress_fields(job: Job) -> dict[str, Flat]:
    """The hash fields a worker updates after each event."""
    return state_fields(job.state, _PROGRESS)


def final_fields(job: Job) -> dict[str, Flat]:
    """The hash fields a worker's finish writes: its progress and its end (now, if its end
    time is not set)."""
    fields = {**progress_fields(job), **state_fields(job.state, ("status", "finished_at", "error"))}
    if job.state.finished_at is None:
        fields["finished_at"] = repr(time.time())
    return fields


def job_from_view(job_id: str, values: list[Any]) -> Job:
    """A replica's handle of a job from its `VIEW_FIELDS` values (state applied after)."""
    view = dict(zip(VIEW_FIELDS, values, strict=True))
    return Job(spec_from_fields({**view, "id": job_id}))


def apply_view(job: Job, values: list[Any]) -> None:
    """Bring `job`'s state up to date with its `VIEW_FIELDS` values."""
    fresh = state_from_fields(dict(zip(VIEW_FIELDS, values, strict=True)))
    fresh.next_seq = max(job.state.next_seq, fresh.next_seq)  # this process may be ahead
    for item in dataclasses.fields(JobState):
        setattr(job.state, item.name, getattr(fresh, item.name))
    if job.state.finished:
        job.done.set()
        if job.orphan_timer is not None:
            job.orphan_timer.cancel()
            job.orphan_timer = None


def job_from_claim(fields: Mapping[str, Any]) -> Job:
    """The running job a worker took: all of its hash `fields` (the request's arrays too)."""
    return Job(spec_from_fields(fields), state_from_fields(fields))
