"""Train the quality judge on real domain images only (with corruption augmentations).

The augmentations (blur, noise, colour and contrast shifts) make the judge read *what* is drawn
rather than the exact pixel statistics of real renders, so that it can judge generated images
without ever seeing one. Usage: ``python -m zoo.train_judge --out zoo/weights/judge``
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from zoo.common import optimizer_step, pick_device, seed_everything, to_tensor01, training_args
from zoo.domain import counts_vector, sample_batch
from zoo.judge import TinyJudge, save_judge


@dataclasses.dataclass(frozen=True)
class JudgeTrainConfig:
    """Training schedule of the judge."""

    steps: int = 1600
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 2


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random blur, Gaussian noise, brightness/contrast shift of [0, 1] NCHW images (per image)."""
    b = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=gen, device=x.device)  # noqa: E731
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = r(b, 1, 1, 1) * (r(b, 1, 1, 1) < 0.3)
    x = x * (1 - mix) + blurred * mix
    x = x + torch.randn(x.shape, generator=gen, device=x.device) * 0.04 * r(b, 1, 1, 1)
    x = (x - 0.5) * (0.85 + 0.3 * r(b, 1, 1, 1)) + 0.5 + (r(b, 3, 1, 1) - 0.5) * 0.1
    return x.clamp(0, 1)


def train_judge(cfg: JudgeTrainConfig, out: Path, device: torch.device) -> dict:
    """Train and save the judge; returns its count accuracy on 2000 held-out real images."""
    rng = seed_everything(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    judge = TinyJudge().to(device)
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    for step in (bar := tqdm(range(cfg.steps), desc="judge")):
        images, _, scenes = sample_batch(rng, cfg.batch_size, hard_share=0.6)
        x = augment(to_tensor01(images, device), gen)
        y = torch.from_numpy(np.stack([counts_vector(s) for s in scenes])).to(device)
        logits = judge(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer_step(loss, opt, sched)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    judge = judge.cpu().eval()
    images, captions, scenes = sample_batch(seed_everything(cfg.seed + 1000), 2000, hard_share=0.5)
    ok = judge.fidelity(images, captions)
    hard = np.array([s.difficulty == "hard" for s in scenes])
    save_judge(judge, out)
    return {"real_fidelity_easy": float(ok[~hard].mean()), "real_fidelity_hard": float(ok[hard].mean())}


def main() -> None:
    """CLI entry point."""
    a = training_args(__doc__, JudgeTrainConfig)
    print(json.dumps(train_judge(JudgeTrainConfig(steps=a.steps, seed=a.seed), a.out, pick_device(a.device))))


if __name__ == "__main__":
    main()
