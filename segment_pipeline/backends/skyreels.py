"""The SkyReels-V2 Diffusion Forcing backend: one diffusion-forcing window per segment.

SkyReels-V2 DF denoises each latent frame on its own timestep, so frames that are already
clean can sit in the window at timestep 0 and condition the rest. Its stock long-video
loop (`SkyReelsV2DiffusionForcingPipeline`, `overlap_history`) keeps the last frames of one
`base_num_frames` window as the clean prefix of the next, but decodes once at the end, so
this backend runs that loop itself, one window per segment, and decodes each at once:

- segment 0, prompt only: DF text-to-video (no prefix);
- segment 0 with `reference_image`: DF image-to-video, the image VAE-encoded as a one-frame
  clean prefix (as `SkyReelsV2DiffusionForcingImageToVideoPipeline` does);
- segment k+1, or segment 0 with `extend_video`: the DF video-to-video path
  (`SkyReelsV2DiffusionForcingVideoToVideoPipeline`): the given overlap frames VAE-encoded
  as the clean prefix, the frames after them generated.

Its long-video settings map onto segments: `base_num_frames` is `segment_frames`,
`overlap_history` is `overlap_frames`; `ar_step`, `causal_block_size` and
`addnoise_condition` are the generator's `DiffusionForcing` settings. `causal_block_size`
lives in the shared transformer's config (`num_frame_per_block`, which the stock pipeline
rewrites and leaves behind), so every window sets it again and it is part of the batch key.

The checkpoint is a local diffusers directory of one of the three DF pipelines (they share
their components), loaded and checked as `ltx_base` does for every diffusers family.
"""

from __future__ import annotations

import html
import math
import re
import threading
from collections.abc import Hashable, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2Transformer3DModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel

from ..errors import InvalidRequest, ModelLoadError
from ..generator import (
    BatchStepCallback,
    WindowTask,
)
from ..request import GeneratorDefaults, Limits, ResolvedRequest
from ..sizes import rope_side_cap
from .ltx_base import (
    DiffusersGenerator,
    check_shape,
    load_checked,
    read_index,
    to_device,
    to_uint8,
    window_noise,
)

FAMILY = "SkyReels-V2"

SKYREELS_PIPELINES = (
    "SkyReelsV2DiffusionForcingPipeline",
    "SkyReelsV2DiffusionForcingImageToVideoPipeline",
    "SkyReelsV2DiffusionForcingVideoToVideoPipeline",
)
"""`_class_name`s in `model_index.json` of the DF checkpoints (one set of components)."""

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")

SKYREELS_DEFAULTS = GeneratorDefaults(
    width=960,
    height=544,
    fps=24.0,
    seconds=4.0,
    num_inference_steps=30,
    guidance_scale=6.0,
    segment_frames=97,
    overlap_frames=17,
)
"""SkyReels-V2 DF 540P as published: 960x544 at 24 fps, `base_num_frames` 97 a window,
`overlap_history` 17, 30 steps with guidance 6. Each segment after the first adds 80 frames
(3.3 s). For the 720P checkpoint ask for 1280x720 and 121-frame segments."""

TEXT_TOKENS = 512  # the DF pipelines' `max_sequence_length`
TRAINED_FPS_EMBEDDING = 16.0  # the DF transformer embeds "16 fps" or "not 16 fps" only


@dataclass(frozen=True)
class DiffusionForcing:
    """SkyReels-V2's diffusion-forcing settings, as its pipelines name them.

    `ar_step` 0 denoises a window's frames in step (synchronous); > 0 lets each causal
    block of `causal_block_size` latent frames lag the one before by `ar_step` steps
    (asynchronous, more transformer calls a window; the model card pairs 5 with 5).
    `causal_block_size` None is the checkpoint's own `num_frame_per_block`.
    `addnoise_condition` (timestep units, 20 recommended, at most ~50) noises the clean
    prefix a little, which smooths long videos. Out-of-range settings are a
    `ModelLoadError` naming the setting (they are the generator's, fixed when it is built)."""

    ar_step: int = 0
    causal_block_size: int | None = None
    addnoise_condition: float = 20.0

    def __post_init__(self) -> None:
        if self.ar_step < 0:
            raise ModelLoadError(f"ar_step must be >= 0, got {self.ar_step}", param="ar_step")
        if self.causal_block_size is not None and self.causal_block_size < 1:
            raise ModelLoadError(
                f"causal_block_size must be >= 1, got {self.causal_block_size}",
                param="causal_block_size",
            )
        if not 0 <= self.addnoise_condition < 1000:
            raise ModelLoadError(
                f"addnoise_condition must be in [0, 1000), got {self.addnoise_condition}",
                param="addnoise_condition",
            )


@dataclass(frozen=True)
class SkyReelsBatchKey:
    """What windows must share to be denoised together: one schedule, one shape, one
    frame-rate embedding for the batch (the transformer tiles it across items)."""

    width: int
    height: int
    segment_frames: int
    fps: float
    num_inference_steps: int
    guidance_scale: float
    given_frames: int
    ar_step: int
    causal_block_size: int
    addnoise_condition: float


class SkyReelsGenerator(DiffusersGenerator):
    """Generates with a SkyReels-V2 Diffusion Forcing diffusers checkpoint on CPU or GPU."""

    backend: ClassVar[str] = "skyreels"
    modes = frozenset({"t2v", "i2v", "extend"})
    # No `video`-to-video with `strength`: diffusers' DF "VideoToVideo" extends a clip.

    def __init__(
        self,
        model_path: str | Path,
        *,
        limits: Limits | None = None,
        device: str = "cpu",
        defaults: GeneratorDefaults | None = None,
        forcing: DiffusionForcing | None = None,
        offload: str = "none",
    ) -> None:
        super().__init__(model_path, limits=limits, device=device)
        # Load and check every component now, so a broken checkpoint never fails mid-job.
        read_index(self.model_path, SKYREELS_PIPELINES, COMPONENTS, FAMILY)
        expected = {
            "transformer": SkyReelsV2Transformer3DModel,
            "vae": AutoencoderKLWan,
            "text_encoder": PreTrainedModel,  # T5 or UMT5 encoder
            "scheduler": SchedulerMixin,
        }
        pipe = load_checked(
            SkyReelsV2DiffusionForcingPipeline, self.model_path, self.dtype, expected, FAMILY
        )
        # Typed `Any`: diffusers registers components at run time (`pipe.vae` and the like).
        self.pipe: Any = to_device(pipe, self.device, self.dtype, FAMILY, offload)
        self.name = self.model_path.name or "skyreels-v2-df"
        self.defaults = defaults or SKYREELS_DEFAULTS
        chosen = forcing or DiffusionForcing()
        block = chosen.causal_block_size or int(self.pipe.transformer.config.num_frame_per_block)
        self.forcing = DiffusionForcing(chosen.ar_step, block, chosen.addnoise_condition)
        self.frame_multiple = int(self.pipe.vae_scale_factor_temporal)
        _, patch_h, patch_w = self.pipe.transformer.config.patch_size
        spatial = int(self.pipe.vae_scale_factor_spatial) * max(patch_h, patch_w)
        self.size_multiple = math.lcm(16, spatial)  # the DF pipelines insist on 16
        # The rotary tables hold this many positions an axis (latent frames, patch rows, columns).
        self.rope_max_seq_len = int(self.pipe.transformer.config.rope_max_seq_len)
        self.max_width = self.max_height = rope_side_cap(self.rope_max_seq_len, spatial)
        # diffusers' transformer adds its frame-rate embedding (`inject_sample_info`, set in
        # the published DF checkpoints) in a shape that only fits a batch of one window.
        self.batches = not self.pipe.transformer.config.inject_sample_info
        # One transformer config and scheduler hold per-call state: one window loop at a time.
        self._lock = threading.Lock()

    @property
    def causal_block_size(self) -> int:
        return int(self.forcing.causal_block_size or 1)

    # 1. Inputs ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            backend=self.backend,
            weights=self.model_path.name,  # its directory, not where it lies on disk
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            batching=self.batches,
            size_multiple=self.size_multiple,
            frame_multiple=self.frame_multiple,
            max_latent_positions=self.rope_max_seq_len,
            diffusion_forcing=asdict(self.forcing),
        )
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        """Sizes in multiples of `size_multiple`, 4k+1-frame windows and overlaps (Wan's VAE
        encodes the given frames as one clip), windows of whole causal blocks, and no axis
        longer than the transformer's rotary tables."""
        check_shape(request, self.frame_multiple, FAMILY)
        latent_frames = self._latent_frames(request.segment_frames)
        block = self.causal_block_size
        if latent_frames % block:
            raise InvalidRequest(
                f"segment_frames {request.segment_frames} is {latent_frames} latent frames; "
                f"{FAMILY} with causal_block_size {block} needs a multiple of {block} "
                f"(segment_frames = {self.frame_multiple}*{block}*k - {self.frame_multiple - 1})",
                param="segment_frames",
            )
        patch = self.size_multiple
        for param, positions, unit in (
            ("segment_frames", latent_frames, "latent frames"),
            ("height", request.height // patch, f"rows of {patch} pixels"),
            ("width", request.width // patch, f"columns of {patch} pixels"),
        ):
            if positions > self.rope_max_seq_len:
                raise InvalidRequest(
                    f"{param} is {positions} {unit}; this {FAMILY} checkpoint's transformer "
                    f"holds at most {self.rope_max_seq_len}",
                    param=param,
                )

    # 2. Windows --------------------------------------------------------------------------
    def batch_key(self, task: WindowTask) -> Hashable | None:
        """Windows batch when they share the schedule and shape: size, length, frame rate,
        steps, guidance, the number of given frames and the diffusion-forcing settings;
        never with a frame-rate embedding (see `batches`)."""
        if not self.batches:
            return None
        request = task.request
        return SkyReelsBatchKey(
            width=request.width,
            height=request.height,
            segment_frames=request.segment_frames,
            fps=request.fps,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            given_frames=len(task.given),
            ar_step=self.forcing.ar_step,
            causal_block_size=self.causal_block_size,
            addnoise_condition=self.forcing.addnoise_condition,
        )

    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> list[np.ndarray]:
        if len(tasks) > 1 and not self.batches:
            return [np.asarray(made) for made in super().generate_windows(tasks, on_step)]
        with self._lock, torch.no_grad():
            return self._denoise(tasks, on_step)

    def _denoise(self, tasks: Sequence[WindowTask], on_step: BatchStepCallback) -> list[np.ndarray]:
        first = tasks[0].request
        pipe, transformer = self.pipe, self.pipe.transformer
        forcing, block = self.forcing, self.causal_block_size
        guided = first.guidance_scale > 1.0

        # 1. Text: each window's prompt (and negative prompt under guidance)
        prompt_embeds = self._encode_text([task.request.prompt for task in tasks])
        negative_embeds = (
            self._encode_text([task.request.negative_prompt for task in tasks]) if guided else None
        )
        fps_flag = 0 if first.fps == TRAINED_FPS_EMBEDDING else 1
        fps = [fps_flag] * len(tasks) if transformer.config.inject_sample_info else None

        # 2. Noise seeded per window; the given frames as clean prefix latents
        generators = [window_noise(task.request.seed, task.index) for task in tasks]
        latent_frames = self._latent_frames(first.segment_frames)
        patch = pipe.vae_scale_factor_spatial
        shape = (
            len(tasks),
            transformer.config.in_channels,
            latent_frames,
            first.height // patch,
            first.width // patch,
        )
        latents = randn_tensor(shape, generator=generators, device=self.device, dtype=torch.float32)
        given_frames = len(tasks[0].given)
        prefix = self._latent_frames(given_frames) if given_frames else 0
        if prefix:
            latents[:, :, :prefix] = self._encode_frames([task.given for task in tasks])

        # 3. The diffusion-forcing schedule: a timestep per latent frame per step
        transformer._set_ar_attention(block)  # the shared config: set again for every window
        pipe.scheduler.set_timesteps(first.num_inference_steps, device=self.device)
        timesteps = pipe.scheduler.timesteps
        # Each latent frame walks the schedule on its own, so each has its own solver state.
        frame_schedulers = [deepcopy(pipe.scheduler) for _ in range(latent_frames)]
        # The window is the model's whole span (`base_num_frames` = `segment_frames`), so
        # every step sees every frame and `ar_step` needs no minimum.
        step_matrix, _, update_mask, _ = pipe.generate_timestep_matrix(
            latent_frames, timesteps, latent_frames, forcing.ar_step, prefix, block
        )
        # Prefix frames stay clean even where a causal block holds some: never updated and
        # always at timestep 0 (as the I2V pipeline holds its last image).
        step_matrix[:, :prefix] = 0
        update_mask[:, :prefix] = False

        # 4. Denoise, reporting every step of every window of the batch
        total_steps = len(step_matrix)
        for i, timestep_row in enumerate(step_matrix):
            model_input = latents.to(
                transformer.dtype, copy=True
            )  # the prefix noise is for its input only
            timestep = timestep_row.expand(len(tasks), -1).clone()
            if forcing.addnoise_condition > 0 and prefix:
                noise_factor = 0.001 * forcing.addnoise_condition
                prefix_noise = randn_tensor(
                    model_input[:, :, :prefix].shape,
                    generator=generators,
                    device=self.device,
                    dtype=model_input.dtype,
                )
                model_input[:, :, :prefix] = (
                    model_input[:, :, :prefix] * (1.0 - noise_factor) + prefix_noise * noise_factor
                )
                timestep[:, :prefix] = forcing.addnoise_condition
            noise_pred = self._predict(model_input, timestep, prompt_embeds, fps)
            if negative_embeds is not None:
                uncond = self._predict(model_input, timestep, negative_embeds, fps)
                noise_pred = uncond + first.guidance_scale * (noise_pred - uncond)
            for frame in range(latent_frames):
                if update_mask[i, frame]:
                    latents[:, :, frame] = frame_schedulers[frame].step(
                        noise_pred[:, :, frame],
                        timestep_row[frame],
                        latents[:, :, frame],
                        return_dict=False,
                    )[0]
            for item in range(len(tasks)):
                on_step(item, i + 1, total_steps)

        # 5. Decode every window at once: (B, T, H, W, 3) floats in [0, 1] to uint8
        return [to_uint8(video) for video in self._decode(latents)]

    # 3. The components ---------------------------------------------------------------------
    def _latent_frames(self, frames: int) -> int:
        """Latent frames Wan's VAE makes of `frames` (4k+1) frames: the first alone."""
        return (frames - 1) // self.frame_multiple + 1

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        """The text encoder's states of `prompts`, zero past each prompt's tokens (as the
        DF pipelines feed the transformer), padded to `TEXT_TOKENS`."""
        tokens = self.pipe.tokenizer(
            [_clean_prompt(prompt) for prompt in prompts],
            padding="max_length",
            max_length=TEXT_TOKENS,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)
        states = self.pipe.text_encoder(tokens.input_ids.to(self.device), mask).last_hidden_state
        return (states * mask[..., None].to(states.dtype)).to(self.pipe.transformer.dtype)

    def _predict(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        fps: list[int] | None,
    ) -> torch.Tensor:
        return self.pipe.transformer(
            hidden_states=latents,
            timestep=timestep,
            encoder_hidden_states=text,
            enable_diffusion_forcing=True,
            fps=fps,
            return_dict=False,
        )[0].float()

    def _latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's per-channel latent mean and std, shaped to broadcast over (B, C, T, H, W)."""
        config = self.pipe.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1)
        std = torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1)
        return mean.to(self.device), std.to(self.device)

    def _encode_frames(self, clips: list[np.ndarray]) -> torch.Tensor:
        """(B, C, latent frames, h, w) normalised latents of B (G, H, W, 3) uint8 clips, the
        distribution's mode, as the DF I2V and V2V pipelines encode their conditions."""
        vae = self.pipe.vae
        pixels = torch.from_numpy(np.stack(clips)).to(self.device).permute(0, 4, 1, 2, 3)
        video = (pixels.float() / 127.5 - 1.0).to(vae.dtype)  # [-1, 1], (B, 3, G, H, W)
        latents = vae.encode(video).latent_dist.mode().float()
        mean, std = self._latent_stats()
        return (latents - mean) / std

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        vae = self.pipe.vae
        mean, std = self._latent_stats()
        video = vae.decode((latents * std + mean).to(vae.dtype), return_dict=False)[0]
        return np.asarray(self.pipe.video_processor.postprocess_video(video, output_type="np"))


def _clean_prompt(prompt: str) -> str:
    """The DF pipelines' prompt cleaning: HTML entities undone, whitespace collapsed. (They
    also run `ftfy`, which repairs mis-decoded text; prompts arrive here as decoded JSON.)"""
    text = html.unescape(html.unescape(prompt)).strip()
    return re.sub(r"\s+", " ", text).strip()
