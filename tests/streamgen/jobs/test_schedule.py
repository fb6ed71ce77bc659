"""The worker's scheduling policy, as pure functions: which batch next, what batches cost,
whether one more live stream fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamgen.jobs.load import StreamLoad, WorkerLoad, estimated_start
from streamgen.jobs.schedule import (
    Candidate,
    CostModel,
    LiveLoad,
    WorkKey,
    admits,
    choose_batch,
    seconds_until_done,
    utilization,
)

KEY = WorkKey(128, 128, 12, 8, False)
BIG = WorkKey(256, 256, 12, 8, False)


def candidate(
    job_id: str, tier: str = "live", deadline: float = 0.0, **fields: object
) -> Candidate:
    values = {"batch_key": KEY, "work_key": KEY, "order": int(job_id[-1]), **fields}
    return Candidate(job_id, tier, deadline=deadline, **values)  # type: ignore[arg-type]


def ids(batch: list[Candidate]) -> list[str]:
    return [c.job_id for c in batch]


def test_the_live_stream_due_first_heads_the_batch_and_same_shapes_join_it() -> None:
    ready = [
        candidate("j1", deadline=5.0),
        candidate("j2", deadline=1.0),
        candidate("j3", tier="offline"),
        candidate("j4", deadline=2.0, batch_key="other"),
    ]
    batch = choose_batch(ready, now=0.0, max_batch=4, lead_s=2.0)
    assert ids(batch) == ["j2", "j1", "j3"]  # j4 cannot share a forward pass
    assert ids(choose_batch(ready, now=0.0, max_batch=2, lead_s=2.0)) == ["j2", "j1"]


def test_offline_work_goes_first_when_every_stream_is_well_ahead() -> None:
    ready = [candidate("j1", deadline=10.0), candidate("j2", tier="offline", batch_key="o")]
    assert ids(choose_batch(ready, now=0.0, max_batch=4, lead_s=2.0)) == ["j2"]
    # Within the lead the stream is due: it goes first.
    assert ids(choose_batch(ready, now=8.5, max_batch=4, lead_s=2.0)) == ["j1"]


def test_a_late_head_takes_only_others_that_are_due() -> None:
    joiner = candidate("j1", deadline=-1.0)  # waiting for its first segment
    ahead = candidate("j2", deadline=6.0)
    due = candidate("j3", deadline=1.0)
    batch = choose_batch([joiner, ahead, due], now=0.0, max_batch=4, lead_s=2.0)
    assert ids(batch) == ["j1", "j3"]


def test_offline_jobs_share_fairly_and_priority_goes_first() -> None:
    long_run = candidate("j1", tier="offline", batch_key="a", video_seconds=30.0)
    newer = candidate("j2", tier="offline", batch_key="b", video_seconds=2.0)
    assert ids(choose_batch([long_run, newer], 0.0, max_batch=1, lead_s=2.0)) == ["j2"]
    urgent = candidate("j3", tier="offline", batch_key="c", video_seconds=50.0, priority=5)
    assert ids(choose_batch([long_run, newer, urgent], 0.0, max_batch=1, lead_s=2.0)) == ["j3"]


def test_watched_jobs_come_after_live_streams_at_equal_urgency() -> None:
    watched = candidate("j1", tier="watched", deadline=-1.0, batch_key="w")
    live = candidate("j2", deadline=0.5, batch_key="l")
    assert ids(choose_batch([watched, live], 0.0, max_batch=4, lead_s=2.0)) == ["j2"]


def test_cost_model_learns_and_extrapolates_without_assuming_a_gain() -> None:
    cost = CostModel(smoothing=0.5)
    assert cost.estimate(KEY, 1) is None and not cost.known
    cost.observe(KEY, 1, 0.4)
    assert cost.estimate(KEY, 1) == 0.4
    assert cost.estimate(KEY, 3) == pytest.approx(1.2)  # one size seen: proportional
    cost.observe(KEY, 2, 0.6)
    assert cost.estimate(KEY, 4) == pytest.approx(1.0)  # linear through 1 and 2
    cost.observe(KEY, 1, 0.2)
    assert cost.estimate(KEY, 1) == pytest.approx(0.3)  # running mean
    # Another shape: scaled by work (4x the pixels), along this shape's sizes.
    assert cost.estimate(BIG, 1) == pytest.approx(0.3 * 4)
    assert cost.estimate(BIG, 2) == pytest.approx(0.6 * 4)


def test_a_shape_seen_at_one_size_takes_the_batching_gain_of_another() -> None:
    cost = CostModel()
    cost.observe(KEY, 1, 0.4, calibration=True)
    cost.observe(KEY, 4, 0.8, calibration=True)  # a batch of 4 costs 2x one window
    assert cost.source == "startup calibration"
    cost.observe(BIG, 1, 2.0)
    assert cost.source == "measured"
    # Not 2x for two windows of BIG: the gain measured on KEY, cost(2) / cost(1).
    gain = (0.4 + (0.8 - 0.4) / 3) / 0.4
    assert cost.estimate(BIG, 2) == pytest.approx(2.0 * gain)
    assert cost.estimate(BIG, 4) == pytest.approx(2.0 * 2)
    assert CostModel().source == "none"


def test_the_estimate_converges_to_what_batches_really_cost() -> None:
    # A generator of known cost: 0.3 s a batch plus 0.1 s a window, +-20 % noise; the
    # calibration measured it wrong (a busy moment), the batches run correct it.
    rng = np.random.default_rng(7)
    cost = CostModel()
    for size in (1, 4):
        cost.observe(KEY, size, 3 * (0.3 + 0.1 * size), calibration=True)
    for _ in range(60):
        size = int(rng.integers(1, 5))
        cost.observe(KEY, size, (0.3 + 0.1 * size) * rng.uniform(0.8, 1.2))
    for size in (1, 2, 3, 4):
        assert cost.estimate(KEY, size) == pytest.approx(0.3 + 0.1 * size, rel=0.15)


def test_admission_keeps_every_live_stream_at_real_time() -> None:
    cost = CostModel()
    for size, seconds in ((1, 0.4), (2, 0.6), (3, 0.8), (4, 1.0)):
        cost.observe(KEY, size, seconds)
    stream = LiveLoad(KEY, segment_seconds=1.0)
    options = {"max_live": 4, "max_batch": 4, "utilization_cap": 0.9}
    assert admits([], stream, cost, **options)  # type: ignore[arg-type]
    assert admits([stream] * 2, stream, cost, **options)  # type: ignore[arg-type]
    assert not admits([stream] * 3, stream, cost, **options)  # type: ignore[arg-type]
    # At the default cap of 1.0 the fourth fits: batched, four need exactly the worker.
    assert admits([stream] * 3, stream, cost, **{**options, "utilization_cap": 1.0})  # type: ignore[arg-type]
    assert utilization([stream] * 3, cost, 4) == pytest.approx(0.8)
    assert utilization([stream] * 5, cost, 4) == pytest.approx(1.4)  # 4 + 1
    capped = {**options, "max_live": 2}
    assert not admits([stream] * 2, stream, cost, **capped)  # type: ignore[arg-type]
    # Nothing measured (calibration off): no evidence against it, so it is admitted.
    assert admits([stream], stream, CostModel(), **options)  # type: ignore[arg-type]


def test_two_streams_fit_from_the_calibration_alone() -> None:
    # What the startup calibration gives (sizes 1 and 4): two streams at 0.6 s a second
    # of video each alone fit batched (not 1.2 as two single windows would be).
    cost = CostModel()
    cost.observe(KEY, 1, 0.6, calibration=True)
    cost.observe(KEY, 4, 1.2, calibration=True)
    stream = LiveLoad(KEY, segment_seconds=1.0)
    options = {"max_live": 4, "max_batch": 4, "utilization_cap": 1.0}
    assert utilization([stream] * 2, cost, 4) == pytest.approx(0.8)
    assert admits([stream], stream, cost, **options)  # type: ignore[arg-type]
    assert not admits([stream] * 3, stream, cost, **options)  # type: ignore[arg-type]


def test_time_to_finish_and_estimated_start() -> None:
    assert seconds_until_done(3, 0.5, 100.0) == 1.5
    assert seconds_until_done(None, 0.5, 100.0) == 100.0
    assert seconds_until_done(3, None, 100.0) == math.inf
    busy = WorkerLoad("w1", 0.0, 4, 4, 4, 8, False, True, 50.0, 0.95,
                      (StreamLoad("job_1", True, 1.1, 3.0),))  # fmt: skip
    free = WorkerLoad("w2", 0.0, 1, 4, 1, 8, True, True, 80.0, 0.3)
    assert estimated_start([busy, free], live=True, position=0, now=10.0) == 10.0
    assert estimated_start([busy, free], live=True, position=1, now=10.0) == 50.0
    assert estimated_start([busy], live=True, position=3, now=10.0) == 50.0
    assert estimated_start([], live=True, position=0, now=10.0) is None
    back = WorkerLoad.from_dict(busy.to_dict())
    assert back == busy


def test_offline_jobs_behind_real_time_still_share_a_batch() -> None:
    # Offline jobs have no viewer: however far behind their own pace, they batch together.
    ready = [candidate(f"j{i}", tier="offline", deadline=-100.0) for i in (1, 2, 3)]
    assert ids(choose_batch(ready, now=0.0, max_batch=4, lead_s=2.0)) == ["j1", "j2", "j3"]


def test_an_offline_job_that_waited_too_long_goes_before_a_late_stream() -> None:
    slow_stream = candidate("j1", deadline=-5.0, batch_key="s")  # always late: below real time
    waiting = candidate("j2", tier="offline", batch_key="o", waited_s=3.0)
    options = {"max_batch": 4, "lead_s": 2.0, "starving_s": 10.0}
    assert ids(choose_batch([slow_stream, waiting], 0.0, **options)) == ["j1"]  # type: ignore[arg-type]
    starved = candidate("j2", tier="offline", batch_key="o", waited_s=11.0)
    assert ids(choose_batch([slow_stream, starved], 0.0, **options)) == ["j2"]  # type: ignore[arg-type]
