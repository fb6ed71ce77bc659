"""What does the audio track cost per segment, against the video?

Encodes the same segments (a drifting colour gradient with light noise, like generated
video; 1 s each after a first of 1.5 s; a 440 Hz tone as audio) twice, side by side in
one run, alternating: with a video-only encoder and with an audio+video one (AAC-LC,
48 kHz). Prints the median encode seconds per segment
of each, the audio's share, and the bytes each track adds.

    python bench/audio.py [--segments 20] [--size 128x128] [--fps 8] [--channels 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from segment_pipeline import SAMPLE_RATE, AudioClip
from segment_pipeline.audio import AAC_FRAME
from segment_pipeline.encoder import FragmentedMP4Encoder


def segment_plan(count: int, fps: float) -> list[tuple[int, int]]:
    """(start frame, frames) of `count` segments: 1.5 s, then 1 s each."""
    plan, start = [], 0
    for index in range(count):
        frames = round((1.5 if index == 0 else 1.0) * fps)
        plan.append((start, frames))
        start += frames
    return plan


def moving_frames(
    rng: np.random.Generator, start: int, count: int, width: int, height: int
) -> np.ndarray:
    """(count, height, width, 3) uint8: a gradient drifting 2 px a frame, noise of +-8."""
    x = np.arange(width)[None, None, :] + 2 * np.arange(start, start + count)[:, None, None]
    y = np.arange(height)[None, :, None]
    base = np.stack(
        [(x * 3) % 256 + 0 * y, (y * 2 + x) % 256, (255 - y * 2) % 256 + 0 * x], axis=-1
    ).astype(np.int16)
    noise = rng.integers(-8, 9, base.shape, dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def run(
    plan: list[tuple[int, int]], size: tuple[int, int], fps: float, channels: int | None
) -> tuple[list[float], int]:
    """Encode every segment of `plan`; (seconds per segment, bytes in all)."""
    width, height = size
    rng = np.random.default_rng(0)
    encoder = FragmentedMP4Encoder(width, height, fps, audio_channels=channels)
    total = plan[-1][0] + plan[-1][1]
    seconds_all = total / fps
    t = np.arange(int(seconds_all * SAMPLE_RATE) + 4 * AAC_FRAME) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio = AudioClip(np.repeat(tone[None], channels or 1, axis=0), SAMPLE_RATE)
    times, size_bytes = [], len(encoder.init_segment)
    for index, (start, count) in enumerate(plan):
        frames = moving_frames(rng, start, count, width, height)
        begun = time.perf_counter()
        if channels is None:
            encoded = encoder.encode(index, frames, start)
        else:
            a, b = encoder.sample_of(start), encoder.sample_of(start + count)
            encoded = encoder.encode(
                index, frames, start, audio.span(a, b),
                audio_ahead=audio.span(b, b + 3 * AAC_FRAME), last=index == len(plan) - 1,
            )  # fmt: skip
        times.append(time.perf_counter() - begun)
        size_bytes += len(encoded.fragment)
    return times, size_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    plan = segment_plan(args.segments, args.fps)
    video, both = [], []
    video_bytes = both_bytes = 0
    for _ in range(args.repeats):  # alternating, so load drifts hit both alike
        times, video_bytes = run(plan, size, args.fps, None)  # type: ignore[arg-type]
        video += times[1:]  # the first segment is longer: left out of the median
        times, both_bytes = run(plan, size, args.fps, args.channels)  # type: ignore[arg-type]
        both += times[1:]
    v, b = statistics.median(video), statistics.median(both)
    print(f"{args.segments} segments of 1 s at {args.size}, {args.fps:g} fps; audio AAC-LC "
          f"48 kHz, {args.channels} channel(s); medians over {args.repeats} runs")  # fmt: skip
    print(f"video only:    {v * 1000:7.2f} ms a segment")
    print(f"video + audio: {b * 1000:7.2f} ms a segment")
    print(f"audio's cost:  {(b - v) * 1000:7.2f} ms a segment ({(b - v) / v:+.1%} of the video's)")
    seconds = sum(count for _, count in plan) / args.fps
    audio_kbps = (both_bytes - video_bytes) * 8 / seconds / 1000
    print(f"bytes: video {video_bytes / seconds * 8 / 1000:.0f} kbit/s, audio adds "
          f"{audio_kbps:.0f} kbit/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
