"""Tiny random diffusers pipelines, built offline, for tests of the export and serving path.

Real diffusers/transformers classes at toy sizes with seeded weights, as diffusers' own pipeline
tests build them (``UNet2DConditionModel``, ``CLIPTextModel`` (+ ``WithProjection`` for SDXL),
``AutoencoderKL``, a ``CLIPTokenizer`` over a small vocabulary written here, since there is no
hub access). :func:`write_tiny_cascade` writes a light/heavy/discriminator triple and a cascade
YAML that ``python -m export`` accepts, for tests of other parts too.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

IMAGE_SIZE_PX = 32
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "on", "the", "left", "right", "of",
          "above", "below", "and", "two", "three", "small", "big", "photo", "cat", "dog")


def tiny_clip_tokenizer(max_length_tokens: int = 16, pad_token: str = _EOS):
    """A CLIPTokenizer over lowercase letters, digits, ',', '.' and a few whole-word merges.

    Unknown characters map to the end token; ``max_length_tokens`` is its ``model_max_length``.
    """
    from transformers import CLIPTokenizer  # noqa: PLC0415

    chars = list(string.ascii_lowercase + string.digits + ",.!")
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for w in _WORDS:  # merge left to right: each word becomes one token
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            if pair[0] + pair[1] not in tokens:
                tokens.append(pair[0] + pair[1])
            parts = [pair[0] + pair[1]] + parts[2:]
    tokens += [_BOS, _EOS]
    if pad_token not in tokens:
        tokens.append(pad_token)
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=_EOS, bos_token=_BOS, eos_token=_EOS,
                         pad_token=pad_token, model_max_length=max_length_tokens)


def _text_encoder(tokenizer, hidden: int, with_projection: bool, seed: int, projection_dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                         projection_dim=projection_dim, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="gelu")
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()


def _vae(seed: int):
    from diffusers import AutoencoderKL  # noqa: PLC0415

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=4, norm_num_groups=4, sample_size=IMAGE_SIZE_PX,
                         mid_block_add_attention=False).eval()


def _tiny_autoencoder(seed: int):
    from diffusers import AutoencoderTiny  # noqa: PLC0415

    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                           num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4).eval()


def tiny_sd_pipeline(seed: int = 0, scheduler: str = "ddim", vae: str = "kl"):
    """A random ``StableDiffusionPipeline`` making 32x32 images (16x16x4 latents).

    ``vae``: ``kl`` (AutoencoderKL, as SD) or ``tiny`` (AutoencoderTiny, as SDXS's distilled decoder).
    """
    from diffusers import (DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,  # noqa: PLC0415
                           StableDiffusionPipeline, UNet2DConditionModel)

    tok = tiny_clip_tokenizer()
    te = _text_encoder(tok, 32, False, seed)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8).eval()
    sched_cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
                 "euler_ancestral": EulerAncestralDiscreteScheduler}[scheduler]
    kw = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if scheduler == "ddim":
        kw.update(clip_sample=False, set_alpha_to_one=False)
    autoencoder = _tiny_autoencoder(seed + 2) if vae == "tiny" else _vae(seed + 2)
    return StableDiffusionPipeline(vae=autoencoder, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=sched_cls(**kw), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl_pipeline(seed: int = 0):
    """A random ``StableDiffusionXLPipeline`` (two text encoders, text_time conditioning), 32x32 images."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel  # noqa: PLC0415

    tok, tok2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!")
    te = _text_encoder(tok, 32, False, seed)
    te2 = _text_encoder(tok2, 32, True, seed + 3, projection_dim=32)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 32,
                                cross_attention_dim=64, norm_num_groups=8).eval()
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                   timestep_spacing="trailing")
    return StableDiffusionXLPipeline(vae=_vae(seed + 2), text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                                     tokenizer_2=tok2, unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True)


# A minimal valid cascade YAML (local model paths need not exist to parse it).
GOOD_TINY_YAML = """name: t
slo_ms: 5000
light: {model: export, steps: 1, guidance_scale: 0.0, scheduler: ddim, height: 32, width: 32}
heavy: {model: export, steps: 4, guidance_scale: 3.0, scheduler: ddim, height: 32, width: 32}
discriminator: {path: export, image_size: 32}
"""


class TinyDiscriminator(torch.nn.Module):
    """A random conv net: float32 NCHW [0, 1] images -> logits [B] (the discriminator contract)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.SiLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 1))

    def forward(self, images):
        return self.net(images * 2 - 1).squeeze(-1)


def save_tiny_discriminator(folder: Path, seed: int = 0) -> Path:
    """Save a :class:`TinyDiscriminator` as ``model.pt`` + ``config.json`` (loadable by :func:`load_tiny_discriminator`)."""
    import json  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(TinyDiscriminator(seed).state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({"_class_name": "TinyDiscriminator", "seed": seed,
                                                    "image_size": IMAGE_SIZE_PX}))
    return folder


def load_tiny_discriminator(folder: Path) -> TinyDiscriminator:
    """Reload a discriminator written by :func:`save_tiny_discriminator`."""
    model = TinyDiscriminator()
    model.load_state_dict(torch.load(Path(folder) / "model.pt", weights_only=True))
    return model.eval()


def write_tiny_cascade(root: Path, kind: str = "sd", light_steps: int = 2, heavy_steps: int = 4) -> Path:
    """Save tiny random light/heavy pipelines + discriminator under ``root``; return the cascade YAML path.

    ``kind``: ``sd`` (StableDiffusionPipeline, DDIM) or ``sdxl`` (StableDiffusionXLPipeline, Euler).
    """
    import yaml  # noqa: PLC0415

    root = Path(root)
    make = tiny_sdxl_pipeline if kind == "sdxl" else tiny_sd_pipeline
    make(seed=0).save_pretrained(root / "light")
    make(seed=10).save_pretrained(root / "heavy")
    save_tiny_discriminator(root / "discriminator")
    sched = "euler" if kind == "sdxl" else "ddim"
    stage = lambda name, steps, g: {"model": str(root / name), "steps": steps, "guidance_scale": g,  # noqa: E731
                                    "scheduler": {"name": sched, "timestep_spacing": "trailing"},
                                    "height": IMAGE_SIZE_PX, "width": IMAGE_SIZE_PX}
    cfg = {"name": f"tiny-random-{kind}", "slo_ms": 5000, "light": stage("light", light_steps, 0.0),
           "heavy": stage("heavy", heavy_steps, 3.0),
           "discriminator": {"path": str(root / "discriminator"), "image_size": IMAGE_SIZE_PX,
                             "loader": "export.testing:load_tiny_discriminator"}}
    path = root / f"tiny-random-{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def export_tiny_cascade(root: Path, kind: str = "sd") -> tuple[Path, Path]:
    """Write a tiny random cascade under ``root`` and export it (verified) into ``root/repository``.

    The committed thin ``model.py`` files are copied in, so the repository serves on tritonserver.
    Returns (cascade YAML path, repository path).
    """
    import shutil  # noqa: PLC0415

    from export.build import export_cascade  # noqa: PLC0415
    from serving.config import PROJECT_ROOT, load_cascade  # noqa: PLC0415

    cfg_path = write_tiny_cascade(Path(root) / "weights", kind)
    repo = Path(root) / "repository"
    results = export_cascade(load_cascade(cfg_path), repo, log=lambda _msg: None)
    for model in ("light", "heavy", "discriminator"):
        shutil.copy(PROJECT_ROOT / "model_repository" / model / "1" / "model.py", repo / model / "1" / "model.py")
    (repo / "verification.json").write_text(__import__("json").dumps(results, indent=2))
    return cfg_path, repo


def main(argv: list[str] | None = None) -> int:
    """``python -m export.testing --kind sd|sdxl --out DIR``: write a tiny random cascade, print its YAML path."""
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m export.testing", description=main.__doc__)
    ap.add_argument("--kind", choices=("sd", "sdxl"), default="sd")
    ap.add_argument("--out", required=True, help="folder for the weights and the cascade YAML")
    args = ap.parse_args(argv)
    print(write_tiny_cascade(Path(args.out), args.kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
