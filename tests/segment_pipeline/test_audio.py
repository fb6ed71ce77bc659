"""Audio beside the video: reading audio files (checked by header), the job's continuous AAC
track cut into the segments' fragments, in sync at every segment and with no drift over a
60 s stream, in every form (continuous, self-contained, joined with ffmpeg)."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from segment_pipeline import (
    SAMPLE_RATE,
    AudioClip,
    AudioLimits,
    GenerationRequest,
    InvalidRequest,
    SegmentPipeline,
    fmp4,
    read_audio,
)
from segment_pipeline.audio import AAC_FRAME
from segment_pipeline.encoder import FragmentedMP4Encoder

from .pattern import PatternGenerator

FPS = 8
FRAME_S = 1 / FPS


def ffmpeg_concat(files: list[Path], directory: Path) -> Path:
    """`files` joined by ffmpeg's concat demuxer without re-encoding (as users join saved
    segments); the joined file, in `directory`."""
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed (.ci/run installs it)")
    listing = directory / "list.txt"
    listing.write_text("".join(f"file '{name}'\n" for name in files))
    joined = directory / "joined.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c", "copy", str(joined)],
        check=True, timeout=60,
    )  # fmt: skip
    return joined


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A 16-bit PCM WAV file of (channels, n) float samples in [-1, 1]."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(samples.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples.T, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def clicks(seconds: int, rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """Silence with a 10 ms 1 kHz burst at the start of every second."""
    t = np.arange(seconds * rate) / rate
    signal = np.zeros_like(t)
    burst = int(0.01 * rate)
    for second in range(seconds):
        at = second * rate
        signal[at : at + burst] = 0.8 * np.sin(2 * np.pi * 1000 * t[:burst])
    return np.repeat(signal[None], channels, axis=0).astype(np.float32)


def onsets(samples: np.ndarray, seconds: int, rate: int = SAMPLE_RATE) -> list[int]:
    """Where each second's burst starts, in samples from where it was put."""
    out = []
    for second in range(1, seconds):
        window = np.abs(samples[second * rate - 2000 : second * rate + 4000]) > 0.2
        out.append(int(np.argmax(window)) - 2000)
    return out


def test_read_audio_resamples_checks_the_header_and_names_the_field() -> None:
    stereo = np.stack([np.sin(np.arange(22050) / 10), np.cos(np.arange(22050) / 10)]) * 0.5
    clip = read_audio(wav_bytes(stereo.astype(np.float32), 22050))
    assert clip.sample_rate == SAMPLE_RATE and clip.channels == 2
    assert abs(clip.seconds - 1.0) < 0.01
    long = wav_bytes(np.zeros((1, 8000 * 20), np.float32), 8000)  # 20 s
    with pytest.raises(InvalidRequest, match=r"lasts 20\.0 s") as info:
        read_audio(long, "audio_base64", AudioLimits(max_seconds=10))
    assert info.value.param == "audio_base64"
    with pytest.raises(InvalidRequest, match="not readable audio") as info:
        read_audio(b"RIFF this is not a wave file at all", "audio")
    assert info.value.param == "audio"


def encode_stream(seconds: int, *, ahead: bool = True) -> tuple[bytes, list[bytes], list, int]:
    """`seconds` of a test video (12 frames, then 8 a segment) with the click track; the
    continuous MP4, each segment's standalone file, the fragments and the frame count."""
    audio = AudioClip(clicks(seconds), SAMPLE_RATE)
    encoder = FragmentedMP4Encoder(64, 64, FPS, audio_channels=1)
    total = seconds * FPS
    parts, alone, encoded, start, index = [encoder.init_segment], [], [], 0, 0
    while start < total:
        count = min(12 if index == 0 else 8, total - start)
        begin, end = encoder.sample_of(start), encoder.sample_of(start + count)
        frames = np.full((count, 64, 64, 3), start % 250, np.uint8)
        last = start + count == total
        piece = encoder.encode(
            index, frames, start, audio.span(begin, end),
            audio_ahead=audio.span(end, end + 3 * AAC_FRAME) if ahead and not last else None,
            last=last,
        )  # fmt: skip
        parts.append(piece.fragment)
        alone.append(piece.standalone)
        encoded.append(piece)
        start, index = start + count, index + 1
    return b"".join(parts), alone, encoded, total


def test_a_60_second_stream_keeps_its_audio_in_sync_at_every_segment_and_at_the_end() -> None:
    video, _, encoded, total = encode_stream(60)
    for piece in encoded:  # every fragment's audio starts with its video, within a frame
        video_s = piece.start_frame * FRAME_S
        assert piece.audio_start is not None
        assert abs(piece.audio_start / SAMPLE_RATE - video_s) <= AAC_FRAME / SAMPLE_RATE
    assert sum(p.audio_samples for p in encoded) >= total * SAMPLE_RATE // FPS
    with av.open(io.BytesIO(video)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    with av.open(io.BytesIO(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == ["audio", "video"] and frames == total
    assert abs(decoded.shape[1] / SAMPLE_RATE - total / FPS) <= AAC_FRAME / SAMPLE_RATE
    # The bursts are where they were put, the 59th as the 1st: no drift.
    found = onsets(decoded[0], 60)
    assert max(found) - min(found) <= 2 and abs(found[0]) <= FRAME_S * SAMPLE_RATE
    # And the audio is the input, within AAC's error.
    reference = clicks(60)[0][: decoded.shape[1]]
    shift = found[0]
    aligned = decoded[0][shift:] if shift >= 0 else np.pad(decoded[0], (-shift, 0))
    n = min(len(aligned), len(reference))
    correlation = np.corrcoef(aligned[:n], reference[:n])[0, 1]
    assert correlation > 0.95, correlation


def test_without_lookahead_the_audio_still_adds_up() -> None:
    video, _, encoded, total = encode_stream(10, ahead=False)
    with av.open(io.BytesIO(video)) as container:
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert abs(decoded.shape[1] / SAMPLE_RATE - total / FPS) <= AAC_FRAME / SAMPLE_RATE
    found = onsets(decoded[0], 10)
    assert max(found) - min(found) <= 2
    for piece in encoded:  # frames the encoder held back go with the next segment
        video_s = piece.start_frame * FRAME_S
        assert abs(piece.audio_start / SAMPLE_RATE - video_s) <= 3 * AAC_FRAME / SAMPLE_RATE


def test_each_segment_file_plays_alone_with_sound_and_ffmpeg_joins_them(tmp_path: Path) -> None:
    _, alone, _, total = encode_stream(6)
    names = []
    for index, data in enumerate(alone):
        path = tmp_path / f"segment_{index:04d}.mp4"
        path.write_bytes(data)
        names.append(path)
        with av.open(io.BytesIO(data)) as container:
            assert sorted(s.type for s in container.streams) == ["audio", "video"]
            assert sum(1 for _ in container.decode(audio=0)) > 0
    with av.open(str(ffmpeg_concat(names, tmp_path))) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
        audio_s = sum(f.samples for f in container.decode(audio=0)) / SAMPLE_RATE
    assert abs(audio_s - total / FPS) < 0.1


def test_the_pipeline_passes_a_requests_audio_through_as_the_track() -> None:
    generator = PatternGenerator()
    audio = AudioClip(clicks(3), SAMPLE_RATE)
    request = generator.resolve(GenerationRequest(prompt="p", audio=audio, fps=FPS))
    assert request.total_frames == 3 * FPS  # as long as its audio
    job = SegmentPipeline(generator).open(request)
    assert job.codec_string.endswith(",mp4a.40.2")
    assert fmp4.tracks(job.init_segment)[b"soun"][1] == SAMPLE_RATE
    parts = [job.init_segment]
    job.run(lambda encoded: parts.append(encoded.fragment))
    with av.open(io.BytesIO(b"".join(parts))) as container:
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert abs(decoded.shape[1] - 3 * SAMPLE_RATE) <= AAC_FRAME
    found = onsets(decoded[0], 3)
    assert all(abs(offset) <= FRAME_S * SAMPLE_RATE for offset in found)
