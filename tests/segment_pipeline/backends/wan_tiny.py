"""Tiny, randomly initialised Wan checkpoint directories, built without any download.

Every component is the real diffusers/transformers class at a toy size (UMT5 text encoder,
`AutoencoderKLWan`, `WanTransformer3DModel`, the UniPC flow scheduler Wan publishes), saved
with `save_pretrained`, so the directories load through `from_pretrained` exactly as a
published checkpoint does. The VAE keeps Wan2.1's compression (8x spatial, 4x temporal,
causal) and the transformer its 1x2x2 patches: sizes are multiples of 16, clips 4k+1 frames.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    UMT5Config,
    UMT5EncoderModel,
)

from .ltx_tiny import tiny_tokenizer

TEXT_DIM = 16
LATENT_CHANNELS = 4
IMAGE_DIM = 16


def tiny_umt5(vocab_size: int) -> UMT5EncoderModel:
    """A one-layer UMT5 encoder of `TEXT_DIM` wide: the text encoder of the Wan family
    (Wan, SkyReels-V2, Helios) at toy size."""
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size,
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
    )


def tiny_wan_vae(base_dim: int = 4, z_dim: int = LATENT_CHANNELS) -> AutoencoderKLWan:
    """Wan2.1's VAE at toy width (8x in space, 4x in time, as the real one); with Wan's 16
    latents the checkpoint's own latents_mean/std apply, else a plain 0/1."""
    plain = {} if z_dim == 16 else {"latents_mean": [0.0] * z_dim, "latents_std": [1.0] * z_dim}
    return AutoencoderKLWan(
        base_dim=base_dim,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        **plain,
    )


def _parts(seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = tiny_umt5(len(tokenizer))
    vae = tiny_wan_vae()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler)


def _transformer(in_channels: int, image_dim: int | None = None) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        image_dim=image_dim,
        rope_max_seq_len=32,
    )


def build_tiny_wan(directory: Path, *, two_stage: bool = False, seed: int = 0) -> Path:
    """Save a tiny text-to-video Wan pipeline to `directory`: Wan2.1's layout, or with
    `two_stage` Wan2.2 A14B's (`transformer_2` for the low-noise steps, `boundary_ratio`)."""
    parts = _parts(seed)
    transformer = _transformer(LATENT_CHANNELS)
    extra: dict[str, object] = {}
    if two_stage:
        extra = dict(transformer_2=_transformer(LATENT_CHANNELS), boundary_ratio=0.875)
    WanPipeline(transformer=transformer, **parts, **extra).save_pretrained(directory)  # type: ignore[arg-type]
    return directory


def build_tiny_wan_i2v(directory: Path, seed: int = 0) -> Path:
    """Save a tiny Wan2.1 image-to-video pipeline (mask + image latents beside the latents,
    a CLIP image encoder) to `directory`."""
    parts = _parts(seed)
    temporal = 4  # the mask's channels: one per frame of the first latent frame
    transformer = _transformer(2 * LATENT_CHANNELS + temporal, image_dim=IMAGE_DIM)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=IMAGE_DIM,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=16,
        )
    )
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    pipe = WanImageToVideoPipeline(
        transformer=transformer,
        image_encoder=image_encoder,
        image_processor=image_processor,
        **parts,  # type: ignore[arg-type]
    )
    pipe.save_pretrained(directory)
    return directory
