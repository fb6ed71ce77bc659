"""`streamgen generate`: run the segment pipeline locally and write an MP4, no server needed."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from segment_pipeline import (
    BACKENDS,
    AudioClip,
    CancelEvent,
    EncodedSegment,
    GenerationCancelled,
    GenerationRequest,
    InvalidRequest,
    PipelineError,
    SegmentPipeline,
    load_generator,
    parse_size,
    read_audio,
)
from segment_pipeline.media import MediaLimits, read_image, read_video, read_video_tail

from ..config import ConfigError, Settings, load_settings


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a video locally and write it as MP4",
        description="Generate a video segment by segment and write one fragmented MP4 "
        "(and, with --segments-dir, the init segment and each fragment).",
    )
    p.add_argument("--prompt", required=True, help="what the video shows")
    p.add_argument("-o", "--output", required=True, type=Path, help="output .mp4 path")
    p.add_argument("--segments-dir", type=Path, help="also write init.mp4 and segment_NNNN.m4s")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--seed", type=int, help="noise seed (random if not given)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument(
        "--size", help="WIDTHxHEIGHT or a preset (480p, 540p, 720p, 1080p), instead of "
        "--width/--height; rounded to the nearest size the model makes",
    )  # fmt: skip
    p.add_argument("--fps", type=float)
    duration = p.add_mutually_exclusive_group()
    duration.add_argument("--seconds", type=float, help="video length in seconds")
    duration.add_argument("--num-frames", type=int, help="video length in frames")
    duration.add_argument("--unbounded", action="store_true", help="keep generating until Ctrl-C")
    p.add_argument("--steps", "--num-inference-steps", dest="num_inference_steps", type=int)
    p.add_argument("--guidance-scale", type=float)
    p.add_argument("--segment-frames", type=int, help="frames per generated window")
    p.add_argument("--overlap-frames", type=int, help="frames each segment is conditioned on")
    p.add_argument("--reference-image", type=Path, help="image that becomes frame 0")
    p.add_argument("--extend-video", type=Path, help="video whose end the output continues")
    p.add_argument(
        "--video", type=Path, help="video transformed segment by segment into one of its length "
        "(video to video, on models that can: see --strength)",
    )  # fmt: skip
    p.add_argument("--strength", type=float, help="with --video: how much is re-made, (0, 1]")
    p.add_argument(
        "--audio", type=Path, help="audio file (WAV, MP3, AAC, FLAC, Ogg): the sound track; "
        "the video lasts as long as it unless --seconds or --num-frames is given",
    )  # fmt: skip
    p.add_argument("--audio-scale", type=float, help="how strongly a model that follows audio does")
    p.add_argument(
        "--backend",
        help=f"one of {', '.join(BACKENDS)} (default: the one the --model-path "
        "checkpoint names in its model_index.json; embedded without a path)",
    )
    p.add_argument("--model-path", help="local model directory (real checkpoints)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--offload",
        choices=("none", "model", "sequential"),
        help="a diffusers checkpoint on a small GPU: keep each model (or layer) on the CPU "
        "until it runs (default none)",
    )
    p.add_argument("--config", type=Path, help="YAML settings file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        generator = load_generator(
            settings.backend,
            settings.model_path,
            limits=settings.limits,
            device=settings.device,
            offload=settings.offload,
        )
        request = _request(args, generator.defaults.overlap_frames, settings.media_limits)
        job = SegmentPipeline(generator, settings.encoder_options).open(request)
    except (PipelineError, ConfigError) as exc:
        return _fail(exc)
    return _write(job, args)


def _settings(args: argparse.Namespace) -> Settings:
    config = args.config or os.environ.get("STREAMGEN_CONFIG")
    settings = load_settings(config)
    settings = settings.replace(
        backend=args.backend, model_path=args.model_path, device=args.device, offload=args.offload
    )
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    return settings


def _request(
    args: argparse.Namespace, default_overlap: int, limits: MediaLimits
) -> GenerationRequest:
    """The request `args` ask for; of a video to extend, only the frames the first segment
    conditions on are decoded (its overlap)."""
    given_frames = max(
        1, args.overlap_frames if args.overlap_frames is not None else default_overlap
    )
    width, height = args.width, args.height
    if args.size is not None:
        if width is not None or height is not None:
            raise InvalidRequest("give --size or --width/--height, not both", param="size")
        width, height = parse_size(args.size)
    return GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        width=width,
        height=height,
        fps=args.fps,
        seconds=args.seconds,
        num_frames=args.num_frames,
        unbounded=args.unbounded,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        segment_frames=args.segment_frames,
        overlap_frames=args.overlap_frames,
        reference_image=read_image(args.reference_image, limits=limits)
        if args.reference_image
        else None,
        extend_video=read_video_tail(args.extend_video, overlap_frames=given_frames, limits=limits)
        if args.extend_video
        else None,
        audio=_load_audio(args.audio) if args.audio else None,
        audio_scale=args.audio_scale,
        video=read_video(args.video, limits=limits) if args.video else None,
        strength=args.strength,
    )


def _load_audio(path: Path) -> AudioClip:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read audio {str(path)!r}: {exc}", param="audio") from exc
    return read_audio(data, "audio")


def _write(job: Any, args: argparse.Namespace) -> int:
    """Stream init + fragments into a temporary file beside the output, then rename it.

    On an error nothing is left behind; on Ctrl-C in --unbounded mode the segments finished
    so far are kept (the file is complete up to them).
    """
    from tqdm import tqdm

    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    written: list[Path] = []
    segments_dir: Path | None = args.segments_dir
    if segments_dir is not None:
        segments_dir.mkdir(parents=True, exist_ok=True)
        written.append(_write_file(segments_dir / "init.mp4", job.init_segment))
    total = job.total_segments
    bar = tqdm(
        total=(total or 0) * job.request.num_inference_steps or None,
        unit="step",
        disable=args.quiet,
        file=sys.stderr,
    )
    cancel = CancelEvent()
    frames = 0

    def on_progress(segment: int, step: int, steps: int) -> None:
        bar.set_description(f"segment {segment + 1}/{total or '∞'} step {step}/{steps}")
        bar.update(1)

    def on_segment(encoded: EncodedSegment) -> None:
        nonlocal frames
        os.write(fd, encoded.fragment)
        frames += encoded.segment.num_frames
        if segments_dir is not None:
            name = f"segment_{encoded.index:04d}.m4s"
            written.append(_write_file(segments_dir / name, encoded.fragment))

    keep = False
    try:
        os.write(fd, job.init_segment)
        try:
            job.run(on_segment, progress=on_progress, cancel=cancel)
        except KeyboardInterrupt:
            cancel.set()
            keep = args.unbounded and frames > 0
            if not keep:
                raise
        except GenerationCancelled:
            keep = args.unbounded and frames > 0
            if not keep:
                raise
        keep = True
    except (PipelineError, KeyboardInterrupt, OSError) as exc:
        return _fail(exc)
    finally:
        bar.close()
        os.close(fd)
        if keep:
            os.replace(tmp_name, output)
        else:
            os.unlink(tmp_name)
            for path in written:
                path.unlink(missing_ok=True)
    seconds = frames / job.request.fps
    print(f"wrote {output} ({frames} frames, {seconds:.2f} s, seed {job.request.seed})")
    return 0


def _write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fail(exc: BaseException) -> int:
    param = getattr(exc, "param", None)
    where = f" (parameter: {param})" if param else ""
    message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
    print(f"streamgen generate: error{where}: {message}", file=sys.stderr)
    return 130 if isinstance(exc, KeyboardInterrupt) else 2
