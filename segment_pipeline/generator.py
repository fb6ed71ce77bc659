"""The `SegmentedGenerator` interface every backend implements.

A generator turns a request into an iterator of `Segment`s. Segment k+1 is conditioned on the
last `overlap_frames` frames of segment k: the backend receives them as *given* frames at the
start of its window, and the overlapped frames are emitted once, never twice. The loop here is
shared by every backend; a backend only implements `generate_window` (one segment's worth of
denoising), declares the frame sizes it makes (`size_multiple` and its caps, see `size_rule`)
and, optionally, `check_inputs` for what else it cannot take.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .audio import SAMPLE_RATE, AudioClip, sample_at
from .errors import GenerationCancelled, GenerationFailed, InvalidRequest, PipelineError
from .request import GenerationRequest, GeneratorDefaults, Limits, ResolvedRequest, resolve
from .sizes import SizeRule

MODES = ("t2v", "i2v", "v2v", "extend", "audio")
"""What a model can make, in this order wherever they are listed: video from text, from an
image (frame 0), from a video (`video` transformed with `strength`), a video continued
(`extend_video`), and its own sound."""

ProgressCallback = Callable[[int, int, int], None]
"""Called as ``progress(segment_index, step, total_steps)`` after each denoising step."""


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


class CancelEvent(threading.Event):
    """A cancel token: set it from any thread; generation stops within one denoising step.

    `on_set(callback)` runs `callback()` when it is set (at once if it already is), on the
    thread that sets it: a scheduler that runs many jobs learns of a cancel without polling.
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []
        self._callbacks_lock = threading.Lock()

    def set(self) -> None:
        with self._callbacks_lock:
            first = not self.is_set()
            super().set()
            callbacks = list(self._callbacks) if first else []
        for callback in callbacks:
            callback()

    def on_set(self, callback: Callable[[], None]) -> None:
        with self._callbacks_lock:
            self._callbacks.append(callback)
            already = self.is_set()
        if already:
            callback()

    def forget(self, callback: Callable[[], None]) -> None:
        """No longer call `callback` (and no longer hold on to what it holds)."""
        with self._callbacks_lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


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
    audio: AudioClip | None = field(default=None, repr=False)  # its span, at SAMPLE_RATE

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


class BatchStepCallback(Protocol):
    def __call__(self, item: int, step: int, total_steps: int) -> None: ...


class StreamState:
    """What a backend keeps between the windows of one stream (Helios: its latent history
    and encoded prompts), so it need not derive them again from given frames each window.

    The stream's `SegmentCursor` owns one and hands it to every `WindowTask` of the stream;
    only a backend with `keeps_stream_state` reads or replaces `value` (its own type, which
    it checks). `release()` drops it when the stream ends, fails or is cancelled, so memory
    it holds (on the GPU too) goes with the stream. Windows of one stream run one at a time,
    so it needs no lock.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: object | None = None

    def release(self) -> None:
        self.value = None


@dataclass(frozen=True)
class WindowTask:
    """One window to denoise: window `index` of `request`, starting from the `given` frames
    ((G, H, W, 3) uint8; G may be 0). Its first frame is frame `start_frame` of the output
    (negative for frames of a video being extended); `audio` is the request's audio over
    the window's span (None without), for backends that condition on it; `state` is its
    stream's `StreamState` (a fresh, empty one for a window built alone)."""

    request: ResolvedRequest
    index: int
    given: np.ndarray = field(repr=False)
    start_frame: int = 0
    audio: AudioClip | None = field(default=None, repr=False)
    state: StreamState = field(default_factory=StreamState, repr=False, compare=False)


@dataclass(frozen=True)
class GeneratedWindow:
    """What an audio-video backend makes of a window: its frames and the audio over the
    window's span (any sample rate)."""

    frames: np.ndarray = field(repr=False)
    audio: AudioClip = field(repr=False)


Window = np.ndarray | GeneratedWindow
"""A backend's window: (T, H, W, 3) uint8 frames, or frames with audio."""


class SegmentCursor:
    """Where one request's segment loop stands: the window to generate next (`next_task`)
    and, once it is generated, the segment it adds (`advance`).

    The loop's bookkeeping lives here, shared by every backend and by both drivers: the
    one-request loop (`SegmentedGenerator.segments`) and a scheduler that runs windows of
    many requests in batches. Segment k+1 is given the last `overlap_frames` frames of
    window k; the given frames are put back into the window exactly and emitted once; the
    last segment is trimmed to `total_frames`.
    """

    def __init__(self, request: ResolvedRequest) -> None:
        self.request = request
        self.index = 0  # the next window's index
        self.emitted = 0  # frames of the output video so far
        self.state = StreamState()  # what the backend keeps between this stream's windows
        self._given = _first_given(request)

    @property
    def done(self) -> bool:
        """True once every segment of a bounded request was generated."""
        total = self.request.total_segments
        return total is not None and self.index >= total

    @property
    def seconds_emitted(self) -> float:
        """Seconds of video the segments so far hold."""
        return self.emitted / self.request.fps

    @property
    def _skip(self) -> int:
        """Given frames at the window's start that are not emitted again."""
        first = self.index == 0 and self.request.first_emits_given
        return 0 if first else len(self._given)

    def next_task(self) -> WindowTask:
        """The window to generate next."""
        request = self.request
        start = self.emitted - self._skip
        audio = None
        if request.audio is not None:
            fps = request.fps
            end = start + request.segment_frames
            audio = request.audio.span(sample_at(start, fps), sample_at(end, fps))
        return WindowTask(request, self.index, self._given, start, audio, self.state)

    def advance(self, window: Window, generate_seconds: float) -> Segment:
        """The segment that `window` (the output of `next_task()`'s window) adds; moves on
        to the next window. `generate_seconds` is the wall time it took."""
        request, index, given, skip = self.request, self.index, self._given, self._skip
        made = window.frames if isinstance(window, GeneratedWindow) else window
        frames = np.ascontiguousarray(made, dtype=np.uint8)
        frames[: len(given)] = given
        new = frames[skip:]
        if request.total_frames is not None:
            new = new[: request.total_frames - self.emitted]
        total_segments = request.total_segments
        segment = Segment(
            index=index,
            frames=new,
            start_frame=self.emitted,
            fps=request.fps,
            total_segments=total_segments,
            is_final=total_segments is not None and index == total_segments - 1,
            generate_seconds=generate_seconds,
            audio=self._segment_audio(window, skip, len(new)),
        )
        self.emitted += len(new)
        overlap = request.overlap_frames
        # A copy: a view would keep the whole window alive.
        self._given = frames[len(frames) - overlap :].copy() if overlap else frames[:0].copy()
        self.index += 1
        return segment

    def release(self) -> None:
        """Drop the frames and the backend's state kept for the next window (the loop is
        over: ended, failed or cancelled)."""
        self._given = self._given[:0].copy()
        self.state.release()

    def _segment_audio(self, window: Window, skip: int, count: int) -> AudioClip | None:
        """The audio of the `count` new frames at SAMPLE_RATE, sample-exact: the request's
        own when it has one (passed through, even past an audio-video backend's), else the
        window's (an audio-video backend's), else none."""
        fps = self.request.fps
        start, end = sample_at(self.emitted, fps), sample_at(self.emitted + count, fps)
        if self.request.audio is not None:
            return self.request.audio.span(start, end)
        if isinstance(window, GeneratedWindow):
            window_start = sample_at(self.emitted - skip, fps)
            audio = window.audio.resampled(SAMPLE_RATE)
            return audio.span(start - window_start, end - window_start)
        return None


class SegmentedGenerator(ABC):
    """Prompt + parameters in, an iterator of frame segments out."""

    name: str = "generator"
    defaults: GeneratorDefaults = GeneratorDefaults()
    produces_audio: bool = False  # its windows come with audio (`GeneratedWindow`)
    audio_channels: int = 1  # ...with this many channels
    conditions_on_audio: bool = False  # it follows a request's audio (else passed through)
    # It continues a stream from a `StreamState` it keeps (not from overlap frames): its
    # windows go through `generate_windows` (which sees each task's state), and a video to
    # extend needs no overlap, since the backend reads `extend_video` itself.
    keeps_stream_state: bool = False
    # What it can make, of "t2v", "i2v" (a reference image as frame 0), "v2v" (a `video`
    # transformed), "extend" (an `extend_video` continued); "audio" follows `produces_audio`.
    modes: frozenset[str] = frozenset({"t2v", "i2v", "extend"})
    # The frame sizes it makes (pixels): sides in multiples of `size_multiple`, within its
    # own caps (None: only the service's `Limits`), e.g. what its rotary table holds.
    size_multiple: int = 2
    max_width: int | None = None
    max_height: int | None = None
    max_pixels: int | None = None  # width * height

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    # 1. Inputs ---------------------------------------------------------------------------
    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        """Fill defaults and check `request` for this backend, its size rounded to one the
        model makes (`size_rule`); raises `InvalidRequest`."""
        resolved = resolve(
            request,
            self.defaults,
            self.limits,
            self.size_rule(),
            self.name,
            keeps_stream_state=self.keeps_stream_state,
        )
        check_modes(resolved, self.modes, self.name)
        self.check_inputs(resolved)
        return resolved

    def size_rule(self) -> SizeRule:
        """The sizes this model makes under the service's caps: its multiple (made even for
        H.264 4:2:0) and the lower of its caps and the service's, floored to the multiple."""
        multiple = math.lcm(2, self.size_multiple)

        def cap(own: int | None, service: int) -> int:
            side = service if own is None else min(own, service)
            return max(multiple, side // multiple * multiple)

        limits = self.limits
        width, height = (
            cap(self.max_width, limits.max_width),
            cap(self.max_height, limits.max_height),
        )
        pixels = min(p for p in (self.max_pixels, limits.max_pixels) if p is not None)
        # A pixel cap the side caps already keep is no cap (and not worth saying).
        binding = pixels if pixels < width * height else None
        return SizeRule(multiple, max_width=width, max_height=height, max_pixels=binding)

    def check_inputs(self, request: ResolvedRequest) -> None:
        """Backend-specific checks (frame counts the model can take); raise `InvalidRequest`."""
        del request  # the base class accepts whatever `resolve` accepted

    def describe(self) -> dict[str, Any]:
        """What the service reports about this model (`/v1/models`, `/health`)."""
        return {
            "id": self.name,
            "defaults": self.defaults.__dict__,
            "modes": [
                m for m in MODES if m in self.modes or (m == "audio" and self.produces_audio)
            ],
            "sizes": self.size_rule().describe(),
            "audio": {
                "generates": self.produces_audio,
                "conditions_on_request_audio": self.conditions_on_audio,
                "request_audio": "conditions the video"
                if self.conditions_on_audio
                else "muxed as the audio track, not seen by the model",
            },
        }

    # 2. The backend's one job --------------------------------------------------------------
    @abstractmethod
    def generate_window(
        self,
        request: ResolvedRequest,
        index: int,
        given: np.ndarray,
        on_step: StepCallback,
    ) -> Window:
        """Denoise one window of `request.segment_frames` frames.

        `given` is (G, H, W, 3) uint8: frames fixed at the start of the window (the previous
        segment's overlap, a reference image, or the end of a video to extend); G may be 0.
        Call `on_step(step, total_steps)` after every denoising step (it raises
        `GenerationCancelled` when cancelled). Return (segment_frames, H, W, 3) uint8 whose
        first G frames continue `given` (the loop replaces them by `given` exactly), or,
        from a backend that makes audio too, a `GeneratedWindow` of those frames and the
        audio over the window's span.
        Must be deterministic for a given (request.seed, index, given).
        """

    # 3. Batches (optional) ---------------------------------------------------------------
    def batch_key(self, task: WindowTask) -> Hashable | None:
        """Windows whose keys are equal (and not None) can be denoised together by
        `generate_windows`; None: this window is always denoised alone."""
        del task
        return None

    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> Sequence[Window]:
        """Denoise several windows of equal `batch_key` (of different requests) at once.

        Each window must come out as `generate_window` would make it alone, up to float
        rounding: noise is seeded per window. `on_step(item, step, total_steps)` is called
        for each window after each step (it may raise `GenerationCancelled`, which stops
        the whole batch). This default denoises them one after another.
        """
        windows: list[Window] = []
        for item, task in enumerate(tasks):

            def on_item_step(step: int, total_steps: int, _item: int = item) -> None:
                on_step(_item, step, total_steps)

            windows.append(self.generate_window(task.request, task.index, task.given, on_item_step))
        return windows

    # 4. The segment loop -----------------------------------------------------------------
    def segments(
        self,
        request: GenerationRequest | ResolvedRequest,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[Segment]:
        """Generate `request` segment by segment; stop with `GenerationCancelled` on cancel."""
        resolved = request if isinstance(request, ResolvedRequest) else self.resolve(request)
        cursor = SegmentCursor(resolved)
        try:
            while not cursor.done:
                _raise_if_cancelled(cancel)
                task = cursor.next_task()
                started = time.perf_counter()

                def on_step(
                    item: int, step: int, total_steps: int, _index: int = task.index
                ) -> None:
                    if progress is not None:
                        progress(_index, step, total_steps)
                    _raise_if_cancelled(cancel)

                (window,) = self.run_batch([task], on_step)
                yield cursor.advance(window, time.perf_counter() - started)
        finally:  # done, failed, cancelled or closed early: the stream's state goes
            cursor.release()

    def run_batch(self, tasks: Sequence[WindowTask], on_step: BatchStepCallback) -> list[Window]:
        """`generate_windows` (or `generate_window` for one task), with a backend's own
        failure (torch OOM, a bug) raised as `GenerationFailed`."""
        try:
            if len(tasks) == 1 and not self.keeps_stream_state:
                task = tasks[0]

                def on_only_step(step: int, total_steps: int) -> None:
                    on_step(0, step, total_steps)

                return [self.generate_window(task.request, task.index, task.given, on_only_step)]
            return list(self.generate_windows(tasks, on_step))
        except PipelineError:
            raise
        except Exception as exc:  # one error type for callers
            which = ", ".join(str(task.index) for task in tasks)
            raise GenerationFailed(f"segment {which} failed: {exc}") from exc


def check_modes(request: ResolvedRequest, modes: frozenset[str], model: str) -> None:
    """Raise `InvalidRequest` naming the input `request` gives that `model` cannot take."""
    inputs = (
        ("video", request.video, "v2v", "video to video"),
        ("reference_image", request.reference_image, "i2v", "image to video"),
        ("extend_video", request.extend_video, "extend", "extending a video"),
    )
    for param, given, mode, what in inputs:
        if given is not None and mode not in modes:
            raise InvalidRequest(
                f"{param}: model {model!r} cannot do {what} ({mode}); it can do "
                f"{', '.join(sorted(modes))}",
                param=param,
            )
    if request.reference_image is None and request.extend_video is None and "t2v" not in modes:
        raise InvalidRequest(
            f"model {model!r} needs a reference_image (or an extend_video) to start from",
            param="reference_image",
        )


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


class BatchedGenerator(SegmentedGenerator):
    """A backend that makes its windows in batches (it implements `generate_windows`): one
    window alone is a batch of one."""

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> Window:
        def on_only_step(item: int, step: int, total_steps: int) -> None:
            on_step(step, total_steps)

        task = WindowTask(request, index, given, request.window_start(index))
        return self.generate_windows([task], on_only_step)[0]
