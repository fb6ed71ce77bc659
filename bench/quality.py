"""Quality of the embedded default model on held-out prompts of the procedural world.

    python bench/quality.py [--quick] [--model DIR] [--seed N] [--seeds K]

Every video is generated through the `SegmentedGenerator` API (`EmbeddedGenerator`),
encoded to fragmented MP4 (`FragmentedMP4Encoder`), decoded back with PyAV, and measured
frame by frame with `segment_pipeline.training.world.observe`. Prompts come from the held-out
templates only (sentence forms the model never saw in training). Measured:

- colour / shape / background: the majority over a clip's frames matches the prompt;
- direction: the heading of the object's track over the first 1.5 s matches the prompt;
- start: a moving object's first centre lies in the third of the frame opposite its heading
  (where the world's clips start it), so it has the frame to cross;
  every prompt runs with several seeds (`--seeds`);
- seams: mean object jump across segment seams / mean frame-to-frame move inside segments
  (moving prompts), with overlap conditioning (the default overlap) and without it
  (overlap_frames=0, each segment generated from the prompt alone);
- reference image: a world frame as frame 0 (object anywhere), then colour and direction;
- drift: over a 30 s unbounded stream, frames with the object present in the prompted colour;
- speed (video seconds a wall second over those streams) and the size of the weights.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segment_pipeline.backends.embedded import EmbeddedGenerator
from segment_pipeline.embedded_vocabulary import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES
from segment_pipeline.encoder import FragmentedMP4Encoder
from segment_pipeline.generator import SegmentedGenerator
from segment_pipeline.request import GenerationRequest
from segment_pipeline.training.world import (
    HEADINGS,
    Observation,
    SceneSpec,
    WorldConfig,
    heading,
    make_clip,
    make_prompt,
    observe,
)

TARGETS = {"colour": 0.95, "shape": 0.90, "direction": 0.90, "start_third": 0.90,
           "seam_ratio": 1.5, "drift": 0.95, "realtime": 2.0, "weights_mb": 20.0}  # fmt: skip
DIRECTION_SECONDS = 1.5  # the object cannot reach the far wall this soon (it starts 1/3 away)


@dataclass(frozen=True)
class Video:
    """Decoded frames (T, H, W, 3) and the first frame of every segment after the first."""

    frames: np.ndarray
    seams: list[int] = field(default_factory=list)
    generate_seconds: float = 0.0


def held_out_specs(count: int, seed: int) -> list[SceneSpec]:
    """`count` scenes spread over every shape, colour, background and direction."""
    rng = np.random.default_rng(seed)
    grid = list(itertools.product(SHAPES, COLOURS, BACKGROUNDS, DIRECTIONS))
    order = rng.permutation(len(grid))
    return [SceneSpec(*grid[i]) for i in order[:count]]


def encode_decode(segments: list[tuple[int, np.ndarray, int]], fps: float) -> np.ndarray:
    """Encode (index, frames, start_frame) segments as one fMP4 and decode it (T, H, W, 3)."""
    height, width = segments[0][1].shape[1:3]
    encoder = FragmentedMP4Encoder(width, height, fps)
    data = encoder.init_segment + b"".join(
        encoder.encode(index, frames, start).fragment for index, frames, start in segments
    )
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def generate(
    generator: SegmentedGenerator, request: GenerationRequest, max_frames: int | None = None
) -> Video:
    """Run `request` segment by segment (stopping after `max_frames` if unbounded)."""
    started = time.perf_counter()
    segments, seams, total = [], [], 0
    for segment in generator.segments(request):
        if segment.index:
            seams.append(segment.start_frame)
        segments.append((segment.index, segment.frames, segment.start_frame))
        total += segment.num_frames
        if max_frames is not None and total >= max_frames:
            break
    seconds = time.perf_counter() - started
    return Video(encode_decode(segments, generator.defaults.fps), seams, seconds)


def majority(values: list[str | None]) -> str | None:
    found = [v for v in values if v is not None]
    return Counter(found).most_common(1)[0][0] if found else None


def track(observations: list[Observation]) -> np.ndarray:
    """Centres (T, 2), carrying the last seen centre over frames without an object."""
    last = (np.nan, np.nan)
    out = []
    for o in observations:
        last = o.centre if o.centre is not None else last
        out.append(last)
    return np.array(out, dtype=np.float64)


def score_clip(spec: SceneSpec, frames: np.ndarray, fps: float) -> dict[str, bool]:
    """Whether a clip's colour, shape, background and direction match `spec`."""
    observations = [observe(f) for f in frames]
    head = observations[: round(DIRECTION_SECONDS * fps)]
    centres = track(head)
    seen = ~np.isnan(centres[:, 0])
    direction = heading(centres[seen]) if seen.sum() >= 2 else None
    scores = {
        "colour": majority([o.colour for o in observations]) == spec.colour,
        "shape": majority([o.shape for o in observations]) == spec.shape,
        "background": majority([o.background for o in observations]) == spec.background,
        "direction": direction == spec.direction,
    }
    if spec.direction != "still":
        scores["start_third"] = starts_opposite(spec, observations[0], frames.shape[1:3])
    return scores


def starts_opposite(spec: SceneSpec, first: Observation, size: tuple[int, int]) -> bool:
    """Whether the object's first centre is in the third opposite its prompted heading."""
    if first.centre is None:
        return False
    half = np.array([size[1], size[0]], dtype=np.float64) / 2
    toward = np.array(HEADINGS[spec.direction], dtype=np.float64)
    position = float(((np.array(first.centre) - half) / half) @ toward)  # -1: the far wall
    return position < -1 / 3


def seam_moves(frames: np.ndarray, seams: list[int]) -> tuple[list[float], list[float]]:
    """Object moves (pixels) across seams and between frames inside segments."""
    centres = track([observe(f) for f in frames])
    moves = np.linalg.norm(np.diff(centres, axis=0), axis=1)  # moves[i]: frame i -> i+1
    at_seam = {s - 1 for s in seams}
    seam, inside = [], []
    for i, move in enumerate(moves):
        if np.isnan(move):
            continue
        (seam if i in at_seam else inside).append(float(move))
    return seam, inside


def drift_fraction(spec: SceneSpec, frames: np.ndarray) -> float:
    """Fraction of frames showing the object in the prompted colour."""
    return float(np.mean([observe(f).colour == spec.colour for f in frames]))


# The runs ---------------------------------------------------------------------------------------
def run_prompts(
    generator: SegmentedGenerator,
    specs: list[SceneSpec],
    seed: int,
    guidance: float | None,
    seeds: int,
) -> dict:
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {}
    seconds = 0.0
    for i, spec in enumerate(specs):
        prompt = make_prompt(spec, rng, held_out=True)
        for k in range(seeds):
            request = GenerationRequest(
                prompt, guidance_scale=guidance, seed=seed + 1000 * k + i, seconds=3.0
            )
            video = generate(generator, request)
            seconds += video.generate_seconds
            for key, ok in score_clip(spec, video.frames, generator.defaults.fps).items():
                hits.setdefault(key, []).append(ok)
    counts = {f"n_{key}": len(v) for key, v in hits.items()}
    return {key: float(np.mean(v)) for key, v in hits.items()} | counts | {"seconds": seconds}


def run_reference(
    generator: SegmentedGenerator, specs: list[SceneSpec], seed: int, guidance: float | None
) -> dict:
    rng = np.random.default_rng(seed + 1)
    world = WorldConfig()
    hits: dict[str, list[bool]] = {}
    for i, spec in enumerate(specs):
        image = make_clip(spec, rng, 1, world, anywhere=True).frames[0]
        prompt = make_prompt(spec, rng, held_out=True)
        request = GenerationRequest(
            prompt, guidance_scale=guidance, seed=seed + i, seconds=3.0, reference_image=image
        )
        frames = generate(generator, request).frames
        # A reference image may sit near a wall: judge only the first second of motion.
        scores = score_clip(spec, frames[: round(generator.defaults.fps)], generator.defaults.fps)
        for key in ("colour", "direction"):
            hits.setdefault(key, []).append(scores[key])
    return {key: float(np.mean(v)) for key, v in hits.items()}


def run_seams(
    generator: SegmentedGenerator,
    specs: list[SceneSpec],
    seed: int,
    overlap: int,
    guidance: float | None,
) -> dict:
    rng = np.random.default_rng(seed + 2)
    seam, inside = [], []
    for i, spec in enumerate(s for s in specs if s.direction != "still"):
        prompt = make_prompt(spec, rng, held_out=True)
        request = GenerationRequest(
            prompt, guidance_scale=guidance, seed=seed + i, seconds=6.0, overlap_frames=overlap
        )
        video = generate(generator, request)
        s, m = seam_moves(video.frames, video.seams)
        seam += s
        inside += m
    ratio = float(np.mean(seam) / max(np.mean(inside), 1e-6)) if seam and inside else float("nan")
    return {"seam_px": float(np.mean(seam)), "inside_px": float(np.mean(inside)), "ratio": ratio}


def run_drift(
    generator: SegmentedGenerator, specs: list[SceneSpec], seed: int, guidance: float | None
) -> dict:
    rng = np.random.default_rng(seed + 3)
    fractions, seconds = [], 0.0
    frames_30s = round(30 * generator.defaults.fps)
    for i, spec in enumerate(specs):
        prompt = make_prompt(spec, rng, held_out=True)
        video = generate(
            generator,
            GenerationRequest(prompt, guidance_scale=guidance, seed=seed + i, unbounded=True),
            frames_30s,
        )
        fractions.append(drift_fraction(spec, video.frames[:frames_30s]))
        seconds += video.generate_seconds
    return {"fraction": float(np.mean(fractions)), "min": float(np.min(fractions)),
            "realtime": 30 * len(specs) / seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Quality of the embedded default model.")
    parser.add_argument("--quick", action="store_true", help="a smaller run (~1/3)")
    parser.add_argument("--model", type=Path, default=None, help="model directory")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's")
    parser.add_argument("--seeds", type=int, default=None, help="seeds a prompt (3; quick 1)")
    args = parser.parse_args(argv)
    generator = EmbeddedGenerator(args.model)
    seeds = args.seeds or (1 if args.quick else 3)
    n_prompts, n_seams, n_drift = (18, 6, 1) if args.quick else (48, 12, 3)
    specs = held_out_specs(n_prompts, args.seed)
    seam_specs = [s for s in held_out_specs(80, args.seed + 7) if s.direction != "still"][:n_seams]
    drift_specs = held_out_specs(n_drift, args.seed + 11)

    prompts = run_prompts(generator, specs, args.seed, args.guidance, seeds)
    reference = run_reference(generator, specs[: max(6, n_prompts // 3)], args.seed, args.guidance)
    overlap = generator.defaults.overlap_frames
    with_overlap = run_seams(generator, seam_specs, args.seed, overlap, args.guidance)
    without = run_seams(generator, seam_specs, args.seed, 0, args.guidance)
    drift = run_drift(generator, drift_specs, args.seed, args.guidance)

    weights_mb = sum(f.stat().st_size for f in generator.model_path.iterdir()) / 1e6
    met = {
        "colour": prompts["colour"] >= TARGETS["colour"],
        "shape": prompts["shape"] >= TARGETS["shape"],
        "direction": prompts["direction"] >= TARGETS["direction"],
        "start_third": prompts["start_third"] >= TARGETS["start_third"],
        "seam_ratio": with_overlap["ratio"] <= TARGETS["seam_ratio"],
        "drift": drift["fraction"] >= TARGETS["drift"],
        "realtime": drift["realtime"] >= TARGETS["realtime"],
        "weights_mb": weights_mb <= TARGETS["weights_mb"],
    }

    def target(key: str, text: str) -> str:
        return f"{text} ({'met' if met[key] else 'missed'})"

    rows = [
        ("colour (held-out prompts)", f"{prompts['colour']:.0%}",
         target("colour", f">= {TARGETS['colour']:.0%}")),
        ("shape", f"{prompts['shape']:.0%}", target("shape", f">= {TARGETS['shape']:.0%}")),
        (f"direction (first {DIRECTION_SECONDS:g} s)", f"{prompts['direction']:.0%}",
         target("direction", f">= {TARGETS['direction']:.0%}")),
        ("start in the third opposite the heading", f"{prompts['start_third']:.0%}",
         target("start_third", f">= {TARGETS['start_third']:.0%}")),
        ("background", f"{prompts['background']:.0%}", ""),
        ("reference image: colour", f"{reference['colour']:.0%}", ""),
        ("reference image: direction (first 1 s)", f"{reference['direction']:.0%}", ""),
        ("seam jump / inside move, overlap "
         f"{generator.defaults.overlap_frames}",
         f"{with_overlap['ratio']:.2f} ({with_overlap['seam_px']:.1f} / "
         f"{with_overlap['inside_px']:.1f} px)",
         target("seam_ratio", f"<= {TARGETS['seam_ratio']}")),
        ("seam jump / inside move, overlap 0",
         f"{without['ratio']:.2f} ({without['seam_px']:.1f} / {without['inside_px']:.1f} px)", ""),
        ("30 s stream: object in prompted colour", f"{drift['fraction']:.1%} (worst "
         f"{drift['min']:.1%})", target("drift", f">= {TARGETS['drift']:.0%}")),
        ("30 s stream: generation speed", f"{drift['realtime']:.2f}x real time",
         target("realtime", f">= {TARGETS['realtime']:g}x")),
        ("weights", f"{weights_mb:.1f} MB",
         target("weights_mb", f"<= {TARGETS['weights_mb']:g} MB")),
    ]  # fmt: skip
    guidance = args.guidance if args.guidance is not None else generator.defaults.guidance_scale
    print(
        f"model: {generator.model_path}  prompts: {n_prompts} held-out x {seeds} seeds "
        f"({prompts['n_colour']} clips, {prompts['n_start_third']} moving), seed {args.seed}, "
        f"{generator.defaults.num_inference_steps} steps, guidance {guidance}"
    )
    print("| metric | measured | target |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    return {"prompts": prompts, "reference": reference, "seams_overlap": with_overlap,
            "seams_no_overlap": without, "drift": drift, "weights_mb": weights_mb,
            "met": met}  # fmt: skip


if __name__ == "__main__":
    main()
