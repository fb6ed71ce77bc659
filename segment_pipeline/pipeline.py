"""Generation and encoding overlapped: segment k is encoded on a side thread while segment
k+1 is being denoised.

`SegmentPipeline.open(request)` resolves and checks the request and prepares the encoder, so
the init segment and codec string are known before any frame is generated (a server sends
them in its `start` event). `PipelineJob.run(on_segment)` then drives the generator on the
calling thread and hands each `EncodedSegment` to `on_segment`, in order, from the encoder
thread. At most `max_pending` segments wait for the encoder, which bounds memory if encoding
is ever slower than generation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .audio import LOOKAHEAD, SAMPLE_RATE, AudioClip
from .encoder import EncodedFragment, EncoderOptions, FragmentedMP4Encoder
from .generator import CancelToken, ProgressCallback, Segment, SegmentedGenerator
from .request import GenerationRequest, ResolvedRequest


@dataclass(frozen=True)
class EncodedSegment:
    """A generated segment and its fMP4 bytes (see `EncodedFragment` for the two forms)."""

    segment: Segment
    encoded: EncodedFragment

    @property
    def index(self) -> int:
        return self.segment.index

    @property
    def fragment(self) -> bytes:
        return self.encoded.fragment

    @property
    def standalone(self) -> bytes:
        return self.encoded.standalone


class SegmentPipeline:
    """A generator and encoder settings; opens one `PipelineJob` per request."""

    def __init__(self, generator: SegmentedGenerator, options: EncoderOptions | None = None):
        self.generator = generator
        self.options = options or EncoderOptions()

    def open(self, request: GenerationRequest | ResolvedRequest) -> PipelineJob:
        """Check `request` (raises `InvalidRequest`) and prepare its encoder."""
        resolved = (
            request if isinstance(request, ResolvedRequest) else self.generator.resolve(request)
        )
        generator = self.generator
        # An audio track when the request or the model has audio (the request's wins).
        channels: int | None = None
        if resolved.audio is not None:
            channels = resolved.audio.channels
        elif generator.produces_audio:
            channels = generator.audio_channels
        encoder = FragmentedMP4Encoder(
            resolved.width, resolved.height, resolved.fps, self.options, audio_channels=channels
        )
        return PipelineJob(generator, resolved, encoder)


class PipelineJob:
    """One request's run through generator and encoder."""

    def __init__(
        self,
        generator: SegmentedGenerator,
        request: ResolvedRequest,
        encoder: FragmentedMP4Encoder,
        max_pending: int = 2,
    ) -> None:
        self.generator = generator
        self.request = request
        self.encoder = encoder
        self._slots = threading.BoundedSemaphore(max_pending)
        self._executor: ThreadPoolExecutor | None = None
        self._submitted: list[Future[None]] = []

    @property
    def init_segment(self) -> bytes:
        return self.encoder.init_segment

    @property
    def codec_string(self) -> str:
        return self.encoder.codec_string

    @property
    def total_segments(self) -> int | None:
        return self.request.total_segments

    def run(
        self,
        on_segment: Callable[[EncodedSegment], None],
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        """Generate and encode every segment; blocks until the last one is handed over.

        `on_segment` runs on the encoder thread and should return quickly. Errors from the
        generator (including `GenerationCancelled`) and from the encoder are raised here;
        segments already encoded are still handed over first.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="fmp4-encoder") as executor:
            pending: list[Future[None]] = []
            try:
                for segment in self.generator.segments(
                    self.request, progress=progress, cancel=cancel
                ):
                    self._slots.acquire()
                    pending.append(executor.submit(self._encode, segment, on_segment))
                    _raise_failed(pending)
            finally:
                for future in pending:
                    future.exception()  # wait for every submitted segment
            _raise_failed(pending)

    # Encoding segments a caller generates itself (a scheduler running many jobs' windows
    # in batches): each job keeps its own encoder thread, so jobs never wait for each other.
    def encode(
        self, segment: Segment, on_segment: Callable[[EncodedSegment], None]
    ) -> Future[None]:
        """Encode `segment` on this job's encoder thread, after the segments submitted
        before it, and hand it to `on_segment` there. Does not wait; the future ends when
        `on_segment` returned (or raises the encoder's error)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fmp4-encoder")
        future = self._executor.submit(self._encode_only, segment, on_segment)
        self._submitted.append(future)
        return future

    @property
    def encoding(self) -> int:
        """Segments submitted with `encode` and not yet handed over."""
        self._submitted = [future for future in self._submitted if not future.done()]
        return len(self._submitted)

    def close(self) -> None:
        """Wait for the segments submitted with `encode`, then end the encoder thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _encode_only(self, segment: Segment, on_segment: Callable[[EncodedSegment], None]) -> None:
        encoder = self.encoder
        if encoder.audio is None:
            encoded = encoder.encode(segment.index, segment.frames, segment.start_frame)
        else:
            start = encoder.sample_of(segment.start_frame)
            end = encoder.sample_of(segment.start_frame + segment.num_frames)
            audio = segment.audio
            if audio is None:  # an audio-video backend's window came without: silence
                audio = AudioClip(np.zeros((encoder.audio.channels, end - start), np.float32),
                                  SAMPLE_RATE)  # fmt: skip
            # A request's own audio is known past the segment: the encoder can put out
            # every AAC frame that starts in it.
            known = self.request.audio
            ahead = None if known is None else known.span(end, end + LOOKAHEAD)
            encoded = encoder.encode(
                segment.index, segment.frames, segment.start_frame, audio,
                audio_ahead=ahead, last=segment.is_final,
            )  # fmt: skip
        on_segment(EncodedSegment(segment, encoded))

    def _encode(self, segment: Segment, on_segment: Callable[[EncodedSegment], None]) -> None:
        try:
            self._encode_only(segment, on_segment)
        finally:
            self._slots.release()


def _raise_failed(pending: list[Future[None]]) -> None:
    for future in pending:
        if future.done() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
