"""Tiny, randomly initialised Helios checkpoints (Helios and Helios-Distilled), built in code.

Every component is the real diffusers/transformers class at a toy size (Wan's VAE, Helios's
transformer with its multi-term memory patches, a UMT5 text encoder), saved with
`save_pretrained`, so the directories load through `from_pretrained` exactly as the published
ones do. The VAE keeps Wan's compression (8x in space, 4x in time): a 64x64 frame is 8x8
latent pixels, a 9-frame chunk 3 latent frames.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    HeliosDMDScheduler,
    HeliosPipeline,
    HeliosPyramidPipeline,
    HeliosScheduler,
    HeliosTransformer3DModel,
)

from .ltx_tiny import tiny_tokenizer
from .wan_tiny import LATENT_CHANNELS, TEXT_DIM, tiny_umt5, tiny_wan_vae


def _components(seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = tiny_umt5(len(tokenizer))
    vae = tiny_wan_vae()
    transformer = HeliosTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=16,
        num_layers=1,
        rope_dim=(4, 4, 4),
    )
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae,
            "transformer": transformer}  # fmt: skip


def build_tiny_helios(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random Helios (`HeliosPipeline`, one-stage `HeliosScheduler`) to
    `directory` (created); returns it."""
    pipe = HeliosPipeline(scheduler=HeliosScheduler(stages=1), **_components(seed))  # type: ignore[arg-type]
    pipe.save_pretrained(directory)
    return directory


def build_tiny_helios_distilled(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random Helios-Distilled (`HeliosPyramidPipeline` with a three-stage
    `HeliosDMDScheduler`, `is_distilled`) to `directory` (created); returns it."""
    pipe = HeliosPyramidPipeline(
        scheduler=HeliosDMDScheduler(stages=3, gamma=0.25),
        is_distilled=True,
        **_components(seed),  # type: ignore[arg-type]
    )
    pipe.save_pretrained(directory)
    return directory
