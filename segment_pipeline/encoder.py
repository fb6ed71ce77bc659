"""H.264 fragmented-MP4 encoding of segments, in memory.

Each segment gets its own short-lived muxer (`frag_keyframe+empty_moov+default_base_moof`),
closed at the segment's end, so its fragment leaves the muxer the moment its last frame is
encoded instead of one GOP late. Every muxer writes the same init segment for equal settings
(checked), so the job's stream is: the init segment once, then each segment's `moof`+`mdat`
with its decode time shifted to the segment's start. The fragment as the muxer wrote it
(decode time 0) plus the init is a self-contained MP4 of that segment alone.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from . import fmp4
from .errors import EncoderError

_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
# Longer than any segment: the only keyframe of a segment is its first frame. Fixed, because
# it is written into the init segment, which must be the same for every segment.
_GOP_FRAMES = 100_000


@dataclass(frozen=True)
class EncoderOptions:
    """libx264 settings. `threads` is the encoder's own thread count (per segment)."""

    codec: str = "libx264"
    preset: str = "veryfast"
    crf: int = 23
    threads: int = 1


@dataclass(frozen=True)
class EncodedFragment:
    """One segment as fMP4 bytes.

    `fragment` is `moof`+`mdat` with decode times continuous across the job (append it to the
    init segment and the fragments before it); `standalone` is init + this fragment with its
    timeline starting at 0 (a playable file on its own).
    """

    index: int
    start_frame: int
    num_frames: int
    fragment: bytes
    standalone: bytes
    decode_time: int  # ticks of the track timescale
    encode_seconds: float


class FragmentedMP4Encoder:
    """Encode (T, H, W, 3) uint8 segments of one job into one continuous fragmented MP4."""

    def __init__(
        self, width: int, height: int, fps: float, options: EncoderOptions | None = None
    ) -> None:
        if width % 2 or height % 2:
            raise EncoderError(f"H.264 4:2:0 needs even sizes, got {width}x{height}")
        self.width = width
        self.height = height
        self.rate = Fraction(fps).limit_denominator(1001)
        self.options = options or EncoderOptions()
        # The init segment depends only on the settings, so it is known before any media.
        probe = self._mux(np.zeros((1, height, width, 3), dtype=np.uint8))
        self.init_segment, _ = fmp4.split_init(probe)
        self.codec_string = fmp4.codec_string(self.init_segment)
        self.timescale = fmp4.track_timescale(self.init_segment)
        ticks = Fraction(self.timescale) / self.rate
        if ticks.denominator != 1:
            raise EncoderError(
                f"track timescale {self.timescale} is not a multiple of {self.rate} fps"
            )
        self.ticks_per_frame = int(ticks)

    def encode(self, index: int, frames: np.ndarray, start_frame: int) -> EncodedFragment:
        """Encode segment `index` whose first frame is frame `start_frame` of the job."""
        started = time.perf_counter()
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise EncoderError(
                f"segment {index} frames have shape {frames.shape}, "
                f"expected (T, {self.height}, {self.width}, 3)"
            )
        data = self._mux(frames)
        init, media = fmp4.split_init(data)
        if init != self.init_segment:
            raise EncoderError(f"segment {index} came out with a different init segment")
        continuous = fmp4.retime_fragments(
            media, decode_offset=start_frame * self.ticks_per_frame, sequence_start=index + 1
        )
        return EncodedFragment(
            index=index,
            start_frame=start_frame,
            num_frames=len(frames),
            fragment=continuous,
            standalone=init + media,
            decode_time=start_frame * self.ticks_per_frame,
            encode_seconds=time.perf_counter() - started,
        )

    def _mux(self, frames: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        try:
            with av.open(
                buffer, "w", format="mp4", container_options={"movflags": _MOVFLAGS}
            ) as container:
                stream = container.add_stream(self.options.codec, rate=self.rate)
                assert isinstance(stream, av.VideoStream)
                stream.width = self.width
                stream.height = self.height
                stream.pix_fmt = "yuv420p"
                # One keyframe per segment, at its start; no B-frames, so decode order is
                # presentation order and MSE needs no composition offsets.
                stream.gop_size = _GOP_FRAMES
                stream.options = {
                    "preset": self.options.preset,
                    "crf": str(self.options.crf),
                    "tune": "zerolatency",
                    "bf": "0",
                }
                stream.codec_context.thread_count = self.options.threads
                for pts, pixels in enumerate(frames):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                    frame.pts = pts
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))
        except (av.FFmpegError, ValueError) as exc:
            raise EncoderError(f"encoding failed: {exc}") from exc
        return buffer.getvalue()
