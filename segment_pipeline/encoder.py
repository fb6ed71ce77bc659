"""H.264 (and AAC) fragmented-MP4 encoding of segments, in memory.

Each segment gets its own short-lived muxer (`frag_keyframe+empty_moov+default_base_moof`),
closed at the segment's end, so its fragment leaves the muxer the moment its last frame is
encoded instead of one GOP late. Every muxer writes the same init segment for equal settings
(checked), so the job's stream is: the init segment once, then each segment's `moof`+`mdat`
with its decode time shifted to the segment's start. The fragment as the muxer wrote it
(decode time 0) plus the init is a self-contained MP4 of that segment alone.

With audio, the init segment has a second track (AAC-LC, `audio.SAMPLE_RATE`), and each
segment's fragment is its video `moof`+`mdat` followed by an audio `moof`+`mdat` holding the
AAC frames that start within the segment's video span, from the job's one continuous
encoder (`audio.AacEncoder`); the audio boxes are written here (`fmp4.sample_fragment`).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import numpy as np

from . import fmp4
from .audio import SAMPLE_RATE, AacEncoder, AudioClip, sample_at
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
    decode_time: int  # ticks of the video track's timescale
    encode_seconds: float
    audio_start: int | None = None  # first audio sample in the fragment (None: no audio)
    audio_samples: int = 0  # audio samples in the fragment


class FragmentedMP4Encoder:
    """Encode (T, H, W, 3) uint8 segments of one job into one continuous fragmented MP4."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        options: EncoderOptions | None = None,
        *,
        audio_channels: int | None = None,
    ) -> None:
        if width % 2 or height % 2:
            raise EncoderError(f"H.264 4:2:0 needs even sizes, got {width}x{height}")
        self.width = width
        self.height = height
        self.rate = Fraction(fps).limit_denominator(1001)
        self.options = options or EncoderOptions()
        # The init segment depends only on the settings, so it is known before any media.
        probe = self._mux(np.zeros((1, height, width, 3), dtype=np.uint8))
        self.video_init, _ = fmp4.split_init(probe)
        self.init_segment = self.video_init
        self.codec_string = fmp4.codec_string(self.video_init)
        self.timescale = fmp4.track_timescale(self.video_init)
        self.audio: AacEncoder | None = None
        self.audio_track = 0
        if audio_channels is not None:
            self.audio = AacEncoder(audio_channels)
            self.init_segment = self._init_with_audio(self.audio)
            self.codec_string += ",mp4a.40.2"
            self.audio_track = fmp4.tracks(self.init_segment)[b"soun"][0]
        ticks = Fraction(self.timescale) / self.rate
        if ticks.denominator != 1:
            raise EncoderError(
                f"track timescale {self.timescale} is not a multiple of {self.rate} fps"
            )
        self.ticks_per_frame = int(ticks)

    def encode(
        self,
        index: int,
        frames: np.ndarray,
        start_frame: int,
        audio: AudioClip | None = None,
        *,
        audio_ahead: AudioClip | None = None,
        last: bool = False,
    ) -> EncodedFragment:
        """Encode segment `index` whose first frame is frame `start_frame` of the job.

        With an audio track: `audio` is the segment's audio (its video span, from its first
        frame's time; silence when None), `audio_ahead` the audio right after it when it is
        known already (then every AAC frame starting in the segment is in its fragment),
        and `last` flushes the audio encoder (the job's final segment).
        """
        started = time.perf_counter()
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise EncoderError(
                f"segment {index} frames have shape {frames.shape}, "
                f"expected (T, {self.height}, {self.width}, 3)"
            )
        data = self._mux(frames)
        init, media = fmp4.split_init(data)
        if init != self.video_init:
            raise EncoderError(f"segment {index} came out with a different init segment")
        # With audio, two fragments a segment (video, audio): sequence numbers 2k+1, 2k+2.
        sequence = index + 1 if self.audio is None else 2 * index + 1
        continuous = fmp4.retime_fragments(
            media, decode_offset=start_frame * self.ticks_per_frame, sequence_start=sequence
        )
        encoded = EncodedFragment(
            index=index,
            start_frame=start_frame,
            num_frames=len(frames),
            fragment=continuous,
            standalone=self.init_segment + media,
            decode_time=start_frame * self.ticks_per_frame,
            encode_seconds=0.0,
        )
        if self.audio is not None:
            encoded = self._with_audio(encoded, audio, audio_ahead, last)
        return replace(encoded, encode_seconds=time.perf_counter() - started)

    def sample_of(self, frame: int) -> int:
        """The audio sample where video frame `frame` starts."""
        return sample_at(frame, float(self.rate))

    def _with_audio(
        self,
        encoded: EncodedFragment,
        audio: AudioClip | None,
        ahead: AudioClip | None,
        last: bool,
    ) -> EncodedFragment:
        assert self.audio is not None
        start = self.sample_of(encoded.start_frame)
        end = self.sample_of(encoded.start_frame + encoded.num_frames)
        if audio is None or audio.num_samples != end - start:
            raise EncoderError(
                f"segment {encoded.index} needs {end - start} audio samples (its video span "
                f"at {SAMPLE_RATE} Hz), got {0 if audio is None else audio.num_samples}"
            )
        self._feed(audio, start)
        if ahead is not None:
            self._feed(ahead, end)
        frames = self.audio.take(end)
        if last:
            frames += [f for f in self.audio.finish() if f.start < end]
        samples = [(f.data, f.duration) for f in frames]
        first = frames[0].start if frames else start
        track, sequence = self.audio_track, 2 * encoded.index + 2
        fragment = fmp4.sample_fragment(samples, track, first, sequence)
        # Alone, the segment's audio starts with its video (a frame held back from the
        # segment before moves to time 0 too).
        alone = fmp4.sample_fragment(samples, track, max(0, first - start), 2)
        return replace(
            encoded,
            fragment=encoded.fragment + fragment,
            standalone=encoded.standalone + alone,
            audio_start=first,
            audio_samples=sum(f.duration for f in frames),
        )

    def _feed(self, clip: AudioClip, start: int) -> None:
        """Feed the part of `clip` (whose first sample is sample `start` of the job) that
        the encoder has not had yet."""
        assert self.audio is not None
        if clip.sample_rate != SAMPLE_RATE or clip.channels != self.audio.channels:
            raise EncoderError(
                f"audio must be {self.audio.channels} channel(s) at {SAMPLE_RATE} Hz, got "
                f"{clip.channels} at {clip.sample_rate} Hz"
            )
        skip = self.audio.fed - start
        if skip < 0:
            raise EncoderError(f"audio from sample {start} leaves a gap after {self.audio.fed}")
        self.audio.feed(clip.samples[:, skip:])

    def _init_with_audio(self, audio: AacEncoder) -> bytes:
        """The two-track init segment: the video track as every segment's muxer writes it,
        and an AAC track configured as `audio` encodes."""
        buffer = io.BytesIO()
        try:
            with av.open(
                buffer, "w", format="mp4", container_options={"movflags": _MOVFLAGS}
            ) as container:
                video = self._add_video(container)
                sound = container.add_stream("aac", rate=SAMPLE_RATE)
                assert isinstance(sound, av.AudioStream)
                sound.layout = audio.layout
                sound.bit_rate = audio.bit_rate
                frame = av.VideoFrame.from_ndarray(
                    np.zeros((self.height, self.width, 3), np.uint8), format="rgb24"
                )
                frame.pts = 0
                container.mux(video.encode(frame))
                container.mux(video.encode(None))
                silence = av.AudioFrame.from_ndarray(
                    np.zeros((audio.channels, 1024), np.float32), format="fltp",
                    layout=audio.layout,
                )  # fmt: skip
                silence.sample_rate = SAMPLE_RATE
                silence.pts = 0
                container.mux(sound.encode(silence))
                container.mux(sound.encode(None))
        except (av.FFmpegError, ValueError) as exc:
            raise EncoderError(f"making the init segment failed: {exc}") from exc
        init, _ = fmp4.split_init(buffer.getvalue())
        if fmp4.sample_entry(init, b"vide") != fmp4.sample_entry(self.video_init, b"vide"):
            raise EncoderError("the video track differs between the init segments")
        if audio.extradata and audio.extradata not in fmp4.sample_entry(init, b"soun"):
            raise EncoderError("the audio track's configuration differs from the encoder's")
        return init

    def _mux(self, frames: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        try:
            with av.open(
                buffer, "w", format="mp4", container_options={"movflags": _MOVFLAGS}
            ) as container:
                stream = self._add_video(container)
                for pts, pixels in enumerate(frames):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                    frame.pts = pts
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))
        except (av.FFmpegError, ValueError) as exc:
            raise EncoderError(f"encoding failed: {exc}") from exc
        return buffer.getvalue()

    def _add_video(self, container: av.container.OutputContainer) -> av.VideoStream:
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
        return stream
