"""The LTX-Video backend: diffusers' `LTXConditionPipeline`, one pipeline call per segment.

Segment k+1 is conditioned on the last `overlap_frames` frames of segment k, given to the
pipeline as an `LTXVideoCondition` video at frame 0; a reference image (or the end of a video
to extend) conditions segment 0 the same way; with no given frames a segment is plain
text-to-video. LTX-Video's VAE compresses 32x in space and 8x in time, with the first frame
encoded alone, so frame sizes are multiples of 32 (a size off them is rounded to the
nearest: 1280x720 is made as 1280x704) and frame counts of the form 8k+1 (9, 17, 25, 33,
...): both the segment and the conditioning overlap. `check_inputs` says so per parameter
before any work starts.

The checkpoint is a local diffusers directory (`model_index.json`, transformer, vae,
text_encoder, tokenizer, scheduler), loaded and checked as `ltx_base` does for the family.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Sequence
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

from ..generator import BatchStepCallback, WindowTask
from ..request import GeneratorDefaults
from .ltx_base import LTXFamilyGenerator, load_checked, step_end, to_uint8, window_noise

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


class LTXGenerator(LTXFamilyGenerator):
    """Generates with an LTX-Video diffusers checkpoint on CPU or GPU."""

    backend = "ltx"
    modes = frozenset({"t2v", "i2v", "extend"})
    family = "LTX-Video"
    pipelines = LTX_PIPELINES
    components = COMPONENTS
    native_defaults = LTX_DEFAULTS
    unnamed = "ltx-video"

    def _load_components(self, path: Path, dtype: torch.dtype) -> Any:
        expected = {
            "transformer": LTXVideoTransformer3DModel,
            "vae": AutoencoderKLLTXVideo,
            "text_encoder": T5EncoderModel,
            "scheduler": FlowMatchEulerDiscreteScheduler,
        }
        pipe = load_checked(LTXConditionPipeline, path, dtype, expected, self.family)
        if pipe.scheduler.config.get("use_dynamic_shifting"):
            # LTXConditionPipeline passes its own sigma schedule and no `mu`, which a scheduler
            # with dynamic shifting refuses; the schedule it passes is the one it means to use.
            logger.info("%s: scheduler dynamic shifting off for LTXConditionPipeline", path)
            pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
                pipe.scheduler.config, use_dynamic_shifting=False
            )
        return pipe

    def _multiples(self) -> tuple[int, int]:
        vae, transformer = self.pipe.vae, self.pipe.transformer
        spatial = vae.spatial_compression_ratio * transformer.config.patch_size
        size = math.lcm(32, spatial)  # the pipeline itself insists on 32
        return size, vae.temporal_compression_ratio * transformer.config.patch_size_t

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

    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> list[np.ndarray]:
        first = tasks[0].request

        # 1. Conditioning: each window's given frames as a clip at frame 0, or none
        conditions = _conditions([task.given for task in tasks])

        # 2. Per-step progress of every window of the batch
        def report(step: int, total_steps: int) -> None:
            for item in range(len(tasks)):
                on_step(item, step, total_steps)

        # 3. Denoise and decode, with noise seeded per window
        timestep_vae = bool(self.pipe.vae.config.timestep_conditioning)
        output = self._call(
            first,
            step_end(report),
            conditions=conditions,
            prompt=[task.request.prompt for task in tasks],
            negative_prompt=[task.request.negative_prompt for task in tasks],
            guidance_scale=first.guidance_scale,
            generator=[window_noise(task.request.seed, task.index) for task in tasks],
            decode_timestep=DECODE_TIMESTEP if timestep_vae else 0.0,
            decode_noise_scale=DECODE_NOISE_SCALE if timestep_vae else None,
        )

        # 4. (B, T, H, W, 3) floats in [0, 1] to (T, H, W, 3) uint8 a window
        return [to_uint8(video) for video in np.asarray(output.frames)]


def _conditions(givens: list[np.ndarray]) -> list[LTXVideoCondition] | None:
    """One condition at frame 0 holding each window's given clip (all of one length)."""
    if len(givens[0]) == 0:
        return None
    clips = [[Image.fromarray(frame) for frame in given] for given in givens]
    # The condition's `video` goes through `VideoProcessor.preprocess_video`, which takes a
    # batch as a list of clips; each sample is then conditioned on its own (the dataclass's
    # annotation only names the one-clip form).
    return [LTXVideoCondition(video=clips, frame_index=0, strength=1.0)]  # type: ignore[arg-type]
