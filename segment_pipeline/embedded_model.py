"""The embedded default model: a small cascaded video diffusion model.

Two learned stages, both small enough to train on a 2-core CPU:

1. A denoiser over *low-resolution windows*: each frame of a `frames`-frame window is
   area-averaged by `downsample` (128x128 becomes 32x32, RGB), and the window's frames are
   stacked along channels, so a diffusers `UNet2DModel` denoises the whole window at once.
   Its input per window is::

       [noisy window (F*3) | given frames, zero where not given (F*3) | given mask (F)]

   and it predicts the clean window (`DDIMScheduler`, prediction type "sample", zero
   terminal SNR, trailing spacing). The prompt reaches every residual block as a scale and
   shift of its features (FiLM): the text vector is added to the timestep embedding.
2. A frame decoder (super-resolution) that turns each low-resolution frame back into a
   full-size one. Area averaging keeps how much of each low-resolution pixel the object
   covers, so in this world of flat shapes the full frame can be read back from it.

Text: a word-level tokenizer, word embeddings, two 1-D convolutions over neighbouring words
(so "dark blue" differs from "dark ... blue") and masked mean+max pooling. Unknown words map
to `<unk>`; word order beyond neighbours does not matter. Nothing here downloads anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file
from torch import nn

from .embedded_vocabulary import ATTRIBUTES, PAD, UNK, VOCABULARY
from .errors import ModelLoadError

DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "streamgen-tiny"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored as the model directory's config.json."""

    name: str = "streamgen-tiny"
    frames: int = 12
    width: int = 128
    height: int = 128
    fps: float = 8.0
    downsample: int = 4  # the denoiser sees frames area-averaged by this factor
    text_dim: int = 64
    max_tokens: int = 32
    vocabulary: list[str] = field(default_factory=lambda: list(VOCABULARY))
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 192])
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_groups: int = 16
    decoder_channels: int = 48
    decoder_blocks: int = 3
    num_train_timesteps: int = 1000
    default_steps: int = 8
    default_overlap: int = 4
    default_guidance: float = 1.0  # classifier-free guidance scale (1: off)
    # Two input planes holding each pixel's x and y (ramps in [-1, 1]): the denoiser knows
    # where it is, so a first window (nothing given, pure noise at its first step) can put
    # the object where the prompt's heading starts it. The text alone cannot: it reaches
    # every pixel alike.
    position_planes: bool = False

    @property
    def low_size(self) -> tuple[int, int]:
        """(height, width) of the denoiser's frames (pixels)."""
        return self.height // self.downsample, self.width // self.downsample

    @property
    def in_channels(self) -> int:
        return 2 * self.frames * 3 + self.frames + (2 if self.position_planes else 0)

    @property
    def out_channels(self) -> int:
        return self.frames * 3

    @property
    def cond_dim(self) -> int:
        """Width of the text vector: the UNet's timestep-embedding width."""
        return 4 * self.block_out_channels[0]


class WordTokenizer:
    """Lower-cases, splits on anything but letters, maps words to ids (<unk> if unknown)."""

    def __init__(self, vocabulary: list[str], max_tokens: int) -> None:
        self.ids = {word: i for i, word in enumerate(vocabulary)}
        self.max_tokens = max_tokens

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, attention mask), both (B, max_tokens); at least one token each."""
        ids = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)
        mask = torch.zeros(len(prompts), self.max_tokens, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            words = re.findall(r"[a-z]+", prompt.lower())[: self.max_tokens] or [PAD]
            for col, word in enumerate(words):
                ids[row, col] = self.ids.get(word, self.ids[UNK])
                mask[row, col] = True
        return ids, mask


class TextEncoder(nn.Module):
    """Word embeddings, two convolutions over neighbouring words, masked mean+max pooling and
    an MLP: (B, L) ids -> (B, cond_dim). `heads` read the world's attributes back from the
    vector; they train the encoder faster and are not used to generate."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.text_dim
        self.tokens = nn.Embedding(len(config.vocabulary), dim)
        self.conv1 = nn.Conv1d(dim, 2 * dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(2 * dim, 2 * dim, kernel_size=3, padding=1)
        self.mlp = nn.Sequential(
            nn.Linear(4 * dim, config.cond_dim),
            nn.SiLU(),
            nn.Linear(config.cond_dim, config.cond_dim),
        )
        self.heads = nn.ModuleDict(
            {name: nn.Linear(config.cond_dim, len(names)) for name, names in ATTRIBUTES.items()}
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, :].to(self.tokens.weight.dtype)  # (B, 1, L)
        hidden = self.tokens(ids).transpose(1, 2) * keep  # (B, dim, L)
        hidden = nn.functional.gelu(self.conv1(hidden)) * keep
        hidden = nn.functional.gelu(self.conv2(hidden)) * keep
        mean = hidden.sum(-1) / keep.sum(-1).clamp(min=1)
        peak = hidden.masked_fill(keep == 0, -1e4).amax(-1)
        return self.mlp(torch.cat([mean, peak], dim=1))

    def attributes(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of each attribute in `ATTRIBUTES` from text vectors (B, cond_dim)."""
        return {name: head(vector) for name, head in self.heads.items()}


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(nn.functional.silu(self.conv1(nn.functional.silu(x))))


class FrameDecoder(nn.Module):
    """Low-resolution frames (N, 3, h, w) in [-1, 1] -> full frames (N, 3, h*r, w*r).

    Residual over a nearest-neighbour upsampling: the convolutions only have to place the
    edges that area averaging blurred."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        ch, r = config.decoder_channels, config.downsample
        self.scale = r
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResBlock(ch) for _ in range(config.decoder_blocks)])
        self.conv_out = nn.Conv2d(ch, 3 * r * r, 3, padding=1)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.conv_in(low))
        detail = nn.functional.pixel_shuffle(self.conv_out(nn.functional.silu(hidden)), self.scale)
        return nn.functional.interpolate(low, scale_factor=self.scale, mode="nearest") + detail


class TinyVideoDiffusion(nn.Module):
    """Text encoder + low-resolution window denoiser + frame decoder (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(config.vocabulary, config.max_tokens)
        self.text_encoder = TextEncoder(config)
        channels = list(config.block_out_channels)
        levels = len(channels)
        self.unet = UNet2DModel(
            sample_size=config.low_size,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            # Attention only at the coarsest level, where it is cheap: it relates the object to
            # every other place in the frame.
            down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
            block_out_channels=tuple(channels),
            layers_per_block=config.layers_per_block,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=config.norm_groups,
            resnet_time_scale_shift="scale_shift",
            class_embed_type="identity",
        )
        self.decoder = FrameDecoder(config)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text vectors (B, cond_dim)."""
        device = self.text_encoder.tokens.weight.device
        ids, mask = self.tokenizer(prompts)
        return self.text_encoder(ids.to(device), mask.to(device))

    def to_low(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> area-averaged windows (B, F*3, H/r, W/r)."""
        b, f, c, h, w = frames.shape
        low = nn.functional.avg_pool2d(frames.reshape(b * f, c, h, w), self.config.downsample)
        return low.reshape(b, f * c, *low.shape[-2:])

    def decode(self, low: torch.Tensor) -> torch.Tensor:
        """Low-resolution windows (B, F*3, h, w) -> full frames (B, F, 3, H, W), in [-1, 1]."""
        b, fc, h, w = low.shape
        frames = self.decoder(low.reshape(b * fc // 3, 3, h, w).clamp(-1, 1))
        return frames.reshape(b, fc // 3, 3, *frames.shape[-2:]).clamp(-1, 1)

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        given: torch.Tensor,
        given_mask: torch.Tensor,
        text: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the clean low-resolution window for `noisy` (B, F*3, h, w).

        `given` is laid out like `noisy` (zeros where no frame is given); `given_mask` is (B, F)
        with 1 for given frames; `text` is (B, cond_dim) from `encode_prompts`.
        """
        b, _, h, w = noisy.shape
        mask_planes = given_mask[:, :, None, None].to(noisy.dtype).expand(-1, -1, h, w)
        planes = [noisy, given, mask_planes]
        if self.config.position_planes:
            ys = torch.linspace(-1, 1, h, device=noisy.device, dtype=noisy.dtype)
            xs = torch.linspace(-1, 1, w, device=noisy.device, dtype=noisy.dtype)
            planes.append(xs.view(1, 1, 1, w).expand(b, 1, h, w))
            planes.append(ys.view(1, 1, h, 1).expand(b, 1, h, w))
        sample = torch.cat(planes, dim=1)
        unet: Any = self.unet  # diffusers' ModelMixin hides __call__ from mypy
        return unet(sample, timesteps, class_labels=text).sample

    def make_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(
            num_train_timesteps=self.config.num_train_timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type="sample",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            clip_sample=True,  # every pixel of the world lies in [-1, 1]
            clip_sample_range=1.0,
        )

    # Persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Write config.json and model.safetensors (float16, to keep the repo small)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {k: v.detach().half().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata=metadata)

    @classmethod
    def load(cls, directory: str | Path) -> TinyVideoDiffusion:
        """Load a model saved by `save`; a missing or broken directory is `ModelLoadError`."""
        directory = Path(directory)
        config_path = directory / "config.json"
        weights_path = directory / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise ModelLoadError(
                    f"embedded model directory {str(directory)!r} has no {path.name}"
                )
        try:
            config = ModelConfig(**json.loads(config_path.read_text()))
            model = cls(config)
            model.load_state_dict({k: v.float() for k, v in load_file(str(weights_path)).items()})
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise ModelLoadError(
                f"cannot load embedded model from {str(directory)!r}: {exc}"
            ) from exc
        return model.eval()


def with_position_planes(model: TinyVideoDiffusion) -> TinyVideoDiffusion:
    """`model` given the position planes (`ModelConfig.position_planes`), its other weights
    kept and the new planes' input weights zero: it predicts exactly what `model` does
    until it is trained further."""
    if model.config.position_planes:
        return model
    config = replace(model.config, position_planes=True)
    grown = TinyVideoDiffusion(config)
    state = model.state_dict()
    conv = "unet.conv_in.weight"
    weight = torch.zeros_like(grown.state_dict()[conv])
    weight[:, : state[conv].shape[1]] = state[conv]
    grown.load_state_dict({**state, conv: weight})
    return grown.to(next(model.parameters()).device)


def initial_model(config: ModelConfig | None = None, seed: int = 0) -> TinyVideoDiffusion:
    """A model with deterministic initial (untrained) weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TinyVideoDiffusion(config or ModelConfig())
