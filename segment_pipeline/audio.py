"""Audio beside the video: a clip of samples, reading one from a file's bytes (checked by its
header before any decoding), and the job's AAC encoder.

The video is cut into segments; the audio is not: one `AacEncoder` encodes a job's audio
continuously (no priming or click at a seam), and each segment's fragment gets the AAC
frames (1024 samples each) that start within its video span. Where the audio is known
ahead (a request's own audio), the encoder is fed a little past the segment's end, so every
frame that starts in the segment is out when the segment is muxed: a fragment's audio then
starts at most one AAC frame (21 ms at 48 kHz) after its video. Where it is made with the
video (an audio-video backend), the encoder can hold back up to two frames, which go out
with the next segment.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from .errors import InvalidRequest
from .media import header_seconds

SAMPLE_RATE = 48_000  # Hz: every job's audio track (AAC-LC)
AAC_FRAME = 1024  # samples an AAC frame holds
LOOKAHEAD = 3 * AAC_FRAME  # samples the encoder needs past a frame to put it out


def sample_at(frame: int, fps: float) -> int:
    """The audio sample (at `SAMPLE_RATE`) where video frame `frame` starts; the one rule
    for every cut, so segments' audio adds up with no sample lost or doubled."""
    return round(frame * SAMPLE_RATE / Fraction(fps).limit_denominator(1001))


@dataclass(frozen=True)
class AudioClip:
    """`samples` is (channels, n) float32 in [-1, 1] at `sample_rate` Hz (1 or 2 channels)."""

    samples: np.ndarray = field(repr=False)
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def span(self, start: int, end: int) -> AudioClip:
        """Samples `start` to `end` (silence where that is outside the clip)."""
        length = max(0, end - start)
        out = np.zeros((self.channels, length), np.float32)
        lo, hi = max(0, start), min(self.num_samples, end)
        if hi > lo:
            out[:, lo - start : hi - start] = self.samples[:, lo:hi]
        return AudioClip(out, self.sample_rate)

    def resampled(self, rate: int) -> AudioClip:
        """The clip at `rate` Hz (linear interpolation, per channel)."""
        if rate == self.sample_rate:
            return self
        count = round(self.num_samples * rate / self.sample_rate)
        source = np.arange(self.num_samples) / self.sample_rate
        target = np.arange(count) / rate
        samples = np.stack([np.interp(target, source, channel) for channel in self.samples])
        return AudioClip(samples.astype(np.float32), rate)


@dataclass(frozen=True)
class AudioLimits:
    """Caps checked from the file's header before anything is decoded."""

    max_seconds: float = 600.0
    max_bytes: int = 64 * 1024 * 1024


def read_audio(data: bytes, param: str = "audio", limits: AudioLimits | None = None) -> AudioClip:
    """The audio of a WAV, MP3, AAC, FLAC, Ogg or M4A file's bytes, as a mono or stereo clip
    at `SAMPLE_RATE`. Raises `InvalidRequest` naming `param` when the bytes are not audio,
    the header says it is longer than the cap, or it has no samples."""
    limits = limits or AudioLimits()
    if len(data) > limits.max_bytes:
        raise InvalidRequest(
            f"{param} is {len(data)} bytes; the cap is {limits.max_bytes}", param=param
        )
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidRequest(f"{param} has no audio stream", param=param)
            stream = container.streams.audio[0]
            seconds = header_seconds(container, stream)
            if seconds is not None and seconds > limits.max_seconds:
                raise InvalidRequest(
                    f"{param} lasts {seconds:.1f} s; the cap is {limits.max_seconds:g} s",
                    param=param,
                )
            layout = "mono" if stream.codec_context.channels == 1 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
            chunks: list[np.ndarray] = []
            total = 0
            cap = int(limits.max_seconds * SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                    total += out.samples
                if total > cap:  # a header that lied about the length
                    raise InvalidRequest(
                        f"{param} is longer than the cap of {limits.max_seconds:g} s",
                        param=param,
                    )
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except InvalidRequest:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise InvalidRequest(f"{param} is not readable audio: {exc}", param=param) from exc
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise InvalidRequest(f"{param} has no audio samples", param=param)
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    return AudioClip(np.clip(samples, -1.0, 1.0), SAMPLE_RATE)


@dataclass(frozen=True)
class AacFrame:
    """One encoded AAC frame: its bytes, its first sample (from the job's start) and length."""

    data: bytes
    start: int  # samples
    duration: int  # samples


class AacEncoder:
    """A job's audio, encoded continuously as AAC-LC at `SAMPLE_RATE` (see the module
    docstring). `feed` the samples in order; `take(before)` hands out the frames that start
    before sample `before`; `finish` flushes the rest."""

    def __init__(self, channels: int, bit_rate: int | None = None) -> None:
        self.channels = channels
        self.layout = "mono" if channels == 1 else "stereo"
        self._context = av.CodecContext.create("aac", "w")
        self._context.sample_rate = SAMPLE_RATE
        self._context.layout = self.layout
        self._context.format = "fltp"
        self.bit_rate = bit_rate or (96_000 if channels == 1 else 128_000)
        self._context.bit_rate = self.bit_rate
        self._context.time_base = Fraction(1, SAMPLE_RATE)
        self._context.open()
        self.extradata = bytes(self._context.extradata or b"")
        self._fed = 0  # samples given so far
        self._ready: list[AacFrame] = []

    @property
    def fed(self) -> int:
        """Samples given so far."""
        return self._fed

    def feed(self, samples: np.ndarray) -> None:
        """Encode the next (channels, n) float32 samples."""
        if samples.shape[1] == 0:
            return
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32), format="fltp", layout=self.layout
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._fed
        frame.time_base = Fraction(1, SAMPLE_RATE)
        self._fed += samples.shape[1]
        self._keep(self._context.encode(frame))

    def take(self, before: int) -> list[AacFrame]:
        """The frames out so far that start before sample `before`."""
        out = [f for f in self._ready if f.start < before]
        self._ready = self._ready[len(out) :]
        return out

    def finish(self) -> list[AacFrame]:
        """Flush the encoder: every frame left."""
        self._keep(self._context.encode(None))
        out, self._ready = self._ready, []
        return out

    def _keep(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            # The encoder's first frame (before sample 0) is its priming: dropped, so the
            # track starts with the audio itself, in step with the video.
            if packet.pts is None or packet.pts < 0:
                continue
            duration = AAC_FRAME if packet.duration is None else int(packet.duration)
            self._ready.append(AacFrame(bytes(packet), int(packet.pts), duration))
