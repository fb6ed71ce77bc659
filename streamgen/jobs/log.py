"""A job's event log: publishing its events in order, and reading its video back from it.

A job's events form one ordered log in the broker: `start` when the job is accepted (the
init segment and codec are known before any frame is generated), then `progress` after
every denoising step and `segment` as each segment leaves the encoder, then one terminal
`complete` or `error`. The manager, the worker and the Redis store's reaper all publish
through `publish` / `publish_terminal`, which give sequence numbers and keep the `Job`
record in step with what was published.
"""

from __future__ import annotations

import logging
import time

from segment_pipeline import EncodedSegment

from ..broker.base import Broker, BrokerError, Event
from ..errors import BacklogGone, NotFound
from ..events import (
    CompletePayload,
    Payload,
    ProgressPayload,
    SegmentPayload,
    StartPayload,
    Terminal,
    payload_of,
    to_data,
)
from ..observability import job_event
from .record import Job
from .store import JobStore

log = logging.getLogger(__name__)


async def publish(broker: Broker, job: Job, payload: Payload) -> None:
    """Publish the job's next event (stamped with `time`, Unix seconds) and track it."""
    async with job.publish_lock:
        data = to_data(payload)
        data["time"] = time.time()
        await broker.publish(Event(job.id, job.state.next_seq, payload.type, data))
        job.state.next_seq += 1
    track(job, payload)
    job_event(job.spec.created_at, data, payload.type, job.state.realtime_factor)


async def publish_terminal(broker: Broker, store: JobStore, job: Job, payload: Terminal) -> None:
    """Publish the job's terminal event (its state is already final), then settle it in
    the store. With a shared store the seq comes from the log's tail, and nothing is
    published when the log already ended (a publisher died between the two)."""
    try:
        if store.shared:
            next_seq, ended = await log_tail(broker, job.id, job.state.last_seq)
            job.state.next_seq = next_seq
            if ended:
                return
        await publish(broker, job, payload)
    except BrokerError as exc:
        log.error("job %s: cannot publish its %s event: %s", job.id, payload.type, exc)
    finally:
        await store.settle(job)


async def log_tail(broker: Broker, job_id: str, known_last_seq: int) -> tuple[int, bool]:
    """(next seq, ended) of a job's log, read from the backlog after `known_last_seq` (a
    seq known to be published; the newest events are always stored)."""
    events = await broker.backlog(job_id, max(0, known_last_seq + 1))
    if not events:
        return known_last_seq + 1, False
    return events[-1].seq + 1, events[-1].terminal


def track(job: Job, payload: Payload) -> None:
    """Update what is known of `job` after `payload` was published."""
    if isinstance(payload, ProgressPayload):
        job.state.progress = {
            "segment_index": payload.segment_index,
            "step": payload.step,
            "total_steps": payload.total_steps,
        }
    elif isinstance(payload, SegmentPayload):
        job.state.segments_done += 1
        job.state.frames_done += payload.num_frames


def start_payload(job: Job) -> StartPayload:
    """The `start` event of `job` (opened here: it has its `pipeline_job`)."""
    request, pipeline_job = job.spec.request, job.pipeline_job
    assert pipeline_job is not None, "start_payload needs the opened pipeline job"
    return StartPayload(
        codec=pipeline_job.codec_string,
        mime=f'video/mp4; codecs="{pipeline_job.codec_string}"',
        init_segment=pipeline_job.init_segment,
        width=request.width,
        height=request.height,
        fps=request.fps,
        total_segments=request.total_segments,
        total_frames=request.total_frames,
        seed=request.seed,
        model=job.spec.model,
    )


def complete_payload(job: Job) -> CompletePayload:
    return CompletePayload(
        total_segments=job.state.segments_done,
        total_frames=job.state.frames_done,
        duration=job.state.frames_done / job.spec.request.fps,
    )


def segment_payload(encoded: EncodedSegment) -> SegmentPayload:
    segment = encoded.segment
    return SegmentPayload(
        segment_index=segment.index,
        total_segments=segment.total_segments,
        is_final=segment.is_final,
        start_frame=segment.start_frame,
        num_frames=segment.num_frames,
        start_time=segment.start_seconds,
        end_time=segment.end_seconds,
        fragment=encoded.fragment,
        segment=encoded.standalone,
        generate_seconds=segment.generate_seconds,
        encode_seconds=encoded.encoded.encode_seconds,
    )


def assemble_video(job: Job, events: list[Event]) -> bytes:
    """init + every fragment of `job`'s backlog `events`, in order: its MP4.

    Raises `NotFound` when the job made no segment and `BacklogGone` when the start event or
    a segment is no longer stored.
    """
    start = next((payload_of(e) for e in events if e.type == "start"), None)
    segments = [payload_of(e) for e in events if e.type == "segment"]
    if not isinstance(start, StartPayload):
        raise BacklogGone(
            f"the events of job {job.id} expired from the backlog, and its video with them",
            resume_from=job.state.next_seq,
        )
    if not segments and job.state.segments_done == 0:
        raise NotFound(
            f"job {job.id} ended ({job.state.status}) before producing video", param="job_id"
        )
    fragments = [s for s in segments if isinstance(s, SegmentPayload)]
    indices = [s.segment_index for s in fragments]
    if indices != list(range(max(job.state.segments_done, len(indices)))):
        first = (
            next(e.seq for e in events if e.type == "segment") if segments else job.state.next_seq
        )
        raise BacklogGone(
            f"segments of job {job.id} rolled out of the backlog (max_backlog_bytes), so its "
            "video can no longer be rebuilt",
            resume_from=first,
        )
    return b"".join([start.init_segment, *(s.fragment for s in fragments)])
