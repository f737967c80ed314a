"""Architectures of the tiny cascade: real diffusers/transformers classes at toy sizes.

Every component is the class a real Stable Diffusion checkpoint uses (``CLIPTextModel``,
``UNet2DConditionModel``, ``AutoencoderKL``, ``DDIMScheduler``), so the saved folders load
with ``StableDiffusionPipeline.from_pretrained`` and export like a real checkpoint.
"""
from __future__ import annotations

import dataclasses

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, SiglipTextConfig, SiglipTextModel

from zoo.domain import IMAGE_SIZE_PX
from zoo.tokenizer import MAX_LENGTH_TOKENS

LATENT_SIZE_PX = IMAGE_SIZE_PX // 2  # the VAE downsamples 32x32 -> 16x16
LATENT_CHANNELS = 4


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """Text encoder size: ``hidden_dim`` is also the UNet's cross-attention width.

    ``causal``: CLIPTextModel (causal self-attention, as in Stable Diffusion) when True; else
    SiglipTextModel, the same pre-LayerNorm transformer with the same parameter names but
    bidirectional attention, so a word's state can depend on the words after it (in
    ``A left of B`` the causal encoder's states of A cannot know the relation)."""

    hidden_dim: int = 64
    layers: int = 2
    heads: int = 4
    causal: bool = True


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """UNet2DConditionModel size; cross-attention at the levels whose flag is True.

    ``channels`` per resolution level (16x16, 8x8, 4x4 latents for three levels).
    """

    channels: tuple[int, ...] = (32, 64, 64)
    cross_attention: tuple[bool, ...] = (False, True, True)
    layers_per_block: int = 1
    heads: int = 4
    norm_groups: int = 8


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """AutoencoderKL size: two levels (32x32 -> 16x16); mid attention off (40% of its cost)."""

    channels: tuple[int, ...] = (16, 32)
    norm_groups: int = 8


def build_text_encoder(cfg: TextEncoderConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel | SiglipTextModel:
    """An untrained CLIPTextModel (or, ``causal=False``, SiglipTextModel) over ``tokenizer``'s vocabulary."""
    if not cfg.causal:
        return SiglipTextModel(SiglipTextConfig(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_dim, intermediate_size=cfg.hidden_dim * 2,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=MAX_LENGTH_TOKENS,
            hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_size=cfg.hidden_dim,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_dim,
        intermediate_size=cfg.hidden_dim * 2,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=MAX_LENGTH_TOKENS,
        projection_dim=cfg.hidden_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(cfg: UNetConfig, cross_attention_dim: int) -> UNet2DConditionModel:
    """An untrained UNet2DConditionModel on 16x16x4 latents."""
    if len(cfg.channels) != len(cfg.cross_attention):
        raise ValueError(
            f"UNetConfig.channels {cfg.channels} and cross_attention {cfg.cross_attention} differ in length"
        )
    down = tuple("CrossAttnDownBlock2D" if x else "DownBlock2D" for x in cfg.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if x else "UpBlock2D" for x in reversed(cfg.cross_attention))
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE_PX,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=cfg.channels,
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.heads,
        norm_num_groups=cfg.norm_groups,
    )


def build_vae(cfg: VAEConfig) -> AutoencoderKL:
    """An untrained AutoencoderKL: 32x32x3 <-> 16x16x4."""
    n = len(cfg.channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.channels,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=cfg.norm_groups,
        sample_size=IMAGE_SIZE_PX,
        mid_block_add_attention=False,
    )


def build_scheduler(prediction_type: str, zero_terminal_snr: bool = False) -> DDIMScheduler:
    """DDIM over the SD noise schedule (scaled linear, 1000 steps); ``prediction_type`` epsilon/sample/v_prediction.

    ``zero_terminal_snr``: rescale the betas so the last timestep is pure noise (Lin et al. 2023,
    diffusers' ``rescale_betas_zero_snr``); only meaningful with v_prediction (epsilon cannot
    recover the image from pure noise)."""
    if prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"prediction_type must be epsilon, sample or v_prediction, got {prediction_type!r}")
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise ValueError(f"zero_terminal_snr needs prediction_type v_prediction, got {prediction_type!r}")
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_terminal_snr,
        timestep_spacing="trailing",
    )


def n_params(module) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in module.parameters())
