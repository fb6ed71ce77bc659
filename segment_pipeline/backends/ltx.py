"""The LTX-Video backend: diffusers' `LTXConditionPipeline`, one pipeline call per segment.

Segment k+1 is conditioned on the last `overlap_frames` frames of segment k, given to the
pipeline as an `LTXVideoCondition` video at frame 0; a reference image (or the end of a video
to extend) conditions segment 0 the same way; with no given frames a segment is plain
text-to-video. LTX-Video's VAE compresses 32x in space and 8x in time, with the first frame
encoded alone, so frame sizes are multiples of 32 and frame counts of the form 8k+1 (9, 17,
25, 33, ...): both the segment and the conditioning overlap. `check_inputs` says so per
parameter before any work starts.

The checkpoint is a local diffusers directory (`model_index.json`, transformer, vae,
text_encoder, tokenizer, scheduler). Everything that can go wrong with it is found while the
generator is built and raised as `ModelLoadError`, never in the middle of a job.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXConditionPipeline,
    LTXVideoTransformer3DModel,
)
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
from PIL import Image
from transformers import T5EncoderModel

from ..errors import InvalidRequest, ModelLoadError
from ..generator import BatchStepCallback, SegmentedGenerator, StepCallback, WindowTask
from ..request import GeneratorDefaults, Limits, ResolvedRequest
from .embedded import window_seed

logger = logging.getLogger(__name__)

LTX_PIPELINES = ("LTXPipeline", "LTXConditionPipeline", "LTXImageToVideoPipeline")
"""`_class_name`s in `model_index.json` whose components `LTXConditionPipeline` can run."""

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")

LTX_DEFAULTS = GeneratorDefaults(
    width=768,
    height=512,
    fps=24.0,
    seconds=4.0,
    num_inference_steps=8,
    guidance_scale=1.0,
    segment_frames=33,
    overlap_frames=9,
)
"""LTX-Video's native 768x512 at 24 fps. 8 steps without guidance suit the distilled
checkpoints; a non-distilled one wants ~30-40 steps and guidance_scale ~3-5 per request.
A 33-frame segment overlapping 9 adds 24 frames (1 s) per segment after the first."""

# Decode settings diffusers documents for timestep-aware LTX VAEs (0.9.1 and later).
DECODE_TIMESTEP = 0.05
DECODE_NOISE_SCALE = 0.025


@dataclass(frozen=True)
class LTXBatchKey:
    """What windows must share to go through one LTX-Video pipeline call."""

    width: int
    height: int
    segment_frames: int
    fps: float
    num_inference_steps: int
    guidance_scale: float
    given_frames: int


class LTXGenerator(SegmentedGenerator):
    """Generates with an LTX-Video diffusers checkpoint on CPU or GPU."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        limits: Limits | None = None,
        device: str = "cpu",
        defaults: GeneratorDefaults | None = None,
    ) -> None:
        super().__init__(limits)
        self.model_path = Path(model_path)
        self.device = torch_device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.pipe = _load_pipeline(self.model_path, self.device, self.dtype)
        self.name = self.model_path.name or "ltx-video"
        self.defaults = defaults or LTX_DEFAULTS
        vae, transformer = self.pipe.vae, self.pipe.transformer
        spatial = vae.spatial_compression_ratio * transformer.config.patch_size
        self.size_multiple = math.lcm(32, spatial)  # the pipeline itself insists on 32
        self.frame_multiple = vae.temporal_compression_ratio * transformer.config.patch_size_t
        # One pipeline object holds per-call state (guidance scale, timesteps): one call at a time.
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            backend="ltx",
            weights=Path(self.model_path).name,  # its directory, not where it lies on disk
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
        )
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        check_shape(request, self.size_multiple, self.frame_multiple, "LTX-Video")

    def batch_key(self, task: WindowTask) -> Hashable:
        """Windows batch when the pipeline call is the same but for prompts, given clips and
        seeds: one size, length, frame rate, step count and guidance scale, and the same
        number of given frames (the pipeline conditions every sample at frame 0 alike)."""
        request = task.request
        return LTXBatchKey(
            width=request.width,
            height=request.height,
            segment_frames=request.segment_frames,
            fps=request.fps,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            given_frames=len(task.given),
        )

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> np.ndarray:
        def on_only_step(item: int, step: int, total_steps: int) -> None:
            on_step(step, total_steps)

        return self.generate_windows([WindowTask(request, index, given)], on_only_step)[0]

    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> list[np.ndarray]:
        first = tasks[0].request

        # 1. Conditioning: each window's given frames as a clip at frame 0, or none
        conditions = _conditions([task.given for task in tasks])

        # 2. Per-step progress; `on_step` raises GenerationCancelled, which stops the pipeline
        def on_step_end(
            pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            for item in range(len(tasks)):
                on_step(item, step + 1, pipe.num_timesteps)
            return tensors

        # 3. Denoise and decode, with noise seeded per window
        timestep_vae = bool(self.pipe.vae.config.timestep_conditioning)
        generators = [
            torch.Generator().manual_seed(window_seed(task.request.seed, task.index))
            for task in tasks
        ]
        with self._lock:
            output = self.pipe(
                conditions=conditions,
                prompt=[task.request.prompt for task in tasks],
                negative_prompt=[task.request.negative_prompt for task in tasks],
                height=first.height,
                width=first.width,
                num_frames=first.segment_frames,
                frame_rate=first.fps,
                num_inference_steps=first.num_inference_steps,
                guidance_scale=first.guidance_scale,
                generator=generators,
                decode_timestep=DECODE_TIMESTEP if timestep_vae else 0.0,
                decode_noise_scale=DECODE_NOISE_SCALE if timestep_vae else None,
                output_type="np",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=[],
            )

        # 4. (B, T, H, W, 3) floats in [0, 1] to (T, H, W, 3) uint8 a window
        frames = np.asarray(output.frames)
        return [(video * 255.0).round().clip(0, 255).astype(np.uint8) for video in frames]


def _conditions(givens: list[np.ndarray]) -> list[LTXVideoCondition] | None:
    """One condition at frame 0 holding each window's given clip (all of one length)."""
    if len(givens[0]) == 0:
        return None
    clips = [[Image.fromarray(frame) for frame in given] for given in givens]
    # The condition's `video` goes through `VideoProcessor.preprocess_video`, which takes a
    # batch as a list of clips; each sample is then conditioned on its own (the dataclass's
    # annotation only names the one-clip form).
    return [LTXVideoCondition(video=clips, frame_index=0, strength=1.0)]  # type: ignore[arg-type]


def check_shape(request: ResolvedRequest, size: int, frames: int, family: str) -> None:
    """Sizes in multiples of the VAE's `size`, windows and overlaps of `frames`k+1 frames
    (the VAE encodes the given frames as one clip), for the LTX family `family`."""
    for param, value in (("width", request.width), ("height", request.height)):
        if value % size:
            raise InvalidRequest(
                f"{param} must be a multiple of {size} for {family}, got {value}", param=param
            )
    if (request.segment_frames - 1) % frames:
        raise InvalidRequest(
            f"segment_frames must be {frames}k+1 ({_examples(frames)}) for {family}, "
            f"got {request.segment_frames}",
            param="segment_frames",
        )
    if request.overlap_frames and (request.overlap_frames - 1) % frames:
        raise InvalidRequest(
            f"overlap_frames must be 0 or {frames}k+1 ({_examples(frames)}) for {family}: "
            f"its VAE encodes the overlap as one clip; got {request.overlap_frames}",
            param="overlap_frames",
        )
    given = request.first_given_frames
    if request.extend_video is not None and (given - 1) % frames:
        raise InvalidRequest(
            f"extend_video has {len(request.extend_video)} frames; {family} conditions on "
            f"its last overlap_frames ({request.overlap_frames}) frames, so give at least "
            f"that many (or {frames}k+1 frames in all)",
            param="extend_video",
        )


def _examples(multiple: int) -> str:
    return ", ".join(str(multiple * k + 1) for k in range(1, 4)) + ", ..."


def torch_device(device: str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r}: {exc}", param="device") from exc


def _read_index(path: Path) -> dict[str, Any]:
    """Check `path` is a diffusers LTX-Video directory; return its `model_index.json`."""
    return read_index(path, LTX_PIPELINES, COMPONENTS, "LTX-Video")


def read_index(
    path: Path, pipelines: tuple[str, ...], components: tuple[str, ...], family: str
) -> dict[str, Any]:
    """Check `path` is a diffusers directory of one of `pipelines` with every one of
    `components`; return its `model_index.json`. Errors are `ModelLoadError` naming
    `model_path`."""
    if not path.is_dir():
        raise ModelLoadError(
            f"model_path {str(path)!r} is not a directory; give a local {family} diffusers "
            "checkpoint directory",
            param="model_path",
        )
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(
            f"model_path {str(path)!r} has no model_index.json, so it is not a diffusers "
            "pipeline directory",
            param="model_path",
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {str(index_file)!r}: {exc}", param="model_path") from exc
    kind = index.get("_class_name") if isinstance(index, dict) else None
    if kind not in pipelines:
        raise ModelLoadError(
            f"model_path {str(path)!r} holds a {kind} pipeline, not {family} "
            f"(model_index.json _class_name must be one of {', '.join(pipelines)})",
            param="model_path",
        )
    missing = [name for name in components if not _listed(index.get(name))]
    if missing:
        raise ModelLoadError(
            f"{family} checkpoint {str(path)!r} lacks {', '.join(missing)}", param="model_path"
        )
    return index


def _listed(entry: object) -> bool:
    """Whether a `model_index.json` entry names a component (``[library, class]``)."""
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def _load_pipeline(path: Path, device: torch.device, dtype: torch.dtype) -> Any:
    """Load and check every component now, so a broken checkpoint never fails mid-job.

    Returns the `LTXConditionPipeline` (typed `Any`: diffusers registers its components at
    run time, so a type checker cannot see `pipe.vae` and the like).
    """
    _read_index(path)
    expected = {
        "transformer": LTXVideoTransformer3DModel,
        "vae": AutoencoderKLLTXVideo,
        "text_encoder": T5EncoderModel,
        "scheduler": FlowMatchEulerDiscreteScheduler,
    }
    pipe = load_checked(LTXConditionPipeline, path, dtype, expected, "LTX-Video")
    if pipe.scheduler.config.get("use_dynamic_shifting"):
        # LTXConditionPipeline passes its own sigma schedule and no `mu`, which a scheduler
        # with dynamic shifting refuses; the schedule it passes is the one it means to use.
        logger.info("%s: scheduler dynamic shifting off for LTXConditionPipeline", path)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            pipe.scheduler.config, use_dynamic_shifting=False
        )
    return to_device(pipe, device, dtype, "LTX-Video")


def load_checked(
    pipeline: Any, path: Path, dtype: torch.dtype, expected: Mapping[str, type], family: str
) -> Any:
    """`pipeline.from_pretrained(path)` from local files, each component in `expected` of
    its class; every failure is a `ModelLoadError` naming `model_path`."""
    try:
        pipe = pipeline.from_pretrained(path, local_files_only=True, dtype=dtype)
    except Exception as exc:  # diffusers/transformers/safetensors raise many kinds
        raise ModelLoadError(
            f"cannot load the {family} checkpoint at {str(path)!r}: {exc}", param="model_path"
        ) from exc
    for name, cls in expected.items():
        component = getattr(pipe, name, None)
        if not isinstance(component, cls):
            raise ModelLoadError(
                f"{family} checkpoint {str(path)!r}: {name} is "
                f"{type(component).__name__}, expected {cls.__name__}",
                param="model_path",
            )
    return pipe


def to_device(pipe: Any, device: torch.device, dtype: torch.dtype, family: str) -> Any:
    """`pipe` in `dtype` on `device`, without progress bars; a `ModelLoadError` naming
    `device` when it does not fit or the device does not exist."""
    try:
        if pipe.transformer.dtype != dtype:  # diffusers that predate `dtype=` load float32
            pipe.to(dtype=dtype)
        pipe.to(device)
    except (RuntimeError, AssertionError) as exc:  # no CUDA build, out of memory, bad index
        raise ModelLoadError(
            f"cannot move the {family} pipeline to {device}: {exc}", param="device"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe
