"""The `SegmentedGenerator` interface every backend implements.

A generator turns a request into an iterator of `Segment`s. Segment k+1 is conditioned on the
last `overlap_frames` frames of segment k: the backend receives them as *given* frames at the
start of its window, and the overlapped frames are emitted once, never twice. The loop here is
shared by every backend; a backend only implements `generate_window` (one segment's worth of
denoising) and, optionally, `check_inputs` for the sizes it can take.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import GenerationCancelled, GenerationFailed, PipelineError
from .request import GenerationRequest, GeneratorDefaults, Limits, ResolvedRequest, resolve

ProgressCallback = Callable[[int, int, int], None]
"""Called as ``progress(segment_index, step, total_steps)`` after each denoising step."""


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


class CancelEvent(threading.Event):
    """A cancel token: set it from any thread; generation stops within one denoising step."""


@dataclass(frozen=True)
class Segment:
    """One generated segment: the new frames it adds to the video.

    `frames` is (T, H, W, 3) uint8 RGB; `start_frame` is the index of its first frame in the
    whole output video; `total_segments` is None for unbounded streams.
    """

    index: int
    frames: np.ndarray = field(repr=False)
    start_frame: int
    fps: float
    total_segments: int | None
    is_final: bool
    generate_seconds: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def start_seconds(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_seconds(self) -> float:
        return (self.start_frame + self.num_frames) / self.fps


class StepCallback(Protocol):
    def __call__(self, step: int, total_steps: int) -> None: ...


class SegmentedGenerator(ABC):
    """Prompt + parameters in, an iterator of frame segments out."""

    name: str = "generator"
    defaults: GeneratorDefaults = GeneratorDefaults()

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    # 1. Inputs ---------------------------------------------------------------------------
    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        """Fill defaults and check `request` for this backend; raises `InvalidRequest`."""
        resolved = resolve(request, self.defaults, self.limits)
        self.check_inputs(resolved)
        return resolved

    def check_inputs(self, request: ResolvedRequest) -> None:
        """Backend-specific checks (sizes the model can take); raise `InvalidRequest`."""
        del request  # the base class accepts whatever `resolve` accepted

    def describe(self) -> dict[str, Any]:
        """What the service reports about this model (`/v1/models`, `/health`)."""
        return {"id": self.name, "defaults": self.defaults.__dict__}

    # 2. The backend's one job --------------------------------------------------------------
    @abstractmethod
    def generate_window(
        self,
        request: ResolvedRequest,
        index: int,
        given: np.ndarray,
        on_step: StepCallback,
    ) -> np.ndarray:
        """Denoise one window of `request.segment_frames` frames.

        `given` is (G, H, W, 3) uint8: frames fixed at the start of the window (the previous
        segment's overlap, a reference image, or the end of a video to extend); G may be 0.
        Call `on_step(step, total_steps)` after every denoising step (it raises
        `GenerationCancelled` when cancelled). Return (segment_frames, H, W, 3) uint8 whose
        first G frames continue `given`; the loop replaces them by `given` exactly.
        Must be deterministic for a given (request.seed, index, given).
        """

    # 3. The segment loop -----------------------------------------------------------------
    def segments(
        self,
        request: GenerationRequest | ResolvedRequest,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[Segment]:
        """Generate `request` segment by segment; stop with `GenerationCancelled` on cancel."""
        resolved = request if isinstance(request, ResolvedRequest) else self.resolve(request)
        total_segments = resolved.total_segments
        given = _first_given(resolved)
        emitted = 0
        index = 0
        while total_segments is None or index < total_segments:
            _raise_if_cancelled(cancel)
            started = time.perf_counter()

            def on_step(step: int, total_steps: int, _index: int = index) -> None:
                if progress is not None:
                    progress(_index, step, total_steps)
                _raise_if_cancelled(cancel)

            try:
                window = self.generate_window(resolved, index, given, on_step)
            except PipelineError:
                raise
            except Exception as exc:  # torch OOM, backend bugs: one error type for callers
                raise GenerationFailed(f"segment {index} failed: {exc}") from exc
            window = np.ascontiguousarray(window, dtype=np.uint8)
            window[: len(given)] = given
            skip = 0 if (index == 0 and resolved.first_emits_given) else len(given)
            new = window[skip:]
            if resolved.total_frames is not None:
                new = new[: resolved.total_frames - emitted]
            is_final = total_segments is not None and index == total_segments - 1
            yield Segment(
                index=index,
                frames=new,
                start_frame=emitted,
                fps=resolved.fps,
                total_segments=total_segments,
                is_final=is_final,
                generate_seconds=time.perf_counter() - started,
            )
            emitted += len(new)
            overlap = resolved.overlap_frames
            given = window[len(window) - overlap :] if overlap else window[:0]
            index += 1


def _first_given(request: ResolvedRequest) -> np.ndarray:
    empty = np.zeros((0, request.height, request.width, 3), dtype=np.uint8)
    if request.extend_video is not None:
        return request.extend_video[len(request.extend_video) - request.first_given_frames :]
    if request.reference_image is not None:
        return request.reference_image[None]
    return empty


def _raise_if_cancelled(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled()
