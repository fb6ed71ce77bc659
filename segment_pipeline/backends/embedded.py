"""The embedded default backend: `TinyVideoDiffusion` run window by window."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..embedded_model import DEFAULT_MODEL_DIR, TinyVideoDiffusion
from ..errors import InvalidRequest
from ..generator import (
    BatchedGenerator,
    BatchStepCallback,
    WindowTask,
)
from ..request import GeneratorDefaults, Limits, ResolvedRequest


def window_seed(seed: int, index: int) -> int:
    """The noise seed of window `index`: distinct per (seed, index), stable across runs."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# Caps of the model's own, under the service's: one window of a larger request would hold a
# CPU worker for minutes (a window cannot be preempted, only cancelled between steps).
MAX_SCALE = 4  # frames up to 4x the trained size a side (512x512 for streamgen-tiny)
MAX_STEPS = 50


@dataclass(frozen=True)
class EmbeddedBatchKey:
    """What windows of the embedded model must share to be denoised in one forward pass."""

    width: int
    height: int
    segment_frames: int
    num_inference_steps: int
    guided: bool


class EmbeddedGenerator(BatchedGenerator):
    """Generates with the shipped default model (or one saved by training) on CPU or GPU."""

    modes = frozenset({"t2v", "i2v", "extend"})  # what /v1/models says it can do

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
        # Sizes: area averaging, then a halving per UNet level below the first.
        self.size_multiple = config.downsample * 2 ** (len(config.block_out_channels) - 1)
        self.max_width = MAX_SCALE * config.width
        self.max_height = MAX_SCALE * config.height

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(backend="embedded", weights=Path(self.model_path).name)
        return info

    def check_inputs(self, request: ResolvedRequest) -> None:
        config = self.model.config
        if request.num_inference_steps > MAX_STEPS:
            raise InvalidRequest(
                f"num_inference_steps can be at most {MAX_STEPS} for the embedded model "
                f"(it is trained for {config.default_steps}), got {request.num_inference_steps}",
                param="num_inference_steps",
            )
        if request.segment_frames > config.frames:
            raise InvalidRequest(
                f"segment_frames can be at most {config.frames} for the embedded model, "
                f"got {request.segment_frames}",
                param="segment_frames",
            )

    def batch_key(self, task: WindowTask) -> Hashable:
        """Windows of one size, length and step count, guided or not, share a forward pass
        (prompts, given frames, seeds and guidance scales may differ)."""
        request = task.request
        return EmbeddedBatchKey(
            width=request.width,
            height=request.height,
            segment_frames=request.segment_frames,
            num_inference_steps=request.num_inference_steps,
            guided=request.guidance_scale > 1.0,
        )

    @torch.inference_mode()
    def generate_windows(
        self, tasks: Sequence[WindowTask], on_step: BatchStepCallback
    ) -> list[np.ndarray]:
        model, config = self.model, self.model.config
        first = tasks[0].request
        frames, height, width = config.frames, first.height, first.width
        count = len(tasks)

        # 1. Encode the prompts: per window its prompt, then its negative prompt when guided
        guided = first.guidance_scale > 1.0
        rows = 2 if guided else 1
        prompts: list[str] = []
        for task in tasks:
            prompts += [task.request.prompt] + ([task.request.negative_prompt] if guided else [])
        text = model.encode_prompts(prompts)

        # 2. Prepare the given frames (area-averaged, as the denoiser sees them) and their masks
        given_pixels = torch.zeros(count, frames, 3, height, width, device=self.device)
        given_mask = torch.zeros(count, frames, device=self.device)
        for item, task in enumerate(tasks):
            if len(task.given):
                pixels = torch.from_numpy(np.array(task.given, dtype=np.uint8)).to(self.device)
                given_pixels[item, : len(task.given)] = (
                    pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
                )
                given_mask[item, : len(task.given)] = 1.0
        given_low = model.to_low(given_pixels)

        # 3. Prepare the initial noise, seeded per window (so a window does not depend on
        #    what it is batched with)
        noise = []
        for task in tasks:
            noise_gen = torch.Generator().manual_seed(window_seed(task.request.seed, task.index))
            noise.append(torch.randn(given_low.shape[1:], generator=noise_gen)[None])
        sample = torch.cat(noise).to(self.device)
        scales = torch.tensor(
            [task.request.guidance_scale for task in tasks], device=self.device
        ).view(count, 1, 1, 1)

        # 4. Denoise the low-resolution windows together
        # diffusers sets the scheduler's attributes from its config, which mypy cannot see.
        scheduler: Any = model.make_scheduler()
        scheduler.set_timesteps(first.num_inference_steps, device=self.device)
        total = len(scheduler.timesteps)
        for step, t in enumerate(scheduler.timesteps):
            x0 = model(
                sample.repeat_interleave(rows, dim=0),
                t.expand(count * rows),
                given_low.repeat_interleave(rows, dim=0),
                given_mask.repeat_interleave(rows, dim=0),
                text,
            )
            if guided:
                x0 = x0.view(count, rows, *x0.shape[1:])
                x0 = x0[:, 1] + scales * (x0[:, 0] - x0[:, 1])
            sample = scheduler.step(x0, t, sample).prev_sample
            for item in range(count):
                on_step(item, step + 1, total)

        # 5. Decode each window's new frames to full size (the loop puts the given ones back)
        segment_frames = first.segment_frames
        windows = []
        for item, task in enumerate(tasks):
            out = torch.zeros(segment_frames, 3, height, width, device=self.device)
            if segment_frames > len(task.given):
                low = sample[item : item + 1, 3 * len(task.given) : 3 * segment_frames]
                out[len(task.given) :] = model.decode(low)[0]
            out = ((out + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            windows.append(out.cpu().numpy())
        return windows
