"""A tiny, randomly initialised LTX-2 checkpoint directory, built without any download.

Every component is the real diffusers/transformers class at a toy size (a two-layer Gemma 3
text encoder with a word-level tokenizer made in code, the text connectors, the audio-video
transformer, both VAEs and the vocoder), so the directory loads through
`LTX2ConditionPipeline.from_pretrained` as a published checkpoint does. The audio VAE's hop
and the vocoder's upsampling agree (16 samples a mel frame), so a window's audio lasts as
long as its video, as with the real model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2ConditionPipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GemmaTokenizerFast
from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig
from transformers.models.siglip.configuration_siglip import SiglipVisionConfig

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_image>", "<end_of_image>", "<image>"]
WORDS = ["a", "the", "red", "blue", "ball", "face", "talking", "moving", "left", "right"]
TEXT_DIM = 16
HOP = 16  # audio samples a mel frame, = the vocoder's total upsampling (4 x 4)


def tiny_tokenizer() -> GemmaTokenizerFast:
    """A word-level tokenizer over a few words, with Gemma's special tokens."""
    vocab = {word: i for i, word in enumerate(SPECIAL + WORDS)}
    model = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    return GemmaTokenizerFast(
        tokenizer_object=model, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
        unk_token="<unk>",
    )  # fmt: skip


def build_tiny_ltx2(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random LTX-2 pipeline to `directory` (created); returns it."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        max_position_embeddings=128, sliding_window=64,
    )  # fmt: skip
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=8,
    )  # fmt: skip
    config = Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
        boi_token_index=4, eoi_token_index=5, image_token_index=6,
    )  # fmt: skip
    text_encoder = Gemma3ForConditionalGeneration(config)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
        num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=TEXT_DIM,
        rope_double_precision=False, rope_type="split",
    )  # fmt: skip
    connectors = LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=text.num_hidden_layers + 1,
        video_connector_num_attention_heads=2, video_connector_attention_head_dim=8,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_theta=10000.0, rope_double_precision=False,
        causal_temporal_positioning=False, rope_type="split",
    )  # fmt: skip
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
        decoder_block_out_channels=(8,), layers_per_block=(1,), decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False,
        patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )  # fmt: skip
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1,
        attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2,
        norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=HOP, is_causal=True,
        mel_bins=8,
    )  # fmt: skip
    vocoder = LTX2Vocoder(
        in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[8, 8],
        upsample_factors=[4, 4], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
    )  # fmt: skip
    pipe = LTX2ConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae,
        text_encoder=text_encoder, tokenizer=tokenizer, connectors=connectors,
        transformer=transformer, vocoder=vocoder, audio_scheduler=None,
    )  # fmt: skip
    pipe.save_pretrained(directory)
    return directory
