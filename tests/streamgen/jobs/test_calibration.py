"""The worker's cost model against a generator of known cost: the startup calibration
measures it before any job is taken, and the batches jobs run keep the estimates right."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Sequence

import numpy as np
import pytest

from segment_pipeline import GenerationRequest, ResolvedRequest, Window, WindowTask
from segment_pipeline.generator import BatchStepCallback, StepCallback
from streamgen.config import Settings
from streamgen.jobs import Submission
from streamgen.jobs.scheduler import work_key
from streamgen.runtime import open_runtime
from tests.segment_pipeline.pattern import PatternGenerator

BATCH_S = 0.06  # what any batch costs
WINDOW_S = 0.02  # ...and each window in it


def known_cost(size: int) -> float:
    return BATCH_S + WINDOW_S * size


class KnownCost(PatternGenerator):
    """The test-pattern generator, batching windows of one shape, at a known cost a batch."""

    def batch_key(self, task: WindowTask) -> Hashable | None:
        return work_key(task.request)

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> np.ndarray:
        time.sleep(known_cost(1))  # the model's time, not a synchronisation
        return super().generate_window(request, index, given, on_step)

    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> Sequence[Window]:
        time.sleep(known_cost(len(tasks)))
        return [
            PatternGenerator.generate_window(
                self, t.request, t.index, t.given, lambda s, n, i=i: on_step(i, s, n)
            )
            for i, t in enumerate(tasks)
        ]


def test_the_calibration_and_the_batches_run_measure_what_batches_cost() -> None:
    generator = KnownCost()

    async def scenario() -> tuple[str, dict[int, float], str, dict[int, float]]:
        settings = Settings().replace(calibrate_when_idle=False, max_batch_size=4)
        runtime = await open_runtime(settings, role="serve", generator=generator)
        try:
            assert runtime.worker is not None and runtime.manager is not None
            cost = runtime.worker.scheduler.cost
            key = work_key(generator.resolve(GenerationRequest(prompt="x")))
            calibrated = {n: cost.estimate(key, n) or 0.0 for n in (1, 2, 3, 4)}
            source = cost.source
            jobs = [
                await runtime.manager.submit(
                    generator.resolve(GenerationRequest(prompt="x", seed=seed, num_frames=40)),
                    Submission(request_scoped=False),
                )
                for seed in range(3)
            ]
            await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in jobs)), 60)
            return (
                source,
                calibrated,
                cost.source,
                {n: cost.estimate(key, n) or 0.0 for n in (1, 3)},
            )
        finally:
            await runtime.close()

    source, calibrated, later_source, measured = asyncio.run(scenario())
    assert source == "startup calibration"
    # Sizes 1 and 4 measured, 2 and 3 along them: the batching gain, not n times one window.
    for size, seconds in calibrated.items():
        assert seconds == pytest.approx(known_cost(size), rel=0.3)
    assert calibrated[2] < 1.5 * calibrated[1]
    assert later_source == "measured"
    for size, seconds in measured.items():
        assert seconds == pytest.approx(known_cost(size), rel=0.3)
