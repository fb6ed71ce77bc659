"""Is encoding hidden behind generation, and is the default model faster than real time?

Runs the default model over N segments, alternating in one process between the bare
generator and the generator + side-thread encoder pipeline (same request, same seed), and
prints medians side by side:

    python bench/pipeline.py [--segments 8] [--repeats 3] [--backend embedded] [--model-path P]

On a GPU, for LTX-2 (video with its generated audio; the audio track is encoded too):

    python bench/pipeline.py --backend ltx2 --model-path /models/LTX-2 --device cuda \
        --size 768x512 --steps 8 --segments 6 --repeats 2

Targets: pipeline wall / bare wall <= 1.03; segment generation time / segment duration < 1.
Also printed: the time to the first encoded segment, whether there is an audio track (its
encoding is part of the per-segment encode time), and the peak GPU memory on CUDA.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import torch

from segment_pipeline import GenerationRequest, SegmentPipeline, load_generator


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--model-path")
    parser.add_argument("--prompt", default="a red ball moving right")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--offload", default="none", choices=("none", "model", "sequential"))
    parser.add_argument("--size", help="WIDTHxHEIGHT (the model's default when left out)")
    parser.add_argument("--steps", type=int, help="inference steps (the model's default)")
    args = parser.parse_args()

    generator = load_generator(
        args.backend, args.model_path, device=args.device, offload=args.offload
    )
    shape: dict[str, object] = {"prompt": args.prompt, "seed": 0}
    if args.size:
        width, height = (int(v) for v in args.size.lower().split("x"))
        shape.update(width=width, height=height)
    if args.steps:
        shape["num_inference_steps"] = args.steps
    probe = generator.resolve(GenerationRequest(**shape, unbounded=True))  # type: ignore[arg-type]
    frames = probe.frames_emitted_by(0) + (args.segments - 1) * probe.frames_emitted_by(1)
    request = generator.resolve(GenerationRequest(**shape, num_frames=frames))  # type: ignore[arg-type]
    pipeline = SegmentPipeline(generator)
    cuda = torch.cuda.is_available() and args.device.startswith("cuda")

    # Warm-up: first calls pay for allocator and kernel setup.
    warm = {**shape, "seed": 1, "num_frames": probe.frames_emitted_by(0)}
    list(generator.segments(GenerationRequest(**warm)))  # type: ignore[arg-type]
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    bare_walls, pipe_walls, generate_s, encode_s, durations = [], [], [], [], []
    first_s: list[float] = []
    audio_tracks = False
    for _ in range(args.repeats):
        started = time.perf_counter()
        segments = list(generator.segments(request))
        bare_walls.append(time.perf_counter() - started)
        generate_s += [s.generate_seconds for s in segments]
        durations += [s.num_frames / s.fps for s in segments[1:]]  # steady-state segments

        job = pipeline.open(request)
        encoded: list[Any] = []
        arrivals: list[float] = []

        def arrived(segment: Any, into: list[Any] = encoded, at: list[float] = arrivals) -> None:
            into.append(segment)
            at.append(time.perf_counter())

        started = time.perf_counter()
        job.run(arrived)
        pipe_walls.append(time.perf_counter() - started)
        first_s.append(arrivals[0] - started)
        encode_s += [e.encoded.encode_seconds for e in encoded]
        audio_tracks = any(e.encoded.audio_start is not None for e in encoded)

    bare, piped = statistics.median(bare_walls), statistics.median(pipe_walls)
    steady_generate = statistics.median(generate_s[1:])
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"request: {request.width}x{request.height} @ {request.fps:g} fps, "
        f"{request.segment_frames}-frame windows, overlap {request.overlap_frames}, "
        f"{request.num_inference_steps} steps, {args.segments} segments, "
        f"{frames / request.fps:.2f} s of video; {args.repeats} repeats (medians)"
    )
    print(f"{'audio track':<44}{'yes' if audio_tracks else 'no':>8}")
    print(f"{'bare generator wall':<44}{bare:8.3f} s")
    print(f"{'first segment encoded after (median)':<44}{statistics.median(first_s):8.3f} s")
    print(f"{'generator + encoder pipeline wall':<44}{piped:8.3f} s")
    print(f"{'pipeline / bare (target <= 1.03)':<44}{piped / bare:8.3f}")
    print(f"{'per-segment generate (median)':<44}{steady_generate * 1000:8.1f} ms")
    print(f"{'per-segment encode (median)':<44}{statistics.median(encode_s) * 1000:8.1f} ms")
    print(
        f"{'encode / generate per segment':<44}{statistics.median(encode_s) / steady_generate:8.3f}"
    )
    duration = statistics.median(durations)
    print(
        f"{'segment generation time / duration (< 1)':<44}{steady_generate / duration:8.3f}"
        f"   ({steady_generate:.3f} s for {duration:.3f} s of new video)"
    )
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{'peak GPU memory allocated':<44}{peak:8.2f} GiB  ({torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
