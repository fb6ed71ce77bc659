"""Following a job's events for one subscriber: the subscription, its lease, heartbeats and
the slow-consumer cut-off; and `StreamBody`, the streaming HTTP body built on it, which every
response form (`sse`, `ndjson`, `mp4`) renders its own way.

Each subscriber reads its own bounded broker subscription (`subscriber_buffer_events`);
while its connection is slow its writes wait, its queue fills, and the broker cuts it off
(`SubscriberOverflow`) without ever making the generator or other subscribers wait. The
cut-off becomes a final `SlowConsumer` item naming the seq to resume from.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Protocol

from quart import Response

from streamgen.broker.base import (
    BacklogTrimmed,
    Event,
    SubscriberOverflow,
    Subscription,
)
from streamgen.config import Settings
from streamgen.errors import BacklogGone, InvalidParameter, SlowConsumer, unavailable
from streamgen.events import ErrorPayload
from streamgen.jobs import Job, JobManager
from streamgen.jobs.log import log_tail
from streamgen.observability import SLOW_CONSUMERS, SUBSCRIBERS

_TRIM_RETRIES = 3
_MAX_BATCH = 64  # events joined into one write for a subscriber that is behind
Item = Event | SlowConsumer | None
"""What a follower yields: an event, the final cut-off, or None for a heartbeat tick."""


class FrameCache:
    """Framed bytes of recent events, so N subscribers of one transport frame an event once."""

    def __init__(self, max_entries: int = 2048) -> None:
        self.max_entries = max_entries
        self._frames: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()

    def frame(self, transport: str, event: Event, make: Callable[[Event], bytes]) -> bytes:
        key = (transport, event.job_id, event.seq)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = make(event)
            if len(self._frames) > self.max_entries:
                self._frames.popitem(last=False)
        return frame


class Serving(Protocol):
    """What answering with a job reads from the serving app (`routes.state.AppState`)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def manager(self) -> JobManager: ...

    frames: FrameCache


class Follower:
    """One subscriber's view of a job: events from `from_seq`, holding a lease on the job.

    `holds_lease` says whether the caller already holds one (`submit` gives the creator of a
    request-scoped job one); otherwise opening takes one. Close with `aclose()`.
    """

    def __init__(
        self,
        manager: JobManager,
        job: Job,
        from_seq: int,
        *,
        max_pending: int,
        resume_grace_s: float,
        holds_lease: bool = False,
    ) -> None:
        self.manager = manager
        self.job = job
        self.from_seq = from_seq
        self.max_pending = max_pending
        self.resume_grace_s = resume_grace_s
        self.cut_off = False
        self._leased = holds_lease
        self._subscription: Subscription | None = None
        self._prefix: list[Event] = []  # `start`, when a late joiner skips trimmed events

    async def open(self) -> Follower:
        """Subscribe (backlog first). A late joiner (from seq 0) of a job whose early events
        rolled out of the backlog gets `start` and then the oldest stored event on; a resume
        from a seq no longer stored raises `BacklogGone` (410)."""
        if not self._leased:
            self.manager.acquire(self.job)
            self._leased = True
        try:
            self._subscription = await self._subscribe()
        except BaseException:
            self.release()
            raise
        SUBSCRIBERS.inc()
        return self

    async def _subscribe(self) -> Subscription:
        broker, job_id = self.manager.broker, self.job.id
        from_seq = self.from_seq
        with unavailable("broker"):
            await self._check_not_past_end()
            if self.job.state.finished and await broker.start_event(job_id) is None:
                raise BacklogGone(
                    f"the events of job {job_id} expired from the backlog",
                    resume_from=self.job.state.next_seq,
                )
            for _ in range(_TRIM_RETRIES):
                subscription = broker.subscribe(job_id, from_seq, max_pending=self.max_pending)
                try:
                    await subscription.__aenter__()
                    return subscription
                except BacklogTrimmed as exc:
                    start = await broker.start_event(job_id) if self.from_seq == 0 else None
                    if start is None:
                        raise BacklogGone(str(exc), resume_from=exc.first_seq) from exc
                    self._prefix, from_seq = [start], exc.first_seq
            raise BacklogGone(
                f"the backlog of job {job_id} rolls over faster than it can be read",
                resume_from=from_seq,
            )

    async def _check_not_past_end(self) -> None:
        """A resume point past the job's next event would wait for events that may never
        come (422); the job record may lag its log, so the log has the last word."""
        if self.from_seq <= self.job.state.next_seq:
            return
        next_seq, _ = await log_tail(self.manager.broker, self.job.id, self.job.state.last_seq)
        if self.from_seq > next_seq:
            raise InvalidParameter(
                f"from_seq {self.from_seq} is past job {self.job.id}'s next event ({next_seq})",
                param="from_seq",
            )

    async def __aenter__(self) -> Follower:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def batches(
        self, heartbeat_s: float | None = None
    ) -> AsyncGenerator[Sequence[Item], None]:
        """Events until the terminal one, in batches of those already waiting (one write
        for several when this subscriber is behind); ``[None]`` after `heartbeat_s` idle
        seconds; a final `SlowConsumer` if this subscriber was cut off."""
        assert self._subscription is not None, "open() first"
        batches = _batches(aiter(self._subscription), heartbeat_s)
        if self._prefix:
            yield list(self._prefix)
        try:
            async for batch in batches:
                yield batch
        except SubscriberOverflow as exc:
            self.cut_off = True
            SLOW_CONSUMERS.inc()
            yield [SlowConsumer(self.job.id, exc.last_seq + 1, exc.bound)]
        finally:
            await batches.aclose()

    async def items(self, heartbeat_s: float | None = None) -> AsyncGenerator[Item, None]:
        """The items of `batches`, one by one."""
        batches = self.batches(heartbeat_s)
        try:
            async for batch in batches:
                for item in batch:
                    yield item
        finally:
            await batches.aclose()

    def release(self) -> None:
        """Give the lease back (idempotent); after a cut-off, with time to resume."""
        if self._leased:
            self._leased = False
            self.manager.release(self.job, self.resume_grace_s if self.cut_off else 0.0)

    async def aclose(self) -> None:
        try:
            if self._subscription is not None:
                subscription, self._subscription = self._subscription, None
                SUBSCRIBERS.dec()
                await subscription.__aexit__(None, None, None)
        finally:
            self.release()


async def _batches(
    events: AsyncIterator[Event], interval_s: float | None, max_batch: int = _MAX_BATCH
) -> AsyncGenerator[Sequence[Event | None], None]:
    """`events` in batches: each holds one event plus those that were already waiting
    (up to `max_batch`); ``[None]`` whenever `interval_s` seconds pass without one.

    The pending ``__anext__`` is kept across heartbeats, never cancelled mid-event. An error
    from `events` is raised after the events before it are yielded.
    """
    pending: asyncio.Future[Event] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not done:
                yield [None]
                continue
            batch: list[Event | None] = []
            while pending is not None and pending.done() and len(batch) < max_batch:
                finished, pending = pending, None
                try:
                    batch.append(finished.result())
                except StopAsyncIteration:
                    if batch:
                        yield batch
                    return
                except BaseException:
                    if batch:
                        yield batch
                    raise
                pending = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0)  # one loop turn: an event already queued is taken now
            yield batch
    finally:
        if pending is not None:
            pending.cancel()


Render = Callable[[Item], bytes | None]
"""Frames one item for the wire (None: nothing to send)."""


class StreamBody:
    """A streaming response body: `preamble`, then each rendered item of a `Follower`.

    Quart closes it (``aclose``) when the response ends or the client disconnects; that
    ends the subscription and gives the lease back, cancelling a request-scoped job whose
    last subscriber this was. If the body is dropped unopened, the lease is still released.
    """

    def __init__(
        self,
        follower: Follower,
        render: Render,
        *,
        preamble: bytes = b"",
        heartbeat_s: float | None = None,
    ) -> None:
        self.follower = follower
        self._chunks = self._generate(render, preamble, heartbeat_s)
        self._finalizer = weakref.finalize(self, follower.release)

    async def _generate(
        self, render: Render, preamble: bytes, heartbeat_s: float | None
    ) -> AsyncGenerator[bytes, None]:
        if preamble:
            yield preamble
        batches = self.follower.batches(heartbeat_s)
        try:
            async for batch in batches:
                chunk = b"".join(filter(None, map(render, batch)))
                if chunk:
                    yield chunk  # one write for the whole batch
        finally:
            await batches.aclose()

    def __aiter__(self) -> StreamBody:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._chunks)

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            await self.follower.aclose()
            self._finalizer.detach()


def cut_off_payload(cut: SlowConsumer) -> ErrorPayload:
    """The final message of a subscriber that was cut off: an error naming where to resume.
    Its seq on the wire is ``resume_from - 1``, the last event it was given."""
    return ErrorPayload(code=cut.code, message=cut.message, param=None, resume_from=cut.resume_from)


async def open_follower(
    state: Serving, job: Job, from_seq: int, *, holds_lease: bool = False
) -> Follower:
    """An opened `Follower` of `job` from `from_seq`; on failure the lease is given back."""
    follower = Follower(
        state.manager,
        job,
        from_seq,
        max_pending=state.settings.subscriber_buffer_events,
        resume_grace_s=state.settings.resume_grace_seconds,
        holds_lease=holds_lease,
    )
    try:
        return await follower.open()
    except BaseException:
        follower.release()
        raise


def streaming_response(body: StreamBody, headers: dict[str, str], job_id: str) -> Response:
    """A 200 response streaming `body`, with no time limit (Quart would cut a stream after
    ``RESPONSE_TIMEOUT``)."""
    response = Response(body, status=200, headers={**headers, "X-Job-Id": job_id})
    response.timeout = None
    return response
