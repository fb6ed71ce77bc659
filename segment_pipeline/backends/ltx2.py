"""The LTX-2 backend: diffusers' `LTX2ConditionPipeline`, which makes video and its audio
together, one pipeline call per segment.

As with LTX-Video, segment k+1 is conditioned on the last `overlap_frames` frames of segment
k (an `LTX2VideoCondition` at latent index 0), a reference image (or the end of a video to
extend) conditions segment 0, and sizes follow the VAE's compression (frames of the form
`temporal`·k + 1, sides multiples of the spatial ratio); `check_inputs` names what is wrong.
Each window's audio (the vocoder's, at its own sample rate) comes back with its frames as a
`GeneratedWindow`; the segment loop cuts the new frames' span from it, and the job's AAC
track carries it. A request's own audio, when given, is the track instead (the pipeline does
not condition on audio: `/v1/models` says so).

Guidance: with `guidance_scale` <= 1 (distilled checkpoints) every guidance of the pipeline
is off (classifier-free, spatio-temporal and cross-modality), one model pass a step; above
1, `guidance_scale` drives video and audio and the pipeline's own defaults the rest.

Windows are not batched: the stock pipeline conditions every sample of a batch on the same
frames.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2ConditionPipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

from ..audio import AudioClip
from ..generator import GeneratedWindow, StepCallback
from ..request import GeneratorDefaults, Limits, ResolvedRequest
from .ltx_base import LTXFamilyGenerator, load_checked, step_end, to_uint8, window_noise

LTX2_PIPELINES = ("LTX2Pipeline", "LTX2ConditionPipeline", "LTX2ImageToVideoPipeline")
COMPONENTS = (
    "transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer",
    "scheduler",
)  # fmt: skip

LTX2_DEFAULTS = GeneratorDefaults(
    width=768,
    height=512,
    fps=24.0,
    seconds=4.0,
    num_inference_steps=8,
    guidance_scale=1.0,
    segment_frames=33,
    overlap_frames=9,
)
"""768x512 at 24 fps; 8 steps without guidance suit the distilled checkpoints. A 33-frame
segment overlapping 9 adds 24 frames (1 s) of video and audio per segment after the first."""


class LTX2Generator(LTXFamilyGenerator):
    """Generates video with its audio from an LTX-2 diffusers checkpoint on CPU or GPU."""

    backend = "ltx2"
    modes = frozenset({"t2v", "i2v", "extend", "audio"})
    family = "LTX-2"
    pipelines = LTX2_PIPELINES
    components = COMPONENTS
    native_defaults = LTX2_DEFAULTS
    unnamed = "ltx-2"
    produces_audio = True

    def __init__(
        self,
        model_path: str | Path,
        *,
        limits: Limits | None = None,
        device: str = "cpu",
        defaults: GeneratorDefaults | None = None,
    ) -> None:
        super().__init__(model_path, limits=limits, device=device, defaults=defaults)
        self.audio_rate = int(self.pipe.vocoder.config.output_sampling_rate)
        self.audio_channels = int(self.pipe.vocoder.config.out_channels)

    def _load_components(self, path: Path, dtype: torch.dtype) -> Any:
        expected = {
            "transformer": LTX2VideoTransformer3DModel,
            "vae": AutoencoderKLLTX2Video,
            "audio_vae": AutoencoderKLLTX2Audio,
            "scheduler": FlowMatchEulerDiscreteScheduler,
        }
        return load_checked(LTX2ConditionPipeline, path, dtype, expected, self.family)

    def _multiples(self) -> tuple[int, int]:
        size = math.lcm(2, self.pipe.vae_spatial_compression_ratio)
        return size, self.pipe.vae_temporal_compression_ratio

    def _max_sides(self) -> tuple[int | None, int | None]:
        # Its rotary positions are pixel coordinates over base_width x base_height: the
        # space it was made to address; past it they would be extrapolated.
        config = self.pipe.transformer.config
        return int(config.base_width), int(config.base_height)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(audio_sample_rate=self.audio_rate, audio_channels=self.audio_channels)
        return info

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> GeneratedWindow:
        # 1. Conditioning: the given frames as a clip at the first latent frame, or none
        conditions = [LTX2VideoCondition(frames=np.asarray(given), index=0)] if len(given) else None

        # 2. Guidance: off entirely at scale <= 1 (one pass a step), else the request's scale
        guided = request.guidance_scale > 1.0
        guidance: dict[str, float] = {
            "guidance_scale": request.guidance_scale if guided else 1.0,
            "audio_guidance_scale": request.guidance_scale if guided else 1.0,
        }
        if not guided:
            guidance.update(stg_scale=0.0, modality_scale=1.0, audio_stg_scale=0.0,
                            audio_modality_scale=1.0)  # fmt: skip

        # 3. Denoise and decode video and audio, with noise seeded per window
        output = self._call(
            request,
            step_end(on_step),
            conditions=conditions,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            generator=window_noise(request.seed, index),
            **guidance,
        )

        # 4. (1, T, H, W, 3) floats in [0, 1] to uint8 frames; (1, C, n) audio to a clip
        frames = to_uint8(output.frames[0])
        audio = output.audio[0]
        samples = audio.float().cpu().numpy() if isinstance(audio, torch.Tensor) else audio
        samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(self.audio_channels, -1),
                          -1.0, 1.0)  # fmt: skip
        return GeneratedWindow(frames, AudioClip(samples, self.audio_rate))
