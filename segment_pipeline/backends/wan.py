"""The Wan backend (Wan2.1, Wan2.2): its own denoising loop over a diffusers checkpoint's
components, so that each segment continues the one before.

No stock Wan pipeline conditions text-to-video or image-to-video weights on several frames,
so the loop here does what Wan2.2 TI2V does with its first frame, for every given frame:
the given frames (the previous segment's overlap, a reference image, the end of a video to
extend) are VAE-encoded and held clean as prefix latents at timestep 0, while the rest of
the window is denoised around them (the transformer takes a timestep per token). Because
Wan's VAE is causal (the first frame alone, then 4 frames a latent frame), the given frames
are `4k+1`, the window too, and the prefix's latents are those the whole window would have.

- Wan2.2 A14B (`transformer_2`, `boundary_ratio`): `transformer` denoises the high-noise
  steps (t >= boundary_ratio * num_train_timesteps), `transformer_2` the rest.
- Image-to-video weights (`WanImageToVideoPipeline`: the transformer takes a mask and the
  encoded first frame beside the latents, and CLIP image embeddings in Wan2.1) get the
  window's first given frame as their image, as the stock pipeline gives it; they need one,
  so they do no text-to-video and every window after the first needs an overlap.
- Video to video (`video`, `strength`), `WanVideoToVideoPipeline`'s method: each window's
  span of the video is encoded and noised to the schedule's `strength` point, and only the
  steps after it run. The overlap is held clean as above, so the seams still continue.

The checkpoint is a local diffusers directory, loaded and checked as `ltx_base` does.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from PIL import Image
from transformers import UMT5EncoderModel

from ..errors import InvalidRequest
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

WAN_PIPELINES = ("WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline")
"""`_class_name`s in `model_index.json` this backend runs (the last has WanPipeline's parts)."""

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")

WAN_DEFAULTS = GeneratorDefaults(
    width=832,
    height=480,
    fps=16.0,
    seconds=5.0,
    num_inference_steps=30,
    guidance_scale=5.0,
    segment_frames=33,
    overlap_frames=5,
)
"""Wan2.1's 832x480 at 16 fps, guidance 5 as published; 30 steps rather than its 50, for
streaming. A 33-frame window overlapping 5 adds 28 frames (1.75 s) a segment."""

WAN22_5B_DEFAULTS = GeneratorDefaults(
    width=1280,
    height=704,
    fps=24.0,
    seconds=5.0,
    num_inference_steps=30,
    guidance_scale=5.0,
    segment_frames=49,
    overlap_frames=5,
)
"""Wan2.2 TI2V-5B's own 1280x704 at 24 fps (its VAE compresses 16x: sizes of 32)."""

TEXT_TOKENS = 512  # the prompt length the published pipelines encode


@dataclass(frozen=True)
class WanBatchKey:
    """What windows must share to be denoised together: one schedule, one shape and the
    same number of held frames (the per-token timesteps are the same for every sample)."""

    width: int
    height: int
    segment_frames: int
    num_inference_steps: int
    guidance_scale: float
    given_frames: int
    strength: float | None  # a video's, else None


class WanGenerator(DiffusersGenerator):
    """Generates with a Wan2.1 or Wan2.2 diffusers checkpoint on CPU or GPU."""

    backend = "wan"
    family = "Wan"

    def __init__(
        self,
        model_path: str | Path,
        *,
        limits: Limits | None = None,
        device: str = "cpu",
        defaults: GeneratorDefaults | None = None,
        offload: str = "none",
    ) -> None:
        super().__init__(model_path, limits=limits, device=device)
        # Load and check every component now, so a broken checkpoint never fails mid-job.
        index = read_index(self.model_path, WAN_PIPELINES, COMPONENTS, self.family)
        image_pipeline = index["_class_name"] == "WanImageToVideoPipeline"
        pipeline = WanImageToVideoPipeline if image_pipeline else WanPipeline
        expected = {
            "transformer": WanTransformer3DModel,
            "vae": AutoencoderKLWan,
            "text_encoder": UMT5EncoderModel,
        }
        pipe = load_checked(pipeline, self.model_path, self.dtype, expected, self.family)
        # Typed `Any`: diffusers registers components at run time (`pipe.vae` and the like).
        self.pipe: Any = to_device(pipe, self.device, self.dtype, self.family, offload)
        self.name = self.model_path.name or "wan"
        vae, transformer = self.pipe.vae, self.pipe.transformer
        # Image-to-video weights take a mask and the encoded image beside the latents.
        self.image_condition = transformer.config.in_channels != vae.config.z_dim
        self.modes = (
            frozenset({"i2v", "extend"})
            if self.image_condition
            else frozenset({"t2v", "i2v", "v2v", "extend"})
        )
        self.patch = tuple(transformer.config.patch_size)  # (frames, height, width)
        self.size_multiple = vae.config.scale_factor_spatial * self.patch[1]
        # Past its rotary table's positions an axis the transformer fails: a 422 instead.
        self.max_width = self.max_height = rope_side_cap(
            int(transformer.config.rope_max_seq_len), self.size_multiple
        )
        self.frame_multiple = vae.config.scale_factor_temporal
        ratio = self.pipe.config.get("boundary_ratio")
        two_stage = ratio is not None and self.pipe.transformer_2 is not None
        train_steps = self.pipe.scheduler.config.num_train_timesteps
        self.boundary = ratio * train_steps if two_stage else None
        wan22_5b = vae.config.z_dim == 48  # the TI2V-5B's own VAE
        self.defaults = defaults or (WAN22_5B_DEFAULTS if wan22_5b else WAN_DEFAULTS)
        # One scheduler and one set of modules: one window batch at a time.
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            backend=self.backend,
            weights=self.model_path.name,  # its directory, not where it lies on disk
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            two_stage=self.boundary is not None,
            batching=True,
        )
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        check_shape(request, self.frame_multiple, self.family)
        if self.image_condition and request.overlap_frames == 0:
            raise InvalidRequest(
                f"overlap_frames must be at least 1 for {self.name!r}: its image-to-video "
                "weights start every window from a given frame",
                param="overlap_frames",
            )

    def batch_key(self, task: WindowTask) -> Hashable:
        request = task.request
        return WanBatchKey(
            width=request.width,
            height=request.height,
            segment_frames=request.segment_frames,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            given_frames=len(task.given),
            strength=request.strength if request.video is not None else None,
        )

    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> list[np.ndarray]:
        with self._lock, torch.no_grad():
            return self._denoise(tasks, on_step)

    def _denoise(self, tasks: Sequence[WindowTask], on_step: BatchStepCallback) -> list[np.ndarray]:
        first = tasks[0].request
        pipe, device = self.pipe, self.device
        guided = first.guidance_scale > 1.0

        # 1. Prompts
        positive, negative = pipe.encode_prompt(
            prompt=[task.request.prompt for task in tasks],
            negative_prompt=[task.request.negative_prompt for task in tasks],
            do_classifier_free_guidance=guided,
            max_sequence_length=TEXT_TOKENS,
            device=device,
        )

        # 2. Timesteps: the whole schedule, or the tail a video's strength leaves to re-make
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # no shared state
        scheduler.set_timesteps(first.num_inference_steps, device=device)
        skipped = 0
        if first.video is not None:
            steps = first.num_inference_steps
            skipped = steps - min(max(1, int(steps * first.strength)), steps)
        timesteps = scheduler.timesteps[skipped * scheduler.order :]
        scheduler.set_begin_index(skipped * scheduler.order)

        # 3. Latents: noise seeded per window (a video's span noised to the first timestep),
        #    the given frames encoded to be held clean
        shape = self._latent_shape(first)
        noise = torch.cat(
            [
                torch.randn(shape, generator=window_noise(task.request.seed, task.index))
                for task in tasks
            ]
        ).to(device, torch.float32)
        latents = noise
        if first.video is not None:
            source = self._encode(np.stack([_video_span(task) for task in tasks]))
            start = timesteps[:1].repeat(len(tasks))
            if hasattr(scheduler, "add_noise"):  # UniPC, as published
                latents = scheduler.add_noise(source, noise, start)
            else:  # flow-matching Euler
                latents = scheduler.scale_noise(source, start, noise)
        held = len(tasks[0].given)
        prefix = self._encode(np.stack([task.given for task in tasks])) if held else None
        image_inputs = self._image_inputs(tasks, shape) if self.image_condition else {}

        # 4. Denoise, the prefix back in place after every step
        dtype = pipe.transformer.dtype
        positive = positive.to(dtype)
        negative = negative.to(dtype) if negative is not None else None
        for step, t in enumerate(timesteps):
            latents = _hold(latents, prefix)
            model = pipe.transformer
            if self.boundary is not None and t < self.boundary:
                model = pipe.transformer_2  # Wan2.2's low-noise expert
            inputs = dict(
                hidden_states=self._model_input(latents, image_inputs).to(dtype),
                timestep=self._timesteps(t, latents, prefix),
                encoder_hidden_states_image=image_inputs.get("image_embeds"),
                return_dict=False,
            )
            prediction = model(encoder_hidden_states=positive, **inputs)[0]
            if negative is not None:
                unguided = model(encoder_hidden_states=negative, **inputs)[0]
                prediction = unguided + first.guidance_scale * (prediction - unguided)
            latents = scheduler.step(prediction.float(), t, latents, return_dict=False)[0]
            for item in range(len(tasks)):
                on_step(item, step + 1, len(timesteps))
        latents = _hold(latents, prefix)

        # 5. Decode to (T, H, W, 3) uint8 a window
        return [to_uint8(video) for video in self._decode(latents)]

    def _latent_shape(self, request: ResolvedRequest) -> tuple[int, ...]:
        vae = self.pipe.vae.config
        frames = (request.segment_frames - 1) // vae.scale_factor_temporal + 1
        spatial = vae.scale_factor_spatial
        return (1, vae.z_dim, frames, request.height // spatial, request.width // spatial)

    def _timesteps(
        self, t: torch.Tensor, latents: torch.Tensor, prefix: torch.Tensor | None
    ) -> torch.Tensor:
        """The transformer's timestep: `t` for every sample, or with a held prefix one per
        token, 0 on the prefix's tokens (Wan2.2 TI2V's per-token form)."""
        batch = latents.shape[0]
        if prefix is None:
            return t.expand(batch)
        mask = torch.ones(latents.shape[2:], device=latents.device)
        mask[: prefix.shape[2]] = 0
        per_token = (mask[:: self.patch[0], :: self.patch[1], :: self.patch[2]] * t).flatten()
        return per_token.unsqueeze(0).expand(batch, -1)

    def _model_input(self, latents: torch.Tensor, image_inputs: dict[str, Any]) -> torch.Tensor:
        condition = image_inputs.get("condition")
        return latents if condition is None else torch.cat([latents, condition], dim=1)

    def _image_inputs(self, tasks: Sequence[WindowTask], shape: tuple[int, ...]) -> dict[str, Any]:
        """What image-to-video weights take beside the latents: a mask on the first frame and
        the encoded clip of that frame followed by black (as `WanImageToVideoPipeline` makes
        them), and the frame's CLIP embeddings when the checkpoint has an image encoder."""
        request = tasks[0].request
        images = np.stack([task.given[0] for task in tasks])
        clips = np.zeros((len(tasks), request.segment_frames, *images.shape[1:]), np.uint8)
        clips[:, 0] = images
        video = _to_video(clips, self.device, self.pipe.vae.dtype)
        video[:, :, 1:] = 0  # the pipeline pads the image with zeros of [-1, 1] (mid grey)
        encoded = self._normalise(self.pipe.vae.encode(video).latent_dist.mode())
        temporal = self.pipe.vae.config.scale_factor_temporal
        mask = torch.zeros((len(tasks), temporal, *shape[2:]), device=self.device)
        mask[:, :, 0] = 1  # the first latent frame stands for the image's `temporal` copies
        inputs: dict[str, Any] = {"condition": torch.cat([mask, encoded], dim=1)}
        if self.pipe.image_encoder is not None:
            pictures = [Image.fromarray(image) for image in images]
            embeds = self.pipe.encode_image(pictures, self.device)
            inputs["image_embeds"] = embeds.to(self.pipe.transformer.dtype)
        return inputs

    def _encode(self, clips: np.ndarray) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 clips to normalised latents (B, C, F, h, w), float32."""
        video = _to_video(clips, self.device, self.pipe.vae.dtype)
        return self._normalise(self.pipe.vae.encode(video).latent_dist.mode())

    def _normalise(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats()
        return (latents.float() - mean) / std

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """Normalised latents to (B, T, H, W, 3) floats in [0, 1]."""
        mean, std = self._latent_stats()
        vae = self.pipe.vae
        video = vae.decode((latents * std + mean).to(vae.dtype), return_dict=False)[0]
        return np.asarray(self.pipe.video_processor.postprocess_video(video, output_type="np"))

    def _latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.pipe.vae.config
        view = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean, device=self.device).view(view)
        std = torch.tensor(config.latents_std, device=self.device).view(view)
        return mean, std


def _hold(latents: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
    """`latents` with the clean `prefix` in its first latent frames."""
    if prefix is None:
        return latents
    held = latents.clone()
    held[:, :, : prefix.shape[2]] = prefix
    return held


def _video_span(task: WindowTask) -> np.ndarray:
    """The frames of the request's video under the window (the last one repeated past the
    video's end: the last window's tail is trimmed away)."""
    request = task.request
    assert request.video is not None
    count = request.segment_frames
    start = max(0, task.start_frame)
    span = request.video[start : start + count]
    if len(span) < count:
        pad = np.repeat(request.video[-1:], count - len(span), axis=0)
        span = np.concatenate([span, pad])
    return span


def _to_video(clips: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 to the VAE's (B, 3, T, H, W) in [-1, 1]."""
    video = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
    return (video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0).to(dtype)
