"""A worker's faults, in one process with a real model, store, broker and encoder: a segment
that fails to encode ends its job at once with the error (no later segment, so the log has
no gap) while the job beside it goes on."""

from __future__ import annotations

import asyncio

import numpy as np

from segment_pipeline import GenerationRequest, ResolvedRequest
from segment_pipeline.generator import StepCallback
from streamgen.broker.base import Event
from streamgen.config import Settings
from streamgen.jobs import Submission
from streamgen.runtime import open_runtime
from tests.segment_pipeline.pattern import PatternGenerator


class BrokenAtSegment2(PatternGenerator):
    """The test-pattern generator, except that window 2 of a "broken" prompt holds only its
    given frames: a segment of no frames, which the encoder cannot make a fragment of."""

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> np.ndarray:
        window = super().generate_window(request, index, given, on_step)
        if request.prompt == "broken" and index == 2:
            return window[: len(given)]
        return window


class WrongSizeAtSegment1(PatternGenerator):
    """Window 1 of a "broken" prompt comes out the wrong size: not a segment at all."""

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> np.ndarray:
        window = super().generate_window(request, index, given, on_step)
        if request.prompt == "broken" and index == 1:
            return np.zeros((len(window), request.height + 2, request.width, 3), np.uint8)
        return window


async def log_of(runtime: object, job_id: str) -> list[Event]:
    broker = runtime.broker  # type: ignore[attr-defined]
    events: list[Event] = []
    async with broker.subscribe(job_id, 0) as subscription:
        async for event in subscription:
            events.append(event)
    return events


async def run_two(generator: PatternGenerator) -> tuple[list[Event], list[Event]]:
    """A "broken" and a "fine" job side by side; their logs."""
    settings = Settings().replace(calibrate_when_idle=False)
    runtime = await open_runtime(settings, role="serve", generator=generator)
    try:
        manager = runtime.manager
        assert manager is not None
        request = {"num_frames": 40, "fps": 8}
        broken = await manager.submit(
            generator.resolve(GenerationRequest(prompt="broken", **request)),
            Submission(request_scoped=False),
        )
        fine = await manager.submit(
            generator.resolve(GenerationRequest(prompt="fine", **request)),
            Submission(request_scoped=False),
        )
        return await asyncio.wait_for(
            asyncio.gather(log_of(runtime, broken.id), log_of(runtime, fine.id)), 60
        )
    finally:
        await runtime.close()


def test_a_segment_that_fails_to_encode_ends_its_job_and_no_other() -> None:
    broken, fine = asyncio.run(run_two(BrokenAtSegment2()))
    segments = [e.data["segment_index"] for e in broken if e.type == "segment"]
    assert segments == [0, 1], segments  # nothing after the failed one: no gap in the log
    assert broken[-1].type == "error" and broken[-1].data["code"] == "generation_failed"
    assert "encoding failed" in broken[-1].data["message"]
    assert [e.seq for e in broken] == list(range(len(broken)))
    assert fine[-1].type == "complete" and fine[-1].data["total_frames"] == 40


def test_a_window_that_is_not_a_segment_fails_its_job_and_no_other() -> None:
    broken, fine = asyncio.run(run_two(WrongSizeAtSegment1()))
    assert [e.data["segment_index"] for e in broken if e.type == "segment"] == [0]
    assert broken[-1].type == "error" and broken[-1].data["code"] == "generation_failed"
    assert fine[-1].type == "complete" and fine[-1].data["total_frames"] == 40
