"""How a live stream's viewer fares, measured where its segments are published: a model of
the viewer, who starts playing `buffer_s` after the first segment arrives and then plays in
real time, waiting (a stall) whenever the next segment is not there yet.

Per segment: its deadline slack (seconds between its arrival and the moment the viewer
plays it; negative: a deadline miss, the buffer ran out) and the gap between its arrival and
the one before against the video seconds that one held (jitter). Per stream: the miss rate,
the jitter (standard deviation of those gaps) and the first-segment time. Pure: the caller
gives the times (Unix seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentTiming:
    """What one live segment's arrival meant to its viewer (seconds)."""

    slack: float  # when it plays - when it arrived; < 0: a deadline miss
    gap_error: float | None  # arrival gap - the previous segment's video seconds (None: first)


@dataclass
class ViewerClock:
    """One live stream's viewer (see the module docstring). `created_at`: the job's
    creation (Unix seconds), from which the first-segment time counts."""

    created_at: float
    buffer_s: float
    first_at: float | None = None  # Unix seconds the first segment arrived
    segments: int = 0
    misses: int = 0
    _stalled_s: float = 0.0  # the viewer's waits so far: later segments play that much later
    _last: tuple[float, float] | None = None  # (arrival, video seconds) of the previous one
    _gaps: tuple[int, float, float] = (0, 0.0, 0.0)  # Welford: count, mean, sum of squares

    def arrived(self, at: float, start_time: float, end_time: float) -> SegmentTiming:
        """The segment of video `start_time`..`end_time` (seconds) arrived at `at`."""
        if self.first_at is None:
            self.first_at = at - start_time  # a resumed stream: as if its start came then
        plays_at = self.first_at + self.buffer_s + start_time + self._stalled_s
        slack = plays_at - at
        if slack < 0:
            self.misses += 1
            self._stalled_s -= slack
        gap_error = None
        if self._last is not None:
            gap_error = (at - self._last[0]) - self._last[1]
            count, mean, squares = self._gaps
            count += 1
            delta = gap_error - mean
            mean += delta / count
            self._gaps = (count, mean, squares + delta * (gap_error - mean))
        self._last = (at, end_time - start_time)
        self.segments += 1
        return SegmentTiming(slack, gap_error)

    @property
    def first_segment_s(self) -> float | None:
        """From the job's creation to its first segment (seconds)."""
        return None if self.first_at is None else max(0.0, self.first_at - self.created_at)

    @property
    def miss_rate(self) -> float | None:
        """Segments that arrived after the viewer's buffer ran out / segments."""
        return self.misses / self.segments if self.segments else None

    @property
    def jitter_s(self) -> float | None:
        """Standard deviation of (arrival gap - segment seconds), seconds (None: < 2 gaps)."""
        count, _, squares = self._gaps
        return math.sqrt(squares / (count - 1)) if count >= 2 else None
