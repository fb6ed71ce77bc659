"""A live stream's viewer as its published segments treat it: deadline slack and misses,
arrival jitter, first-segment time (pure, times given)."""

from __future__ import annotations

import pytest

from streamgen.jobs.pace import ViewerClock


def test_a_stream_at_real_time_misses_nothing_and_has_no_jitter() -> None:
    viewer = ViewerClock(created_at=100.0, buffer_s=1.0)
    timings = [viewer.arrived(100.5 + k, k, k + 1.0) for k in range(5)]
    assert viewer.first_segment_s == pytest.approx(0.5)
    assert [t.slack for t in timings] == pytest.approx([1.0] * 5)
    assert timings[0].gap_error is None
    assert viewer.miss_rate == 0 and viewer.jitter_s == pytest.approx(0.0)


def test_a_late_segment_is_a_miss_and_the_viewer_waits_for_it() -> None:
    viewer = ViewerClock(created_at=0.0, buffer_s=1.0)
    viewer.arrived(1.0, 0.0, 1.0)  # plays at 2.0
    late = viewer.arrived(4.5, 1.0, 2.0)  # due at 3.0: 1.5 s late, the viewer stalls
    after = viewer.arrived(5.0, 2.0, 3.0)  # due at 4.0 + 1.5 stalled = 5.5
    assert late.slack == pytest.approx(-1.5) and after.slack == pytest.approx(0.5)
    assert viewer.misses == 1 and viewer.miss_rate == pytest.approx(1 / 3)
    # Gaps of 3.5 and 0.5 s against 1 s segments: errors +2.5 and -0.5.
    assert late.gap_error == pytest.approx(2.5) and after.gap_error == pytest.approx(-0.5)
    assert viewer.jitter_s == pytest.approx(2.1213, rel=1e-3)
