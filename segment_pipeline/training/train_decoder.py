"""Fine-tune the embedded model's frame decoder alone; every other weight stays as it is.

    python -m segment_pipeline.training.train_decoder --init-from DIR --out runs/decoder
        --steps 1500 [--resume] [--max-minutes M]

The decoder turns the denoiser's area-averaged frames back into full ones. Trained with the
rest of the model on a mean squared error, it learns soft edges wherever area averaging left
an edge's exact place unsure, and a square with soft corners reads as a circle. Here it is
trained on its own, many frames a step (it is cheap: its convolutions run at the low
resolution), on an L1 error, which keeps edges hard, weighted up on the object's pixels and
on the pixels the upsampled low-resolution frame gets wrong (edges and corners). Inputs get
the same small noise as in the main training. The saved model is the original with the
EMA of the fine-tuned decoder; each run's data and noise are drawn from (seed, step), so a
resumed run draws what an uninterrupted one would have.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..embedded_model import FrameDecoder, TinyVideoDiffusion
from .world import BACKGROUND_RGB, WorldConfig, make_clip, sample_spec


@dataclass(frozen=True)
class DecoderTrainConfig:
    steps: int = 1500
    frames: int = 64  # frames a step (16 clips of 4)
    learning_rate: float = 2e-4
    warmup_steps: int = 50
    ema_decay: float = 0.995
    object_weight: float = 4.0
    edge_weight: float = 8.0  # on pixels the upsampled low-resolution frame misses
    input_noise: float = 0.04  # max std of noise on the low-resolution input
    seed: int = 0


def decoder_batch(
    rng: np.random.Generator, model: TinyVideoDiffusion, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` full frames (N, 3, H, W) in [-1, 1] and their object masks (N, 1, H, W)."""
    config = model.config
    world = WorldConfig(config.width, config.height, config.fps)
    frames: list[np.ndarray] = []
    objects: list[np.ndarray] = []
    while len(frames) < count:
        spec = sample_spec(rng)
        clip = make_clip(spec, rng, 4, world, anywhere=True)
        for frame in clip.frames:
            frames.append(frame)
            objects.append(np.any(frame != BACKGROUND_RGB[spec.background], axis=-1))
    pixels = torch.from_numpy(np.stack(frames[:count])).permute(0, 3, 1, 2).float() / 127.5 - 1
    masks = torch.from_numpy(np.stack(objects[:count]))[:, None].float()
    return pixels, masks


def decoder_loss(
    model: TinyVideoDiffusion,
    full: torch.Tensor,
    objects: torch.Tensor,
    generator: torch.Generator,
    train: DecoderTrainConfig,
) -> torch.Tensor:
    r = model.config.downsample
    low = nn.functional.avg_pool2d(full, r)
    noise = torch.rand(len(full), 1, 1, 1, generator=generator) * train.input_noise
    noisy = (low + noise * torch.randn(low.shape, generator=generator)).clamp(-1, 1)
    decoded = model.decoder(noisy)
    missed = (full - nn.functional.interpolate(low, scale_factor=r, mode="nearest")).abs()
    edges = (missed.mean(dim=1, keepdim=True) > 0.05).float()
    weight = 1.0 + train.object_weight * objects + train.edge_weight * edges
    return (weight * (decoded - full).abs()).mean() / weight.mean()


def _learning_rate(step: int, train: DecoderTrainConfig) -> float:
    if step < train.warmup_steps:
        return train.learning_rate * (step + 1) / train.warmup_steps
    progress = min(1.0, (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps))
    return train.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def run(
    init_from: Path,
    out: Path,
    train: DecoderTrainConfig,
    *,
    resume: bool = False,
    max_seconds: float = 0.0,
    checkpoint_every: int = 100,
    resize: tuple[int, int] | None = None,
) -> dict[str, object]:
    """Fine-tune `init_from`'s decoder and save the model to ``out/model``. `resize`
    (channels, blocks): train a fresh decoder of that size instead."""
    model = TinyVideoDiffusion.load(init_from).float()
    if resize is not None:
        channels, blocks = resize
        model.config = replace(model.config, decoder_channels=channels, decoder_blocks=blocks)
        torch.manual_seed(train.seed)
        model.decoder = FrameDecoder(model.config)
    model.requires_grad_(False)
    decoder = model.decoder.train().requires_grad_(True)
    ema = copy.deepcopy(decoder).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=train.learning_rate, weight_decay=0.0)
    checkpoint = out / "checkpoint.pt"
    step, seconds, losses = 0, 0.0, []
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        decoder.load_state_dict(state["decoder"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds, losses = state["step"], state["seconds"], state["losses"]
        print(f"resumed at step {step}", flush=True)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # whole or not at all: a run killed mid-save still resumes
        partial = checkpoint.with_suffix(".pt.part")
        torch.save({"decoder": decoder.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "step": step, "seconds": seconds,
                    "losses": losses, "train": asdict(train)}, partial)  # fmt: skip
        partial.replace(checkpoint)

    started = time.monotonic()
    while step < train.steps:
        rng = np.random.default_rng([train.seed, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        full, objects = decoder_batch(rng, model, train.frames)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, train)
        t0 = time.monotonic()
        loss = decoder_loss(model, full, objects, generator, train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), decoder.parameters(), strict=True):
                e.lerp_(p, 1 - min(train.ema_decay, (1 + step) / (10 + step)))
        seconds += time.monotonic() - t0
        losses.append((step, float(loss.detach())))
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {losses[-1][1]:.5f} ({seconds / step:.2f} s/step)", flush=True)
        if step % checkpoint_every == 0:
            save()
        if max_seconds and time.monotonic() - started > max_seconds:
            break
    save()
    model.decoder = ema
    metadata = {"decoder_steps": str(step), "decoder_train": json.dumps(asdict(train)),
                "decoder_init_from": str(init_from)}  # fmt: skip
    model.save(out / "model", metadata=metadata)
    return {"steps": step, "seconds": round(seconds, 1),
            "loss": float(np.mean([x for _, x in losses[-50:]])) if losses else None}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init-from", type=Path, required=True, help="a saved model directory")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint/output directory")
    parser.add_argument("--steps", type=int, default=DecoderTrainConfig.steps)
    parser.add_argument("--frames", type=int, default=DecoderTrainConfig.frames)
    parser.add_argument("--lr", type=float, default=DecoderTrainConfig.learning_rate)
    parser.add_argument("--edge-weight", type=float, default=DecoderTrainConfig.edge_weight)
    parser.add_argument("--seed", type=int, default=DecoderTrainConfig.seed)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--max-minutes", type=float, default=0, help="stop after (0: never)")
    parser.add_argument("--resume", action="store_true", help="continue from out/checkpoint.pt")
    parser.add_argument(
        "--resize", type=int, nargs=2, metavar=("CHANNELS", "BLOCKS"),
        help="train a fresh decoder of this size instead of fine-tuning the model's",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = DecoderTrainConfig(steps=args.steps, frames=args.frames, learning_rate=args.lr,
                               edge_weight=args.edge_weight, seed=args.seed)  # fmt: skip
    result = run(args.init_from, args.out, train, resume=args.resume,
                 max_seconds=args.max_minutes * 60,
                 resize=tuple(args.resize) if args.resize else None)  # fmt: skip
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
