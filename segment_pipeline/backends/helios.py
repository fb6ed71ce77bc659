"""The Helios backend: Helios (`HeliosPipeline`, one-stage `HeliosScheduler`) and
Helios-Distilled (`HeliosPyramidPipeline` with `HeliosDMDScheduler`), one chunk per segment.

Helios is autoregressive: each chunk of `num_latent_frames_per_chunk` latent frames is
denoised while attending to a multi-term memory of the latents made before it (16 long, 2 mid
and 1 short latent frames) and to a prefix latent (the first frame). The stock pipelines run
that loop over a whole video and decode at each chunk; here the loop is the stream's: each
segment is one pipeline call of one chunk, given the stream's history as `video_latents` and
its prefix as `image_latents`, and the chunk that comes back joins the history kept in the
stream's `StreamState` (with the prompts, encoded once a stream). Nothing is re-encoded
between segments and no frames overlap: segments follow each other like the stock chunks.

Sizes: Wan's VAE compresses 8x in space and 4x in time, the transformer patches 2x2, and a
pyramid of n stages halves the latents n-1 times, so frame sides are multiples of 16 (Helios)
or 16 * 2**(n-1) (Helios-Distilled, 64 for its 3 stages); a segment is one chunk of 4k+1
frames (33 = 9 latent frames, the published chunk). A reference image is the first frame
(Helios's image-to-video: its latent is the prefix, a clip of it the last history frame);
a video to extend fills the history with its last chunks, its first frame the prefix.
"""

from __future__ import annotations

import html
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    HeliosDMDScheduler,
    HeliosPipeline,
    HeliosPyramidPipeline,
    HeliosScheduler,
    HeliosTransformer3DModel,
)
from PIL import Image
from transformers import UMT5EncoderModel

from ..errors import InvalidRequest
from ..generator import BatchStepCallback, StepCallback, WindowTask
from ..request import GeneratorDefaults, Limits, ResolvedRequest
from .embedded import window_seed
from .ltx_base import LTXFamilyGenerator, load_checked, read_index, to_uint8, window_noise

logger = logging.getLogger(__name__)

HELIOS_PIPELINES = ("HeliosPipeline", "HeliosPyramidPipeline")
"""`_class_name`s of `model_index.json` this backend runs (the second is Helios-Distilled's)."""

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")

HISTORY_SIZES = (16, 2, 1)
"""Latent frames of Helios's long, mid and short memory (the pipelines' default)."""

TEXT_TOKENS = 512  # the pipelines' `max_sequence_length`: prompts are padded to it

# The noise Helios adds to clean conditioning latents (an image, a video), as its pipelines do.
CONDITION_SIGMA = (0.111, 0.135)
CONDITION_WINDOW = 2**32  # seeds that noise as a window index no stream reaches

HELIOS_DEFAULTS = GeneratorDefaults(
    width=640,
    height=384,
    fps=24.0,
    seconds=4.0,
    num_inference_steps=50,
    guidance_scale=5.0,
    segment_frames=33,
    overlap_frames=0,
)
"""Helios's published 640x384 at 24 fps, 50 steps with guidance 5; 33-frame chunks (1.4 s)."""

DISTILLED_DEFAULTS = replace(HELIOS_DEFAULTS, num_inference_steps=6, guidance_scale=1.0)
"""Helios-Distilled: 2 steps in each of its 3 pyramid stages, no guidance."""


@dataclass(frozen=True)
class HeliosHistory:
    """What one stream keeps between its chunks: the encoded prompts, the latent history
    (1, C, sum(HISTORY_SIZES), h, w) float32, normalised as the transformer sees it, and
    the prefix latent (1, C, 1, h, w), None until the first chunk gives it."""

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None
    history: torch.Tensor
    prefix: torch.Tensor | None

    def after(self, chunk: torch.Tensor) -> HeliosHistory:
        """The history once `chunk` (1, C, n, h, w) is made: it joins the memory (the oldest
        frames drop out) and, for a stream without one yet, its first latent is the prefix."""
        history = torch.cat([self.history, chunk.float()], dim=2)[:, :, -self.history.shape[2] :]
        prefix = chunk[:, :, :1].float() if self.prefix is None else self.prefix
        return replace(self, history=history, prefix=prefix)


class HeliosGenerator(LTXFamilyGenerator):
    """Generates with a Helios or Helios-Distilled diffusers checkpoint on CPU or GPU.

    It shares the LTX family's checkpoint checks and loading (`ltx_base`), not its calls:
    its windows run through `generate_windows`, which sees each stream's `StreamState`.
    """

    backend = "helios"
    family = "Helios"
    pipelines = HELIOS_PIPELINES
    components = COMPONENTS
    native_defaults = HELIOS_DEFAULTS
    unnamed = "helios"
    keeps_stream_state = True
    modes = frozenset({"t2v", "i2v", "extend"})

    def __init__(
        self,
        model_path: str | Path,
        *,
        limits: Limits | None = None,
        device: str = "cpu",
        defaults: GeneratorDefaults | None = None,
        offload: str = "none",
    ) -> None:
        index = read_index(Path(model_path), self.pipelines, self.components, self.family)
        self.pyramid = index.get("_class_name") == "HeliosPyramidPipeline"
        self.distilled = self.pyramid and bool(index.get("is_distilled"))
        self.variant = "Helios-Distilled" if self.distilled else "Helios"
        if self.distilled and defaults is None:
            defaults = DISTILLED_DEFAULTS
        super().__init__(
            model_path, limits=limits, device=device, defaults=defaults, offload=offload
        )
        self.stages = int(self.pipe.scheduler.config.stages) if self.pyramid else 1
        vae = self.pipe.vae
        self._latents_mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        self._latents_std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
        self._calls = threading.Lock()  # one pipeline call (and its scheduler) at a time

    def _load_components(self, path: Path, dtype: torch.dtype) -> Any:
        # Helios-Distilled steps with DMD; the pyramid of Helios-Base/Mid with the plain one.
        scheduler = HeliosDMDScheduler if self.distilled else HeliosScheduler
        expected = {
            "transformer": HeliosTransformer3DModel,
            "vae": AutoencoderKLWan,
            "text_encoder": UMT5EncoderModel,
            "scheduler": scheduler,
        }
        if self.pyramid:
            return load_checked(HeliosPyramidPipeline, path, dtype, expected, self.variant)
        pipe = load_checked(HeliosPipeline, path, dtype, expected, self.variant)
        if pipe.scheduler.config.stages != 1:
            # HeliosPipeline denoises in one stage; a multi-stage schedule fails inside it.
            logger.info("%s: HeliosScheduler set to one stage for HeliosPipeline", path)
            pipe.scheduler = HeliosScheduler.from_config(pipe.scheduler.config, stages=1)
        return pipe

    def _multiples(self) -> tuple[int, int]:
        vae, transformer = self.pipe.vae, self.pipe.transformer
        patch = max(transformer.config.patch_size[1:])
        # Each pyramid stage halves the latents; the memory's long patch is 4x the patch.
        stages = int(self.pipe.scheduler.config.stages) if self.pyramid else 1
        spatial = vae.config.scale_factor_spatial * patch * 2 ** (stages - 1)
        return math.lcm(16, spatial), int(vae.config.scale_factor_temporal)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            variant=self.variant,
            pyramid_stages=self.stages,
            size_multiple=self.size_multiple,
            batching=False,
            batching_note="each stream's chunk attends to its own latent history: one at a time",
            continuity="latent history kept per stream (16+2+1 latent frames), no overlap",
        )
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        # Sides were rounded to `size_multiple` by `resolve` (`size_rule`).
        frames = self.frame_multiple
        if request.segment_frames < frames + 1 or (request.segment_frames - 1) % frames:
            raise InvalidRequest(
                f"segment_frames must be {frames}k+1 (9, 17, 33, ...) for {self.variant}: a "
                f"segment is one chunk; got {request.segment_frames}",
                param="segment_frames",
            )
        if request.overlap_frames:
            raise InvalidRequest(
                f"overlap_frames must be 0 for {self.variant}: it continues each segment from "
                f"the stream's latent history, so no frames repeat; got {request.overlap_frames}",
                param="overlap_frames",
            )
        if request.num_inference_steps % self.stages:
            raise InvalidRequest(
                f"num_inference_steps must be a multiple of {self.stages} for {self.variant} "
                f"(the same steps in each of its {self.stages} pyramid stages), got "
                f"{request.num_inference_steps}",
                param="num_inference_steps",
            )
        video = request.extend_video
        if video is not None and len(video) < request.segment_frames:
            raise InvalidRequest(
                f"extend_video has {len(video)} frames; {self.variant} encodes it in chunks of "
                f"segment_frames ({request.segment_frames}), so give at least that many",
                param="extend_video",
            )

    # Windows ------------------------------------------------------------------------------
    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> list[np.ndarray]:
        return [self._window(task, item, on_step) for item, task in enumerate(tasks)]

    @torch.no_grad()
    def _window(self, task: WindowTask, item: int, on_step: BatchStepCallback) -> np.ndarray:
        request = task.request

        def report(step: int, total_steps: int) -> None:
            on_step(item, step, total_steps)

        with self._calls:
            # 1. The stream's history: kept from its last chunk, or made from its inputs
            kept = task.state.value
            history = kept if isinstance(kept, HeliosHistory) else self._start(request)
            # 2. Denoise one chunk on that history, with noise seeded per window
            chunk = self._denoise(request, history, window_noise(request.seed, task.index), report)
            # 3. The chunk joins the history before it is decoded (a cancel stops above)
            task.state.value = history.after(chunk)
            # 4. Decode the chunk alone, as the stock loop does
            return to_uint8(self._decode(chunk))

    def _start(self, request: ResolvedRequest) -> HeliosHistory:
        """A stream's first history: its prompts encoded, an empty memory, and what its
        reference image or video to extend puts in it (noised as Helios's pipelines do)."""
        guided = request.guidance_scale > 1.0
        shape = (1, self.pipe.transformer.config.in_channels, sum(HISTORY_SIZES))
        latent_size = (request.height // self._spatial, request.width // self._spatial)
        history = torch.zeros(*shape, *latent_size, device=self.device)
        state = HeliosHistory(
            prompt_embeds=self._encode_text(request.prompt),
            negative_embeds=self._encode_text(request.negative_prompt) if guided else None,
            history=history,
            prefix=None,
        )
        # The conditioning's own noise: seeded apart from every window's.
        noise = torch.Generator().manual_seed(window_seed(request.seed, CONDITION_WINDOW))
        chunk_latents = self._chunk_latents(request)
        if request.reference_image is not None:
            image = self.pipe.video_processor.preprocess(
                Image.fromarray(request.reference_image), height=request.height, width=request.width
            )
            prefix, clip = self.pipe.prepare_image_latents(
                image, *self._normalisers(), chunk_latents, torch.float32, self.device, noise
            )
            memory = torch.cat([history[:, :, :-1], _noised(clip, noise, 1)], dim=2)
            return replace(state, history=memory, prefix=_noised(prefix, noise, 1))
        if request.extend_video is not None:
            video = self.pipe.video_processor.preprocess_video(
                self._tail(request), height=request.height, width=request.width
            )
            first, latents = self.pipe.prepare_video_latents(
                video, *self._normalisers(), chunk_latents, torch.float32, self.device, noise
            )
            latents = _noised(latents, noise, latents.shape[2])
            memory = torch.cat([history, latents], dim=2)[:, :, -history.shape[2] :]
            return replace(state, history=memory, prefix=_noised(first, noise, 1))
        return state

    def _tail(self, request: ResolvedRequest) -> list[Image.Image]:
        """The video to extend as the stock encoder takes it: its first frame, then as many
        whole chunks from its end as the memory holds (older frames would drop out)."""
        video = request.extend_video
        assert video is not None
        chunks = max(1, min(sum(HISTORY_SIZES) // self._chunk_latents(request),
                            len(video) // request.segment_frames))  # fmt: skip
        tail = video[len(video) - chunks * request.segment_frames :]
        return [Image.fromarray(frame) for frame in (video[0], *tail)]

    def _denoise(
        self,
        request: ResolvedRequest,
        state: HeliosHistory,
        noise: torch.Generator,
        report: StepCallback,
    ) -> torch.Tensor:
        """One chunk (1, C, n, h, w) denoised on `state`: the stock pipeline called for one
        chunk's frames, the memory as its video latents and the prefix as its image latents
        (zeros before the first chunk, as it uses), both already noised."""
        chunk_latents = self._chunk_latents(request)
        prefix = (
            state.prefix if state.prefix is not None else torch.zeros_like(state.history[:, :, :1])
        )
        done = 0

        def on_step_end(
            pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            nonlocal done  # a pyramid restarts `step` at each stage: count them all
            done += 1
            report(done, request.num_inference_steps)
            return tensors

        if self.pyramid:
            per_stage = request.num_inference_steps // self.stages
            steps: dict[str, Any] = {"pyramid_num_inference_steps_list": [per_stage] * self.stages}
        else:
            steps = {"num_inference_steps": request.num_inference_steps}
        output = self.pipe(
            prompt_embeds=state.prompt_embeds,
            negative_prompt_embeds=state.negative_embeds,
            height=request.height,
            width=request.width,
            num_frames=request.segment_frames,
            guidance_scale=request.guidance_scale,
            generator=noise,
            output_type="latent",
            image_latents=prefix,
            video_latents=state.history,
            add_noise_to_image_latents=False,  # noised once, when the stream started
            add_noise_to_video_latents=False,  # made by the model, or noised at the start
            history_sizes=list(HISTORY_SIZES),
            num_latent_frames_per_chunk=chunk_latents,
            keep_first_frame=True,
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=[],
            **steps,
        )
        # The pipeline returns the memory it was given followed by the new chunk.
        return output.frames[:, :, -chunk_latents:]

    def _decode(self, chunk: torch.Tensor) -> np.ndarray:
        """(1, C, n, h, w) latents to (4(n-1)+1, H, W, 3) floats in [0, 1]."""
        vae = self.pipe.vae
        mean, inverse_std = self._normalisers()
        latents = chunk.to(vae.dtype) / inverse_std.to(vae.dtype) + mean.to(vae.dtype)
        video = vae.decode(latents, return_dict=False)[0]
        return np.asarray(self.pipe.video_processor.postprocess_video(video, output_type="np")[0])

    def _encode_text(self, text: str) -> torch.Tensor:
        """(1, TEXT_TOKENS, D) embeddings of `text`, zero past its tokens, as the pipelines
        encode a prompt. Once a stream. Cleaned of HTML escapes and runs of spaces; the
        pipelines' `ftfy` repair of mis-decoded text is not needed for JSON's unicode."""
        cleaned = " ".join(html.unescape(html.unescape(text)).split())
        tokens = self.pipe.tokenizer(
            [cleaned],
            padding="max_length",
            max_length=TEXT_TOKENS,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)
        encoded = self.pipe.text_encoder(tokens.input_ids.to(self.device), mask).last_hidden_state
        return (encoded * mask[..., None]).to(self.pipe.transformer.dtype)

    def _normalisers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents mean, 1 / latents std), in the pipelines' form and place."""
        dtype = self.pipe.vae.dtype
        return self._latents_mean.to(self.device, dtype), 1.0 / self._latents_std.to(
            self.device, dtype
        )

    def _chunk_latents(self, request: ResolvedRequest) -> int:
        return (request.segment_frames - 1) // self.frame_multiple + 1

    @property
    def _spatial(self) -> int:
        return int(self.pipe.vae.config.scale_factor_spatial)


def _noised(latents: torch.Tensor, noise: torch.Generator, frames: int) -> torch.Tensor:
    """Clean conditioning latents (`frames` latent frames) mixed with noise at a level drawn
    in CONDITION_SIGMA for each latent frame."""
    low, high = CONDITION_SIGMA
    levels = torch.rand(frames, generator=noise) * (high - low) + low
    sigma = levels.view(1, 1, frames, 1, 1).to(latents.device)
    fresh = torch.randn(latents.shape, generator=noise).to(latents.device)
    return sigma * fresh + (1 - sigma) * latents
