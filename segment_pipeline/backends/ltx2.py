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

import logging
import math
import threading
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
from ..generator import GeneratedWindow, SegmentedGenerator, StepCallback
from ..request import GeneratorDefaults, Limits, ResolvedRequest
from .embedded import window_seed
from .ltx import check_shape, load_checked, read_index, to_device, torch_device

logger = logging.getLogger(__name__)

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


class LTX2Generator(SegmentedGenerator):
    """Generates video with its audio from an LTX-2 diffusers checkpoint on CPU or GPU."""

    produces_audio = True

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
        self.name = self.model_path.name or "ltx-2"
        self.defaults = defaults or LTX2_DEFAULTS
        self.size_multiple = math.lcm(2, self.pipe.vae_spatial_compression_ratio)
        self.frame_multiple = self.pipe.vae_temporal_compression_ratio
        self.audio_rate = int(self.pipe.vocoder.config.output_sampling_rate)
        self.audio_channels = int(self.pipe.vocoder.config.out_channels)
        # One pipeline object holds per-call state: one call at a time.
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            backend="ltx2",
            weights=Path(self.model_path).name,  # its directory, not where it lies on disk
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            audio_sample_rate=self.audio_rate,
            audio_channels=self.audio_channels,
        )
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        check_shape(request, self.size_multiple, self.frame_multiple, "LTX-2")

    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> GeneratedWindow:
        # 1. Conditioning: the given frames as a clip at the first latent frame, or none
        conditions = [LTX2VideoCondition(frames=np.asarray(given), index=0)] if len(given) else None

        # 2. Per-step progress; `on_step` raises GenerationCancelled, which stops the pipeline
        def on_step_end(
            pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            on_step(step + 1, pipe.num_timesteps)
            return tensors

        # 3. Guidance: off entirely at scale <= 1 (one pass a step), else the request's scale
        guided = request.guidance_scale > 1.0
        guidance: dict[str, float] = {
            "guidance_scale": request.guidance_scale if guided else 1.0,
            "audio_guidance_scale": request.guidance_scale if guided else 1.0,
        }
        if not guided:
            guidance.update(stg_scale=0.0, modality_scale=1.0, audio_stg_scale=0.0,
                            audio_modality_scale=1.0)  # fmt: skip

        # 4. Denoise and decode video and audio, with noise seeded per window
        generator = torch.Generator().manual_seed(window_seed(request.seed, index))
        with self._lock:
            output = self.pipe(
                conditions=conditions,
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                height=request.height,
                width=request.width,
                num_frames=request.segment_frames,
                frame_rate=request.fps,
                num_inference_steps=request.num_inference_steps,
                generator=generator,
                output_type="np",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=[],
                **guidance,
            )

        # 5. (1, T, H, W, 3) floats in [0, 1] to uint8 frames; (1, C, n) audio to a clip
        frames = (np.asarray(output.frames[0]) * 255.0).round().clip(0, 255).astype(np.uint8)
        audio = output.audio[0]
        samples = audio.float().cpu().numpy() if isinstance(audio, torch.Tensor) else audio
        samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(self.audio_channels, -1),
                          -1.0, 1.0)  # fmt: skip
        return GeneratedWindow(frames, AudioClip(samples, self.audio_rate))


def _load_pipeline(path: Path, device: torch.device, dtype: torch.dtype) -> Any:
    """Load and check every component now, so a broken checkpoint never fails mid-job."""
    read_index(path, LTX2_PIPELINES, COMPONENTS, "LTX-2")
    expected = {
        "transformer": LTX2VideoTransformer3DModel,
        "vae": AutoencoderKLLTX2Video,
        "audio_vae": AutoencoderKLLTX2Audio,
        "scheduler": FlowMatchEulerDiscreteScheduler,
    }
    pipe = load_checked(LTX2ConditionPipeline, path, dtype, expected, "LTX-2")
    return to_device(pipe, device, dtype, "LTX-2")
