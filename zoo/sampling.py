"""Sampling the tiny pipelines through diffusers' ``StableDiffusionPipeline`` (the reference path)."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from tqdm import tqdm


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How a stage is sampled: DDIM ``steps`` and classifier-free ``guidance_scale`` (<= 1: no CFG)."""

    steps: int
    guidance_scale: float


# The cascade's defaults (what configs/tiny.yaml should name): heavy = 25-step DDIM with CFG,
# light = two DDIM steps of a small epsilon-predicting model without CFG. Two, not one: with free
# positions one step draws the blurred mean over layouts (8 % of easy selection prompts right at
# 1 step, 45 % at 2, 71 % at 4); not four: at 3-4 steps light came within 14-16 points of heavy on
# hard selection prompts, and the cascade needs light clearly worse there (docs/zoo.md).
# The report's evaluation prompts: seed disjoint from the training streams (seeds 1-5) and the
# training-time eval (123); image i uses seed 10,000 + i.
WEIGHTS = Path("zoo/weights")
PROMPT_SEED = 2024
SAMPLING = {"heavy": SamplingConfig(steps=25, guidance_scale=3.0), "light": SamplingConfig(steps=2, guidance_scale=1.0)}


def load_pipeline(path: str | Path, device: torch.device | str = "cpu") -> StableDiffusionPipeline:
    """``StableDiffusionPipeline.from_pretrained(path)`` in fp32 on ``device``, progress bar off."""
    diffusers_logging.set_verbosity_error()
    pipe = StableDiffusionPipeline.from_pretrained(str(path), torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    sampling: SamplingConfig,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Images uint8 (B, 32, 32, 3) for ``prompts``; image i depends only on (prompt i, seed i).

    Raises ValueError when prompts and seeds differ in length.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    out = []
    starts = range(0, len(prompts), batch_size)
    for i in tqdm(starts, desc="generate", disable=not progress):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        with torch.no_grad():
            res = pipe(list(prompts[i:i + batch_size]), num_inference_steps=sampling.steps,
                       guidance_scale=sampling.guidance_scale, generator=gens, output_type="np")
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), np.uint8)


def weights_key(weights: Path, prompts: Sequence[str], seeds: Sequence[int]) -> str:
    """Hash of the heavy and light weight files, the prompts and the seeds: when a cached image set is valid."""
    h = hashlib.sha256("\n".join(prompts).encode() + str(list(seeds)).encode())
    for f in sorted((weights / "heavy").rglob("*")) + sorted((weights / "light").rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            h.update(f.read_bytes())
    return h.hexdigest()


def cached_images(pipes: dict, prompts: Sequence[str], seeds: Sequence[int], weights: Path,
                  cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(heavy, light) images of ``prompts``; read from / written to the npz ``cache`` when it was made
    from the same weights, prompts and seeds (``pipes``: ``{"heavy": pipeline, "light": pipeline}``)."""
    key = weights_key(Path(weights), prompts, seeds)
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return z["heavy"], z["light"]
    heavy = generate(pipes["heavy"], prompts, seeds, SAMPLING["heavy"], progress=True)
    light = generate(pipes["light"], prompts, seeds, SAMPLING["light"], progress=True)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, heavy=heavy, light=light, key=key)
    return heavy, light


def disc_confidence(disc: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """P(real) of the torch discriminator for uint8 (B, H, W, 3) images."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.no_grad():
        return torch.sigmoid(disc(x)).numpy()
