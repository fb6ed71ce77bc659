"""The embedded default backend: `TinyVideoDiffusion` run window by window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..embedded_model import DEFAULT_MODEL_DIR, TinyVideoDiffusion
from ..errors import InvalidRequest
from ..generator import SegmentedGenerator, StepCallback
from ..request import GeneratorDefaults, Limits, ResolvedRequest


def window_seed(seed: int, index: int) -> int:
    """The noise seed of window `index`: distinct per (seed, index), stable across runs."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class EmbeddedGenerator(SegmentedGenerator):
    """Generates with the shipped default model (or one saved by training) on CPU or GPU."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        limits: Limits | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(limits)
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_DIR
        self.model = TinyVideoDiffusion.load(self.model_path).to(device)
        self.device = torch.device(device)
        config = self.model.config
        self.name = config.name
        self.defaults = GeneratorDefaults(
            width=config.width,
            height=config.height,
            fps=config.fps,
            seconds=4.0,
            num_inference_steps=config.default_steps,
            guidance_scale=config.default_guidance,
            segment_frames=config.frames,
            overlap_frames=config.default_overlap,
        )

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(backend="embedded", model_path=str(self.model_path))
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        config = self.model.config
        # Area averaging, then a halving per UNet level below the first.
        step = config.downsample * 2 ** (len(config.block_out_channels) - 1)
        for param, value in (("width", request.width), ("height", request.height)):
            if value % step or value < step:
                raise InvalidRequest(
                    f"{param} must be a multiple of {step} for the embedded model "
                    f"(it was trained at {config.width}x{config.height}), got {value}",
                    param=param,
                )
        if request.segment_frames > config.frames:
            raise InvalidRequest(
                f"segment_frames can be at most {config.frames} for the embedded model, "
                f"got {request.segment_frames}",
                param="segment_frames",
            )

    @torch.inference_mode()
    def generate_window(
        self, request: ResolvedRequest, index: int, given: np.ndarray, on_step: StepCallback
    ) -> np.ndarray:
        model, config = self.model, self.model.config
        frames, height, width = config.frames, request.height, request.width

        # 1. Encode the prompt (and the negative prompt when guidance is on)
        guided = request.guidance_scale > 1.0
        prompts = [request.prompt] + ([request.negative_prompt] if guided else [])
        text = model.encode_prompts(prompts)

        # 2. Prepare the given frames (area-averaged, as the denoiser sees them) and their mask
        given_pixels = torch.zeros(1, frames, 3, height, width, device=self.device)
        given_mask = torch.zeros(1, frames, device=self.device)
        if len(given):
            pixels = torch.from_numpy(np.array(given, dtype=np.uint8)).to(self.device)
            given_pixels[0, : len(given)] = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
            given_mask[0, : len(given)] = 1.0
        given_low = model.to_low(given_pixels)

        # 3. Prepare the initial noise, seeded per window
        noise_gen = torch.Generator().manual_seed(window_seed(request.seed, index))
        sample = torch.randn(given_low.shape, generator=noise_gen).to(self.device)

        # 4. Denoise the low-resolution window
        # diffusers sets the scheduler's attributes from its config, which mypy cannot see.
        scheduler: Any = model.make_scheduler()
        scheduler.set_timesteps(request.num_inference_steps, device=self.device)
        total = len(scheduler.timesteps)
        for step, t in enumerate(scheduler.timesteps):
            batch = sample.expand(len(prompts), -1, -1, -1)
            x0 = model(
                batch,
                t.expand(len(prompts)),
                given_low.expand(len(prompts), -1, -1, -1),
                given_mask.expand(len(prompts), -1),
                text,
            )
            if guided:
                x0 = x0[1:] + request.guidance_scale * (x0[:1] - x0[1:])
            sample = scheduler.step(x0, t, sample).prev_sample
            on_step(step + 1, total)

        # 5. Decode the new frames to full size (the loop puts the given ones back itself)
        keep = request.segment_frames
        out = torch.zeros(keep, 3, height, width, device=self.device)
        if keep > len(given):
            low = sample[:, 3 * len(given) : 3 * keep]
            out[len(given) :] = model.decode(low)[0]
        out = ((out + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return out.cpu().numpy()
