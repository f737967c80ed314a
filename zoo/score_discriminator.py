"""Score discriminators on the SELECTION prompt set (seed 123, ``split="select"``): ROC AUC of their confidence for
"the light image is correct" (the judge decides), overall and on hard prompts, and at how many
deferral shares (10 %, 15 %, ..., 90 %) routing by it beats random routing when heavy is right.

Usage: ``python -m zoo.score_discriminator --light zoo/weights/light DISC [DISC ...]``
Prints one JSON line per discriminator folder.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from export.discriminators import load_discriminator
from zoo.common import to_tensor01
from zoo.domain import eval_prompts
from zoo.judge import load_judge
from zoo.metrics import cascade_curves
from zoo.sampling import SAMPLING, generate, load_pipeline
from zoo.select_checkpoint import SELECTION_PROMPT_SEED
from zoo.train_discriminator import roc_auc


def main() -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--light", type=Path, default=Path("zoo/weights/light"))
    p.add_argument("--judge", type=Path, default=Path("zoo/weights/judge"))
    p.add_argument("--n-per-difficulty", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("discriminators", type=Path, nargs="+")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    n = a.n_per_difficulty
    prompts = eval_prompts(SELECTION_PROMPT_SEED, n, split="select")
    images = generate(load_pipeline(a.light), prompts, list(range(len(prompts))), SAMPLING["light"])
    ok = load_judge(a.judge).fidelity(images, prompts)
    for folder in a.discriminators:
        with torch.no_grad():
            conf = load_discriminator(folder)(to_tensor01(images)).numpy()
        curves = cascade_curves(ok, np.ones(len(ok), bool), conf)  # heavy counted as right
        wins = [d > r for s, d, r in zip(curves["share"], curves["discriminator"], curves["random"]) if 0.1 <= s <= 0.9]
        print(json.dumps({"discriminator": str(folder), "light_fidelity_easy": float(ok[:n].mean()),
                          "light_fidelity_hard": float(ok[n:].mean()), "auc_light_correct": roc_auc(conf, ok),
                          "auc_light_correct_hard": roc_auc(conf[n:], ok[n:]),
                          "beats_random_at": f"{sum(wins)}/{len(wins)} shares 10-90%"}), flush=True)


if __name__ == "__main__":
    main()
