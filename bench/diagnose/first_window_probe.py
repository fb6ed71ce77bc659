"""A tiny training probe (issue 13): fine-tune the shipped weights on first windows only
(0 given frames) for a few hundred steps and see whether first-window direction moves.

    nice -n 10 python bench/diagnose/first_window_probe.py --out /tmp/probe_first \
        [--steps 150] [--batch-size 8] [--lr 2e-4] [--coords] [--top-t 0.0]
    nice -n 10 python bench/diagnose/first_windows.py --model /tmp/probe_first/model \
        --parts windows,loss --out /tmp/probe_first/results.json

Everything else is `segment_pipeline.training.train`'s recipe (same batches, same loss); the frame
decoder is not trained. Options:

- --coords: give the denoiser its absolute position: two extra input planes (x and y ramps
  in [-1, 1]); the new input weights start at zero, so step 0 is the shipped model. Saved
  as a model directory whose UNet has 2 more input channels; `first_windows.py` loads it
  through this module's `load_probe` (it detects the coordinate weights).
- --top-t F: draw a fraction F of timesteps from [900, 999] (the zero-SNR end, where a
  first window's start and heading are decided) instead of uniformly.

Writes only under --out (never the shipped model). One torch thread unless --threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import segment_pipeline.training.train as train_mod  # noqa: E402
from segment_pipeline.embedded_model import DEFAULT_MODEL_DIR, TinyVideoDiffusion  # noqa: E402


class CoordConvIn(nn.Module):
    """conv_in with two coordinate planes appended to its input."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = nn.Conv2d(conv.in_channels + 2, conv.out_channels, conv.kernel_size,
                              padding=conv.padding)  # fmt: skip
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, : conv.in_channels] = conv.weight
            self.conv.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
        return self.conv(torch.cat([x, xs, ys], dim=1))


def add_coords(model: TinyVideoDiffusion) -> TinyVideoDiffusion:
    model.unet.conv_in = CoordConvIn(model.unet.conv_in)
    return model


def load_probe(directory: Path) -> TinyVideoDiffusion:
    """Load a model saved by this probe (with or without coordinate planes)."""
    from safetensors.torch import load_file

    from segment_pipeline.embedded_model import ModelConfig

    config = ModelConfig(**json.loads((directory / "config.json").read_text()))
    state = {k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()}
    model = TinyVideoDiffusion(config)
    if "unet.conv_in.conv.weight" in state:
        add_coords(model)
    model.load_state_dict(state)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--coords", action="store_true")
    parser.add_argument("--top-t", type=float, default=0.0)
    parser.add_argument("--all-windows", action="store_true", help="control: the usual mix")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if str(args.out.resolve()).startswith(str(DEFAULT_MODEL_DIR.resolve())):
        raise SystemExit("refusing to write into the shipped model directory")
    torch.set_num_threads(args.threads)

    if not args.all_windows:  # every window a first window (make_batch reads this global)
        train_mod.draw_given_count = lambda rng, frames, overlap: 0
    if args.top_t > 0:  # bias the timestep draw of training_loss towards t in [900, 999]
        real_randint = torch.randint

        def randint(low, high, size, generator=None, **kw):
            t = real_randint(low, high, size, generator=generator, **kw)
            if high == 1000 and len(size) == 1:
                top = torch.rand(size, generator=generator) < args.top_t
                t = torch.where(top, real_randint(900, 1000, size, generator=generator), t)
            return t

        train_mod.torch.randint = randint  # the name training_loss looks up

    model = TinyVideoDiffusion.load(args.model)
    if args.coords:
        add_coords(model)
    model.train()
    params = [p for n, p in model.named_parameters() if not n.startswith("decoder.")]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    config = train_mod.TrainConfig(batch_size=args.batch_size, seed=args.seed)
    alphas = model.make_scheduler().alphas_cumprod
    log = []
    started = time.perf_counter()
    for step in range(args.steps):
        rng = np.random.default_rng([args.seed, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        batch = train_mod.make_batch(rng, args.batch_size, model.config, config)
        losses = train_mod.training_loss(model, batch, alphas, generator, config)
        loss = losses["denoiser"] + config.attribute_weight * losses["text"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        lr = args.lr * min(1.0, (step + 1) / 20)  # short warmup: fresh Adam moments
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        log.append(float(losses["denoiser"]))
        if (step + 1) % 10 == 0:
            print(f"step {step + 1} denoiser {np.mean(log[-10:]):.4f} "
                  f"{time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip
    model.eval()
    meta = {"probe": vars(args) | {"out": str(args.out), "model": str(args.model)},
            "seconds": time.perf_counter() - started, "losses": log}  # fmt: skip
    model.save(args.out / "model", metadata={"probe": json.dumps(meta, default=str)})
    (args.out / "probe.json").write_text(json.dumps(meta, default=str, indent=1) + "\n")
    print(f"saved {args.out / 'model'} ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
