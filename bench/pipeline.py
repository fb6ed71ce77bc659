"""Is encoding hidden behind generation, and is the default model faster than real time?

Runs the default model over N segments, alternating in one process between the bare
generator and the generator + side-thread encoder pipeline (same request, same seed), and
prints medians side by side:

    python bench/pipeline.py [--segments 8] [--repeats 3] [--backend embedded] [--model-path P]

Targets: pipeline wall / bare wall <= 1.03; segment generation time / segment duration < 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

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
    args = parser.parse_args()

    generator = load_generator(args.backend, args.model_path)
    probe = generator.resolve(GenerationRequest(prompt=args.prompt, unbounded=True, seed=0))
    frames = probe.frames_emitted_by(0) + (args.segments - 1) * probe.frames_emitted_by(1)
    request = generator.resolve(GenerationRequest(prompt=args.prompt, num_frames=frames, seed=0))
    pipeline = SegmentPipeline(generator)

    # Warm-up: first calls pay for allocator and kernel setup.
    list(generator.segments(GenerationRequest(prompt=args.prompt, num_frames=8, seed=1)))

    bare_walls, pipe_walls, generate_s, encode_s, durations = [], [], [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        segments = list(generator.segments(request))
        bare_walls.append(time.perf_counter() - started)
        generate_s += [s.generate_seconds for s in segments]
        durations += [s.num_frames / s.fps for s in segments[1:]]  # steady-state segments

        job = pipeline.open(request)
        encoded = []
        started = time.perf_counter()
        job.run(encoded.append)
        pipe_walls.append(time.perf_counter() - started)
        encode_s += [e.encoded.encode_seconds for e in encoded]

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
    print(f"{'bare generator wall':<44}{bare:8.3f} s")
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


if __name__ == "__main__":
    main()
