"""Train the tiny AutoencoderKL (32x32x3 <-> 16x16x4) on domain images; reproducible from a seed.

Usage: ``python -m zoo.train_vae --out runs/tiny/vae --steps 800``
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from zoo.common import optimizer_step, pick_device, seed_everything, to_tensor01, training_args
from zoo.domain import sample_batch
from zoo.models import VAEConfig, build_vae


@dataclasses.dataclass(frozen=True)
class VAETrainConfig:
    """Training schedule; the KL weight is tiny, as in Stable Diffusion's VAE."""

    steps: int = 700
    batch_size: int = 64
    lr: float = 1e-3
    kl_weight: float = 1e-6
    seed: int = 1


def train_vae(cfg: VAETrainConfig, out: Path, device: torch.device) -> dict:
    """Train, set ``scaling_factor`` to 1/std of the latents, save with ``save_pretrained``.

    Returns metrics: final reconstruction MSE on [-1, 1] (held-out batch) and the scaling factor.
    """
    rng = seed_everything(cfg.seed)
    vae = build_vae(VAEConfig()).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    log = open(out.parent / f"{out.name}.log.jsonl", "a")
    for step in (bar := tqdm(range(cfg.steps), desc="vae")):
        images, _, _ = sample_batch(rng, cfg.batch_size, hard_share=0.5)
        x = to_tensor01(images, device) * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = torch.nn.functional.mse_loss(rec, x)
        loss = mse + cfg.kl_weight * post.kl().mean()
        optimizer_step(loss, opt, sched)
        if step % 50 == 0 or step == cfg.steps - 1:
            bar.set_postfix(mse=f"{mse.item():.4f}")
            log.write(json.dumps({"step": step, "mse": mse.item(), "time": time.time()}) + "\n")
            log.flush()
    vae.eval()
    with torch.no_grad():
        images, _, _ = sample_batch(seed_everything(cfg.seed + 1000), 256)
        x = to_tensor01(images, device) * 2 - 1
        z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        held_out_mse = torch.nn.functional.mse_loss(rec, x).item()
        scaling = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=scaling)
    vae.to("cpu").save_pretrained(out)
    return {"held_out_mse": held_out_mse, "scaling_factor": scaling}


def main() -> None:
    """CLI entry point."""
    a = training_args(__doc__, VAETrainConfig)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    metrics = train_vae(VAETrainConfig(steps=a.steps, seed=a.seed), a.out, pick_device(a.device))
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
