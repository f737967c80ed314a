"""Train the quality judge on rendered domain images only (with corruption augmentations).

Training scenes are grammar scenes of every split plus free object sets (1-4 objects of any
colour, shape and size, duplicates included), so the judge learns to count and locate whatever
is drawn, extra objects included, not just what captions say. The augmentations (blur, noise,
colour and contrast shifts) make it read *what* is drawn rather than the exact pixel statistics
of renders, so that it can judge generated images without ever seeing one.
Usage: ``python -m zoo.train_judge --out zoo/weights/judge``
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
from zoo.domain import (DIFFICULTIES, IMAGE_SIZE_PX, MAX_COUNT, OBJECT_TYPES, Scene, draw_scene, place,
                        render_objects, sample_batch)
from zoo.judge import TinyJudge, save_judge


@dataclasses.dataclass(frozen=True)
class JudgeTrainConfig:
    """Training schedule of the judge; ``free_share`` of the scenes are free object sets."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    free_share: float = 0.6
    object_cell_weight: float = 5.0
    seed: int = 2


def _free_scene(rng: np.random.Generator) -> Scene:
    n = int(rng.integers(1, MAX_COUNT + 1))
    objs = [OBJECT_TYPES[rng.integers(len(OBJECT_TYPES))] for _ in range(n)]
    for i in range(1, n):  # duplicates, so counts of 2-4 of one kind are seen
        if rng.random() < 0.3:
            objs[i] = objs[rng.integers(i)]
    return Scene("black", tuple(objs))


def centre_cells(objects, positions_px, grid: int, n_types: int) -> np.ndarray:
    """Per cell of a ``grid`` x ``grid`` lattice, the index in OBJECT_TYPES of the object whose centre
    falls in it, ``n_types`` (no object) elsewhere; int64 (grid, grid) indexed [y, x]."""
    out = np.full((grid, grid), n_types, np.int64)
    cell = IMAGE_SIZE_PX / grid
    for obj, (px, py) in zip(objects, positions_px):
        out[min(int(py // cell), grid - 1), min(int(px // cell), grid - 1)] = OBJECT_TYPES.index(obj)
    return out


def judge_batch(rng: np.random.Generator, n: int, free_share: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, 32, 32, 3) and target cell labels int64 (n, grid, grid) (:func:`centre_cells`)."""
    images = np.empty((n, IMAGE_SIZE_PX, IMAGE_SIZE_PX, 3), np.uint8)
    labels = np.empty((n, grid, grid), np.int64)
    backgrounds = ("black", "gray", "white")
    for i in range(n):
        if rng.random() < free_share:
            scene = Scene(backgrounds[rng.integers(3)], _free_scene(rng).objects)
        else:
            scene = draw_scene(rng, DIFFICULTIES[rng.integers(2)])
        pos = place(scene, rng)
        images[i] = render_objects(scene.background, scene.objects, pos, rng)
        labels[i] = centre_cells(scene.objects, pos, grid, len(OBJECT_TYPES))
    return images, labels


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
    """Train and save the judge; returns its fidelity on 2000 held-out renders of the eval split."""
    rng = seed_everything(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    judge = TinyJudge().to(device)
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    class_weight = torch.ones(len(OBJECT_TYPES) + 1, device=device)
    class_weight[:-1] = cfg.object_cell_weight
    for step in (bar := tqdm(range(cfg.steps), desc="judge")):
        images, labels = judge_batch(rng, cfg.batch_size, cfg.free_share, judge.grid)
        logits = judge(augment(to_tensor01(images, device), gen))
        # Object cells are ~3 of 64: weight them up so "no centre anywhere" is not a cheap optimum.
        loss = F.cross_entropy(logits, torch.from_numpy(labels).to(device), weight=class_weight)
        optimizer_step(loss, opt, sched)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    judge = judge.cpu().eval()
    images, captions, scenes = sample_batch(seed_everything(cfg.seed + 1000), 2000, hard_share=0.5, split="eval")
    ok = judge.check(images, scenes)["faithful"]
    hard = np.array([s.difficulty == "hard" for s in scenes])
    save_judge(judge, out)
    return {"render_fidelity_easy": float(ok[~hard].mean()), "render_fidelity_hard": float(ok[hard].mean())}


def main() -> None:
    """CLI entry point."""
    a = training_args(__doc__, JudgeTrainConfig)
    print(json.dumps(train_judge(JudgeTrainConfig(steps=a.steps, seed=a.seed), a.out, pick_device(a.device))))


if __name__ == "__main__":
    main()
