"""Train the tiny cascade's prompt router (``serving.router``) from prompt text only.

Labels: for each training prompt, whether the judge finds the LIGHT model's image wrong (the
router predicts where light fails; :meth:`zoo.judge.TinyJudge.fidelity`: objects, counts, sizes and
the stated relation). Prompts come from a seeded stream of their own (seed 31337) of the domain's
``train`` split, so the router never sees a composition of the calibration prompts (``select``
split) or of the report's evaluation prompts (``eval`` split). Usage::

    python -m zoo.train_router --out zoo/weights/router [--prompts 3000]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from serving.router import fit_router
from zoo.domain import sample_scene

TRAIN_SEED = 31337
WEIGHTS = Path(__file__).resolve().parent / "weights"


def training_prompts(seed: int, n: int, hard_share: float = 0.5) -> list[str]:
    """``n`` seeded prompts of the ``train`` split, each hard with probability ``hard_share``."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, "hard" if rng.random() < hard_share else "easy", split="train")[0] for _ in range(n)]


def light_fails(prompts: list[str], seeds: list[int], weights: Path = WEIGHTS) -> np.ndarray:
    """bool (N,): the judge finds the light model's image of the prompt wrong."""
    from zoo.judge import load_judge  # noqa: PLC0415
    from zoo.sampling import SAMPLING, generate, load_pipeline  # noqa: PLC0415

    images = generate(load_pipeline(weights / "light"), prompts, seeds, SAMPLING["light"], progress=True)
    return ~load_judge(weights / "judge").fidelity(images, prompts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS / "router")
    ap.add_argument("--prompts", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=TRAIN_SEED)
    args = ap.parse_args(argv)
    prompts = training_prompts(args.seed, args.prompts)
    labels = light_fails(prompts, list(range(args.prompts)))
    router = fit_router(prompts, labels)
    router.save(args.out)
    score = router.score(prompts)
    from zoo.train_discriminator import roc_auc  # noqa: PLC0415

    print(json.dumps({"prompts": len(prompts), "light_fail_rate": float(labels.mean()),
                      "train_auc": roc_auc(score, labels.astype(float)), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
