"""Does a text-to-image pipeline of the tiny domain read the relation word? A diagnostic.

For pair prompts of the selection split (``A <relation> B``) it samples each prompt and its
*flip* (the opposite relation word, same objects, same seed) and reads both pictures with the
judge:

- ``shown``: the stated relation holds in the picture (``zoo.judge.relation_shown``; chance is
  about 25 %: it must hold within a 90-degree cone);
- ``side_right``: the first object is on the stated side of the second along the relation's axis
  (chance 50 %);
- ``flip_follows``: the first object is on the stated side in BOTH pictures, i.e. flipping the
  word moved it across (0 % for a model that ignores the word: same seed, same picture);
- ``flip_pixel_change``: mean absolute pixel change between a prompt's picture and its flip's,
  over the change between two seeds of the same prompt (0 when the word is ignored, ~1 when it
  matters as much as the noise).

Only prompts where the judge finds both objects in both pictures count for the first three.

``pure_noise_flip_change`` asks where the word is lost: the model's own image estimate (x0) at
the last timestep, where the input is (almost) pure noise and only the text can say where
objects go, for a prompt and its flip with the same noise, over the change from another noise
(decoded pictures). A model that places objects by the word has a ratio well above 1 (the MSE
optimum there ignores the noise); one that takes its layout from the noise has ~0.

Usage: ``python -m zoo.relation_probe zoo/weights/heavy runs/x/heavy_snap_3000 --n 100``
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from zoo.domain import KINDS, caption_of, eval_prompts, parse_caption, relation_offsets
from zoo.judge import load_judge, relation_shown
from zoo.sampling import SAMPLING, SamplingConfig, generate, load_pipeline

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def pair_prompts(n: int, seed: int = 123, split: str = "select") -> list[str]:
    """The first ``n`` relation prompts of the seeded hard prompt stream of ``split``."""
    out: list[str] = []
    batch = max(4 * n, 64)
    while len(out) < n:
        hard = eval_prompts(seed=seed, n_per_difficulty=batch, split=split)[batch:]
        out = [p for p in hard if parse_caption(p).relation is not None][:n]
        batch *= 2
    return out


def flipped(prompt: str) -> str:
    """The prompt with the opposite relation word (same objects in the same order)."""
    scene = parse_caption(prompt)
    return caption_of(dataclasses.replace(scene, relation=OPPOSITE[scene.relation]))


def _centres(judge, images: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(first object's centre, second's) per image, NaN where the judge does not find it."""
    _, where = judge.predict(images)
    idx = [[KINDS.index(o[:2]) for o in parse_caption(p).objects[:2]] for p in prompts]
    rows = np.arange(len(prompts))
    return where[rows, [i[0] for i in idx]], where[rows, [i[1] for i in idx]]


Sampler = Callable[[Sequence[str], Sequence[int]], np.ndarray]  # (prompts, seeds) -> uint8 (B, 32, 32, 3)


def probe(sample: Sampler, judge, prompts: list[str], seed0: int = 30_000) -> dict:
    """The four rates of the module docstring for one text-to-image sampler."""
    flips = [flipped(p) for p in prompts]
    seeds = list(range(seed0, seed0 + len(prompts)))
    img, img_flip = sample(prompts, seeds), sample(flips, seeds)
    img_reseed = sample(prompts, [s + 10_000 for s in seeds])
    (a, b), (fa, fb) = _centres(judge, img, prompts), _centres(judge, img_flip, flips)
    found = ~(np.isnan(a).any(1) | np.isnan(b).any(1) | np.isnan(fa).any(1) | np.isnan(fb).any(1))
    rel = [parse_caption(p).relation for p in prompts]
    along = np.array([relation_offsets(r, a[i], b[i])[0] for i, r in enumerate(rel)])
    along_flip = np.array([relation_offsets(OPPOSITE[r], fa[i], fb[i])[0] for i, r in enumerate(rel)])
    shown = np.array([relation_shown(r, a[i:i + 1], b[i:i + 1])[0] for i, r in enumerate(rel)])
    change = np.abs(img.astype(np.float32) - img_flip).mean()
    noise = np.abs(img.astype(np.float32) - img_reseed).mean()
    f = found
    return {"prompts": len(prompts), "both_found": int(f.sum()),
            "shown": float(shown[f].mean()) if f.any() else None,
            "side_right": float((along[f] > 0).mean()) if f.any() else None,
            "flip_follows": float(((along[f] > 0) & (along_flip[f] > 0)).mean()) if f.any() else None,
            "flip_pixel_change": float(change / noise) if noise > 0 else None}


@torch.no_grad()
def pure_noise_flip_change(pipe, prompts: list[str], n_noise: int = 8, seed: int = 0) -> float:
    """The ``pure_noise_flip_change`` ratio of the module docstring for one diffusers pipeline;
    ``n_noise`` (even, >= 2) noises per prompt, half of them against the other half for the
    noise change."""
    if n_noise < 2 or n_noise % 2:
        raise ValueError(f"n_noise={n_noise}; expected an even number >= 2")
    sched, tok, device = pipe.scheduler, pipe.tokenizer, pipe.unet.device
    kind = sched.config.prediction_type
    if kind not in ("v_prediction", "epsilon", "sample"):
        raise ValueError(f"prediction_type {kind!r}; expected v_prediction, epsilon or sample")
    t = sched.config.num_train_timesteps - 1
    alpha = sched.alphas_cumprod[t].to(device)
    gen = torch.Generator().manual_seed(seed)
    flip_change, noise_change = [], []
    for prompt in prompts:
        ids = tok([prompt, flipped(prompt)], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(device)
        states = pipe.text_encoder(ids).last_hidden_state.repeat_interleave(n_noise, 0)
        size = pipe.unet.config.sample_size
        noise = torch.randn((n_noise, pipe.unet.config.in_channels, size, size), generator=gen)
        x = torch.cat([noise, noise]).to(device, pipe.unet.dtype)
        out = pipe.unet(x, torch.full((len(x),), t, device=device), states).sample
        if kind == "v_prediction":
            x0 = alpha.sqrt() * x - (1 - alpha).sqrt() * out
        elif kind == "epsilon":  # alpha > 0: epsilon needs a schedule without a zero terminal SNR
            x0 = (x - (1 - alpha).sqrt() * out) / alpha.sqrt()
        else:
            x0 = out
        img = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
        flip_change.append((img[:n_noise] - img[n_noise:]).abs().mean().item())
        half = n_noise // 2
        noise_change.append((img[:half] - img[half:n_noise]).abs().mean().item())
    return float(np.mean(flip_change) / np.mean(noise_change))


def main() -> None:
    """CLI entry point: one JSON line per pipeline folder."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipelines", nargs="+", type=Path)
    p.add_argument("--judge", type=Path, default=Path("zoo/weights/judge"))
    p.add_argument("--n", type=int, default=100, help="pair prompts (selection split)")
    p.add_argument("--steps", type=int, default=SAMPLING["heavy"].steps)
    p.add_argument("--guidance-scale", type=float, default=SAMPLING["heavy"].guidance_scale)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.n < 1:
        p.error(f"--n {a.n}; expected at least 1 pair prompt")
    torch.set_num_threads(a.threads)
    judge, prompts = load_judge(a.judge), pair_prompts(a.n)
    for path in a.pipelines:
        pipe, sampling = load_pipeline(path), SamplingConfig(a.steps, a.guidance_scale)
        res = probe(lambda ps, ss: generate(pipe, ps, ss, sampling), judge, prompts)
        res["pure_noise_flip_change"] = pure_noise_flip_change(pipe, prompts[:min(len(prompts), 40)])
        print(json.dumps({"pipeline": str(path), **res}), flush=True)


if __name__ == "__main__":
    main()
