"""A tiny, randomly initialised LTX-Video checkpoint directory, built without any download.

Every component is the real diffusers/transformers class at a toy size, so the directory
loads through `LTXConditionPipeline.from_pretrained` exactly as a published checkpoint does.
The VAE keeps LTX-Video's compression (32x spatial, 8x temporal), so the tiny model accepts
the same sizes as the real one: 32x32 frames are one latent pixel, 9 frames two latent frames.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    DDPMPipeline,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    LTXConditionPipeline,
    LTXVideoTransformer3DModel,
    UNet2DModel,
)
from transformers import T5Config, T5EncoderModel, T5Tokenizer

TEXT_DIM = 16
LATENT_CHANNELS = 8

WORDS = ["a", "the", "red", "blue", "ball", "circle", "moving", "left", "right", "slowly"]


def tiny_tokenizer() -> T5Tokenizer:
    """A T5 (Unigram) tokenizer over a handful of words and single letters, built in code."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -1.0) for word in WORDS]
    pieces += [(char, -5.0) for char in string.ascii_lowercase + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=128)


def build_tiny_ltx(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random LTX-Video pipeline to `directory` (created); returns it."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
    )
    transformer = LTXVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=1,
        caption_channels=TEXT_DIM,
    )
    vae = AutoencoderKLLTXVideo(
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift_terminal=0.1)
    pipe = LTXConditionPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(directory)
    return directory


def build_other_pipeline(directory: Path) -> Path:
    """Save a tiny pipeline of another kind (unconditional DDPM) to `directory`."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(directory)
    return directory
