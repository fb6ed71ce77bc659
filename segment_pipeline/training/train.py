"""Train the embedded default model on the procedural world (`training.world`).

    python -m segment_pipeline.training.train --out runs/tiny --steps 5000
        [--device cuda] [--resume]

Each example is one window of `config.frames` frames, fed exactly as
`backends.embedded.EmbeddedGenerator.generate_window` feeds it at inference: the noisy
low-resolution window, the given frames area-averaged the same way (zeros where not given)
and the given mask. The number of given frames is drawn per example:

- 0: a first segment (text only; the object starts in the third opposite its heading),
- 1: a reference image (frame 0 given, the object anywhere, heading as prompted),
- the overlap (default 4) or another short prefix: a later segment, taken from anywhere in
  the scene's bouncing motion; given frames get a little noise so long streams do not drift.

Prompts come from the training templates only; some are dropped to "" so classifier-free
guidance works. Every step's data and noise are drawn from (seed, step), so a run is
reproducible from its seed, and a resumed run draws what the uninterrupted run would have.

One step trains all three parts of the model, each on its own loss:

- the denoiser: the error of the predicted clean low-resolution window, weighted by 1 + SNR
  (as a v-loss weighs it) capped at `snr_cap` so nearly clean steps do not dominate, and
  weighted up on the object's pixels (the object is ~4% of the frame);
- the text encoder: that loss reaches it through the UNet, and its auxiliary heads also
  classify the prompt's shape, colour, background and direction (exact labels from the
  world), which makes the text vector informative within a few hundred steps;
- the frame decoder: full frames from their area-averaged versions (with a little noise, as
  the denoiser's output has), on `decoder_frames` frames of the batch.

The saved model is the EMA of the weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..embedded_model import (
    ModelConfig,
    TinyVideoDiffusion,
    initial_model,
    with_position_planes,
)
from ..embedded_vocabulary import ATTRIBUTES
from .world import BACKGROUND_RGB, SceneSpec, WorldConfig, make_clip, make_prompt, sample_spec

# Words no prompt of the world needs; sprinkled into training prompts (they read as <unk>)
# so that the model learns to ignore words it does not know.
_NOISE_WORDS = ("video", "nice", "simple", "shot", "clip", "scene", "cute", "little", "very")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run; stored with every checkpoint."""

    steps: int = 5000
    batch_size: int = 16
    learning_rate: float = 6e-4  # peak, per step
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1  # cosine decay ends at this fraction of the peak
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # per part (denoiser + text encoder, decoder)
    ema_decay: float = 0.998
    text_drop: float = 0.1  # fraction of prompts replaced by "" (for guidance)
    object_weight: float = 4.0  # extra loss weight on object pixels
    snr_cap: float = 5.0  # cap on the 1 + SNR weight of low-noise steps
    given_noise: float = 0.06  # max std of noise on given frames ([-1, 1] pixel units)
    attribute_weight: float = 0.1  # weight of the text encoder's auxiliary loss
    decoder_frames: int = 8  # frames per step the frame decoder trains on
    decoder_noise: float = 0.04  # max std of noise on the decoder's low-resolution input
    overlap: int = 4
    first_window_share: float = 0.3  # windows with nothing given (a stream's first)
    # Of those, the share whose timestep is drawn from [top_t_from, 999] (where a first
    # window's start and heading are decided), and the share at exactly 999.
    top_t_share: float = 0.0
    top_t_from: int = 900
    t999_share: float = 0.0
    # Extra loss weight on the `seam_frames` frames right after a later window's given
    # prefix (where a stream's seams are): the object must go on from the overlap.
    seam_weight: float = 0.0
    seam_frames: int = 2
    seed: int = 0


@dataclass(frozen=True)
class Batch:
    """Training tensors: frames (B, F, 3, H, W) in [-1, 1], object masks (B, F, H, W), given
    frame counts (B,), prompts, and the prompts' attribute labels (B, 4) in `ATTRIBUTES`
    order (-1 for a dropped prompt)."""

    frames: torch.Tensor
    objects: torch.Tensor
    given_counts: torch.Tensor
    prompts: list[str]
    labels: torch.Tensor


def attribute_labels(spec: SceneSpec) -> list[int]:
    """`spec` as class indices in `ATTRIBUTES` order."""
    return [names.index(getattr(spec, attribute)) for attribute, names in ATTRIBUTES.items()]


def draw_given_count(
    rng: np.random.Generator, frames: int, overlap: int, first_share: float = 0.3
) -> int:
    """How many frames are given to one training window (see the module docstring):
    none for `first_share` of windows, then one (20 %), the overlap (35 %), another short
    prefix (the rest)."""
    u = rng.random()
    if u < first_share:
        return 0
    if u < first_share + 0.2:
        return 1
    if u < first_share + 0.55:
        return min(overlap, frames - 1)
    return int(rng.integers(2, max(3, frames // 2 + 1)))


def _noisy_prompt(prompt: str, rng: np.random.Generator) -> str:
    words = prompt.split()
    if rng.random() < 0.2:
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_NOISE_WORDS)))
    return " ".join(words)


def make_batch(
    rng: np.random.Generator, size: int, model_config: ModelConfig, train: TrainConfig
) -> Batch:
    """One batch of windows from the world, with prompts from the training templates."""
    world = WorldConfig(model_config.width, model_config.height, model_config.fps)
    frames, objects, counts, prompts, labels = [], [], [], [], []
    period = max(1, round(2 * (world.width - world.object_size) / world.speed))
    for _ in range(size):
        spec = sample_spec(rng)
        given = draw_given_count(rng, model_config.frames, train.overlap, train.first_window_share)
        offset = int(rng.integers(0, period)) if given >= 2 else 0
        clip = make_clip(spec, rng, model_config.frames, world, offset=offset, anywhere=given == 1)
        frames.append(clip.frames)
        objects.append(np.any(clip.frames != BACKGROUND_RGB[spec.background], axis=-1))
        counts.append(given)
        prompt = make_prompt(spec, rng)
        dropped = rng.random() < train.text_drop
        prompts.append("" if dropped else _noisy_prompt(prompt, rng))
        labels.append([-1] * len(ATTRIBUTES) if dropped else attribute_labels(spec))
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    return Batch(
        frames=pixels,
        objects=torch.from_numpy(np.stack(objects)).float(),
        given_counts=torch.tensor(counts),
        prompts=prompts,
        labels=torch.tensor(labels),
    )


def learning_rate(step: int, train: TrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr_fraction` of the peak."""
    if step < train.warmup_steps:
        return train.learning_rate * (step + 1) / train.warmup_steps
    progress = min(1.0, (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps))
    floor = train.min_lr_fraction
    return train.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def training_loss(
    model: TinyVideoDiffusion,
    batch: Batch,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator,
    train: TrainConfig,
) -> dict[str, torch.Tensor]:
    """The three losses of one batch (scalars): "denoiser", "text" and "decoder"."""
    device = alphas_cumprod.device
    frames = batch.frames.to(device)
    b, f = frames.shape[:2]

    # 1. Low-resolution windows; given frames are a prefix of the window, slightly noised
    x0 = model.to_low(frames)
    given_mask = (torch.arange(f)[None] < batch.given_counts[:, None]).float().to(device)
    jitter = torch.rand(b, 1, 1, 1, generator=generator).to(device) * train.given_noise
    given = x0 + jitter * torch.randn(x0.shape, generator=generator).to(device)
    given = given.clamp(-1, 1) * given_mask.repeat_interleave(3, dim=1)[:, :, None, None]

    # 2. Noise the clean window at a random timestep
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator).to(device)
    if train.top_t_share > 0 or train.t999_share > 0:
        t = _first_window_timesteps(t, batch.given_counts.to(device), generator, train)
    a = alphas_cumprod[t].sqrt()[:, None, None, None]
    s = (1 - alphas_cumprod[t]).sqrt()[:, None, None, None]
    noisy = a * x0 + s * noise

    # 3. Predict the clean window; weight the error up on object pixels, and by 1 + SNR
    # capped at `snr_cap`
    text = model.encode_prompts(batch.prompts)
    x0_pred = model(noisy, t, given, given_mask, text)
    objects = batch.objects.to(device)[:, :, None].expand(-1, -1, 3, -1, -1).float()
    weight = 1.0 + train.object_weight * (model.to_low(objects) > 0).float()
    if train.seam_weight > 0:
        weight = weight * _seam_weights(batch.given_counts, f, train).to(device)
    snr_weight = (1 + (a / s.clamp(min=1e-4)) ** 2).clamp(max=train.snr_cap)
    denoiser = (snr_weight * weight * (x0_pred - x0) ** 2).sum() / weight.sum()

    # 4. The text encoder's auxiliary heads: the prompt's attributes
    logits = model.text_encoder.attributes(text)
    labels = batch.labels.to(device)
    text_loss = sum(
        nn.functional.cross_entropy(logits[name], labels[:, i], ignore_index=-1)
        for i, name in enumerate(ATTRIBUTES)
    ) if bool((labels >= 0).any()) else text.sum() * 0.0  # fmt: skip

    # 5. The frame decoder: full frames from noisy area averages
    picks = torch.randperm(b * f, generator=generator)[: train.decoder_frames].to(device)
    full = frames.reshape(b * f, *frames.shape[2:])[picks]
    low = model.to_low(full[:, None])
    low_noise = (
        torch.rand(len(picks), 1, 1, 1, generator=generator).to(device) * train.decoder_noise
    )
    low = low + low_noise * torch.randn(low.shape, generator=generator).to(device)
    full_objects = batch.objects.to(device).reshape(b * f, 1, *frames.shape[-2:])[picks]
    decoder_weight = 1.0 + train.object_weight * full_objects.float()
    decoded = model.decoder(low.clamp(-1, 1))
    decoder = (decoder_weight * (decoded - full) ** 2).mean() / decoder_weight.mean()
    return {"denoiser": denoiser, "text": torch.as_tensor(text_loss), "decoder": decoder}


def _seam_weights(given_counts: torch.Tensor, frames: int, train: TrainConfig) -> torch.Tensor:
    """(B, F*3, 1, 1) loss weights: 1 + `seam_weight` on the `seam_frames` frames after a
    given prefix of two frames or more (a later segment's seam), 1 elsewhere."""
    index = torch.arange(frames)[None]
    counts = given_counts[:, None]
    seam = (counts >= 2) & (index >= counts) & (index < counts + train.seam_frames)
    per_frame = 1.0 + train.seam_weight * seam.float()
    return per_frame.repeat_interleave(3, dim=1)[:, :, None, None]


def _first_window_timesteps(
    t: torch.Tensor, given_counts: torch.Tensor, generator: torch.Generator, train: TrainConfig
) -> torch.Tensor:
    """`t` with first windows' timesteps moved to the top of the schedule for the shares
    `top_t_share` (into [top_t_from, 999]) and `t999_share` (to 999)."""
    last = 999
    u = torch.rand(len(t), generator=generator).to(t.device)
    top = torch.randint(train.top_t_from, last + 1, (len(t),), generator=generator).to(t.device)
    first = given_counts == 0
    t = torch.where(first & (u < train.top_t_share), top, t)
    return torch.where(first & (u >= 1 - train.t999_share), torch.full_like(t, last), t)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


class Trainer:
    """Owns the model, its EMA, the optimizer and the checkpoint directory."""

    def __init__(
        self,
        out: Path,
        train: TrainConfig,
        model_config: ModelConfig | None = None,
        device: str = "cpu",
        *,
        init_from: Path | None = None,
        position_planes: bool = False,
    ) -> None:
        """`init_from`: start from a saved model's weights (fine-tuning) instead of fresh
        ones; `position_planes`: give the model the position planes (new, zero weights)."""
        self.out, self.train_config, self.device = out, train, torch.device(device)
        if init_from is not None:
            model = TinyVideoDiffusion.load(init_from)
        else:
            model = initial_model(model_config, seed=train.seed)
        if position_planes:
            model = with_position_planes(model)
        self.model = model.to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        # The decoder shares no weights with the rest: each part's gradient is clipped alone.
        decoder = list(self.model.decoder.parameters())
        rest = [p for p in self.model.parameters() if all(p is not q for q in decoder)]
        self.clip_parts = (rest, decoder)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
        )
        scheduler: Any = self.model.make_scheduler()  # diffusers config attributes are untyped
        self.alphas = scheduler.alphas_cumprod.to(self.device)
        self.step, self.seconds = 0, 0.0
        self.losses: list[tuple[int, float]] = []  # (step, denoiser loss)
        self.last_parts: dict[str, float] = {}

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def resume(self) -> bool:
        """Load the checkpoint in `out` if there is one; True if resumed."""
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.seconds, self.losses = state["step"], state["seconds"], state["losses"]
        return True

    def train_step(self) -> float:
        """One optimizer step on batch number `self.step`; returns its loss."""
        train = self.train_config
        rng = np.random.default_rng([train.seed, self.step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        batch = make_batch(rng, train.batch_size, self.model.config, train)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, train)
        losses = training_loss(self.model, batch, self.alphas, generator, train)
        loss = losses["denoiser"] + train.attribute_weight * losses["text"] + losses["decoder"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for part in self.clip_parts:
            torch.nn.utils.clip_grad_norm_(part, train.grad_clip)
        self.optimizer.step()
        decay = min(train.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        self.step += 1
        self.last_parts = {k: round(float(v.detach()), 5) for k, v in losses.items()}
        return float(losses["denoiser"].detach())

    def metadata(self) -> dict[str, Any]:
        recent = [loss for _, loss in self.losses[-100:]]
        return {
            "steps": self.step,
            "train_seconds": round(self.seconds, 1),
            "hardware": _hardware(self.device),
            "final_loss": round(float(np.mean(recent)), 5) if recent else None,
            "train_config": asdict(self.train_config),
            "torch": torch.__version__,
        }

    def save(self) -> None:
        """Write the checkpoint (resumable) and the EMA model (`out/model`, float16)."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "seconds": self.seconds,
            "losses": self.losses,
            "train_config": asdict(self.train_config),
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)
        meta = self.metadata()
        self.ema.save(self.out / "model", metadata={"training": json.dumps(meta)})
        (self.out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
        (self.out / "losses.json").write_text(json.dumps(self.losses) + "\n")

    def run(
        self, *, checkpoint_every: int = 100, log_every: int = 10, max_seconds: float = 0
    ) -> None:
        """Train until `steps` (or `max_seconds` of training time, if > 0), checkpointing."""
        started_at = time.perf_counter() - self.seconds
        while self.step < self.train_config.steps:
            loss = self.train_step()
            self.seconds = time.perf_counter() - started_at
            self.losses.append((self.step, round(loss, 5)))
            if self.step % log_every == 0:
                recent = np.mean([v for _, v in self.losses[-log_every:]])
                lr = learning_rate(self.step, self.train_config)
                print(
                    f"step {self.step} loss {recent:.4f} {self.last_parts} lr {lr:.2e}"
                    f" {self.seconds:.0f}s ({self.seconds / max(1, self.step):.2f} s/step)",
                    flush=True,
                )
            if self.step % checkpoint_every == 0:
                self.save()
            if max_seconds and self.seconds >= max_seconds:
                print(f"stopping at the time limit ({max_seconds:.0f} s)", flush=True)
                break
        self.save()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint/output directory")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--warmup", type=int, default=TrainConfig.warmup_steps)
    parser.add_argument("--ema", type=float, default=TrainConfig.ema_decay)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps")
    parser.add_argument("--max-minutes", type=float, default=0, help="stop after (0: never)")
    parser.add_argument("--resume", action="store_true", help="continue from out/checkpoint.pt")
    parser.add_argument(
        "--model-config", type=Path, help="config.json to build the model from (default: shipped)"
    )
    parser.add_argument("--init-from", type=Path, help="a model directory to fine-tune")
    parser.add_argument(
        "--position-planes", action="store_true", help="give the model x/y input planes"
    )
    parser.add_argument("--first-window-share", type=float, default=TrainConfig.first_window_share)
    parser.add_argument("--top-t-share", type=float, default=TrainConfig.top_t_share)
    parser.add_argument("--t999-share", type=float, default=TrainConfig.t999_share)
    parser.add_argument("--seam-weight", type=float, default=TrainConfig.seam_weight)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = None
    if args.model_config is not None:
        model_config = ModelConfig(**json.loads(args.model_config.read_text()))
    train = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        ema_decay=args.ema,
        seed=args.seed,
        first_window_share=args.first_window_share,
        top_t_share=args.top_t_share,
        t999_share=args.t999_share,
        seam_weight=args.seam_weight,
    )
    trainer = Trainer(
        args.out, train, model_config, args.device, init_from=args.init_from,
        position_planes=args.position_planes,
    )  # fmt: skip
    if args.resume and trainer.resume():
        print(f"resumed at step {trainer.step}", flush=True)
    trainer.run(checkpoint_every=args.checkpoint_every, max_seconds=args.max_minutes * 60)
    print(json.dumps(trainer.metadata()), flush=True)


if __name__ == "__main__":
    main()
