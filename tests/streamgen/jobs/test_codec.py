"""The one job codec, field by field: every field of `JobSpec` (with its `KeyCharge`) and
`JobState`, given a value other than its default, survives each store form — the Redis
hash as Redis hands it back (bytes), a replica's view of it, a worker's claim of it, and the
disk archive's record. A field added to the dataclasses without a value here fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from segment_pipeline import ResolvedRequest
from streamgen.errors import Conflict, ServiceError
from streamgen.jobs import Job, JobSpec, JobState, KeyCharge
from streamgen.jobs.archive import JobArchive
from streamgen.jobs.codec import (
    VIEW_FIELDS,
    apply_view,
    hash_fields,
    job_from_claim,
    job_from_view,
    new_record,
    pack_request,
    record_fields,
    spec_from_fields,
    state_from_fields,
    unpack_request,
)

IMAGE = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
REQUEST = ResolvedRequest(
    prompt="a red ball", negative_prompt="blur", seed=7, width=64, height=64, fps=8.0,
    total_frames=28, num_inference_steps=2, guidance_scale=1.5, segment_frames=12,
    overlap_frames=4, reference_image=IMAGE, audio_scale=0.5, strength=0.6,
)  # fmt: skip

# A value other than the default for every field (the test below checks that: a new field
# must be given one here, and so is round-tripped before it can be dropped by a store).
SPEC_VALUES: dict[str, Any] = {
    "id": "job_0123456789abcdef0123",
    "request": REQUEST,
    "model": "tiny-model",
    "priority": 7,
    "request_scoped": True,
    "live": True,
    "remixed_from": "job_ffffffffffffffffffff",
    "listed": True,
    "charge": KeyCharge(
        key_id="key_abc", charged_seconds=12.5, charged_day=20_000, cap_seconds=30.25
    ),
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "created_at": 1_700_000_000.123456,
    "max_attempts": 2,
}
STATE_VALUES: dict[str, Any] = {
    "status": "failed",
    "started_at": 1_700_000_001.5,
    "finished_at": 1_700_000_009.25,
    "segments_done": 3,
    "frames_done": 28,
    "progress": {"segment_index": 2, "step": 1, "total_steps": 2},
    "error": Conflict("the job was cancelled", code="cancelled", param="job_id"),
    "realtime_factor": 1.75,
    "estimated_start_at": 1_700_000_000.75,
    "next_seq": 9,
    "worker": "host:1:abc",
    "attempt": 2,
}


def _job() -> Job:
    return Job(JobSpec(**SPEC_VALUES), JobState(**STATE_VALUES))


def _comparable(value: Any) -> Any:
    if isinstance(value, ServiceError):
        return (type(value), value.status, value.code, value.message, value.param)
    return value


def _leaves(cls: type, values: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) of every field, nested dataclasses (`KeyCharge`) by their fields."""
    out = []
    for item in dataclasses.fields(cls):
        value = values[item.name]
        if dataclasses.is_dataclass(value) and not isinstance(value, ResolvedRequest):
            out += [(f"{item.name}.{name}", getattr(value, name)) for name in
                    (f.name for f in dataclasses.fields(value))]  # fmt: skip
        else:
            out.append((item.name, value))
    return out


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            out[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            out[item.name] = None  # made afresh: any given value differs
    return out


def _get(part: object, dotted: str) -> Any:
    for name in dotted.split("."):
        part = getattr(part, name)
    return part


def test_every_field_has_a_value_other_than_its_default() -> None:
    for cls, values in ((JobSpec, SPEC_VALUES), (JobState, STATE_VALUES)):
        assert set(values) == {f.name for f in dataclasses.fields(cls)}, "teach the test"
        defaults = _defaults(cls)
        for name, value in values.items():
            if name in defaults:
                assert value != defaults[name], f"{cls.__name__}.{name} is its default"
    for item in dataclasses.fields(KeyCharge):
        assert getattr(SPEC_VALUES["charge"], item.name) != item.default


def _assert_same(spec: JobSpec, state: JobState | None) -> None:
    for name, value in _leaves(JobSpec, SPEC_VALUES):
        assert _get(spec, name) == value, f"spec.{name} did not survive"
    if state is not None:
        for name, value in _leaves(JobState, STATE_VALUES):
            got = _comparable(_get(state, name))
            assert got == _comparable(value), f"state.{name} did not survive"


def _as_redis_returns(fields: dict[str, Any]) -> dict[str, bytes]:
    """What HGETALL gives back for an HSET of `fields`: every value as bytes."""
    return {
        name: value if isinstance(value, bytes) else str(value).encode()
        for name, value in fields.items()
    }


def test_the_redis_hash_keeps_every_field_and_the_pixels() -> None:
    stored = _as_redis_returns(new_record(_job()))
    spec, state = spec_from_fields(stored), state_from_fields(stored)
    _assert_same(spec, state)
    assert spec.request.reference_image is not None
    assert np.array_equal(spec.request.reference_image, IMAGE)


def test_a_workers_claim_keeps_every_field() -> None:
    stored = _as_redis_returns(record_fields(_job()))
    flat = [item for pair in stored.items() for item in (pair[0].encode(), pair[1])]
    job = job_from_claim(hash_fields(flat))  # the claim script's HGETALL reply
    _assert_same(job.spec, job.state)
    assert job.spec.request.reference_image is not None


def test_a_replicas_view_keeps_every_field_but_the_pixels() -> None:
    stored = _as_redis_returns(record_fields(_job()))
    values = [stored.get(name) for name in VIEW_FIELDS]
    job = job_from_view(SPEC_VALUES["id"], values)
    apply_view(job, values)
    _assert_same(job.spec, job.state)
    assert job.done.is_set(), "a finished job's handle is done"
    assert "inputs" not in VIEW_FIELDS


def test_the_disk_record_keeps_every_field(tmp_path: Path) -> None:
    archive = JobArchive(tmp_path / "records", tmp_path / "videos")
    archive.save(_job())
    (restored,) = archive.load()
    _assert_same(restored.spec, restored.state)
    assert restored.video_path == tmp_path / "videos" / f"{SPEC_VALUES['id']}.mp4"
    assert restored.spec.request.reference_image is None, "the archive keeps no pixels"


def test_a_disk_record_from_before_the_codec_still_reads(tmp_path: Path) -> None:
    """The archive's records used native values and kept `next_seq` (not `last_seq`)."""
    records = tmp_path / "records"
    records.mkdir()
    old = {name: value for name, value in msgpack.unpackb(msgpack.packb(
        record_fields(_job(), inputs=False), use_bin_type=True), raw=False).items()
        if name not in ("traceparent", "max_attempts", "progress", "worker", "attempt",
                        "estimated_start_at", "charged_day", "last_seq")}  # fmt: skip
    old.update(request_scoped=True, live=True, listed=True, remixed_from=None,
               key_id="key_abc", charged_seconds=12.5, cap_seconds=30.25, started_at=None,
               finished_at=5.0, segments_done=3, next_seq=9, realtime_factor=None,
               created_at=1.0, status="completed")  # fmt: skip
    (records / f"{old['id']}.msgpack").write_bytes(msgpack.packb(old, use_bin_type=True))
    (job,) = JobArchive(records, tmp_path / "videos").load()
    assert job.spec.live and job.spec.listed and job.spec.remixed_from is None
    assert job.spec.charge == KeyCharge("key_abc", 12.5, 0, 30.25)
    assert job.state.next_seq == 9 and job.state.started_at is None
    assert job.state.status == "completed" and job.state.realtime_factor is None


def test_a_fresh_record_says_its_start_event_is_the_last_one() -> None:
    """A record is written just before the `start` event (seq 0) is published."""
    job = Job(JobSpec(**{**SPEC_VALUES, "charge": KeyCharge()}))
    stored = _as_redis_returns(new_record(job))
    assert stored["last_seq"] == b"0" and stored["status"] == b"queued"
    assert stored["key_id"] == b"" and stored["remixed_from"] == b"job_ffffffffffffffffffff"
    assert state_from_fields(stored).next_seq == 1


def test_a_record_without_a_required_field_is_refused() -> None:
    stored = _as_redis_returns(new_record(_job()))
    del stored["model"]
    with pytest.raises(KeyError, match="model"):
        spec_from_fields(stored)


def test_a_request_and_its_pixels_survive_the_round_trip() -> None:
    image = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    request = ResolvedRequest(**{**REQUEST.__dict__, "reference_image": image})
    back = unpack_request(pack_request(request))
    assert back == request  # arrays are not compared by the dataclass
    assert back.reference_image is not None and np.array_equal(back.reference_image, image)
    assert unpack_request(pack_request(request, arrays=False)).reference_image is None


def test_a_video_to_transform_and_its_strength_survive_the_round_trip() -> None:
    video = np.arange(3 * 64 * 64 * 3, dtype=np.uint8).reshape(3, 64, 64, 3)
    fields = {**REQUEST.__dict__, "reference_image": None, "video": video, "strength": 0.4}
    back = unpack_request(pack_request(ResolvedRequest(**fields)))
    assert back.video is not None and np.array_equal(back.video, video)
    assert back.strength == 0.4


def test_every_field_of_the_request_is_kept_even_one_added_later() -> None:
    # A field with a default must be given another value above, else losing it would pass.
    for item in dataclasses.fields(ResolvedRequest):
        if item.default is not dataclasses.MISSING and item.compare:
            assert getattr(REQUEST, item.name) != item.default, f"give REQUEST a {item.name}"
    back = unpack_request(pack_request(REQUEST, arrays=False))
    for item in dataclasses.fields(ResolvedRequest):
        if item.compare:
            assert getattr(back, item.name) == getattr(REQUEST, item.name), item.name
