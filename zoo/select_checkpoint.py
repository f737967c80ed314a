"""Judge fidelity of training snapshots on a SELECTION prompt set (seed 123, ``split="select"``), disjoint from the
report's (seed 2024), so that choosing a checkpoint does not tune on the reported numbers.

Usage: ``python -m zoo.select_checkpoint --role light --judge runs/tiny/judge runs/tiny/light_snap_*``
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from zoo.domain import eval_prompts
from zoo.judge import load_judge
from zoo.sampling import SAMPLING, generate, load_pipeline

SELECTION_PROMPT_SEED = 123


def main() -> None:
    """Print one JSON line per snapshot: fidelity on easy and hard selection prompts."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--role", choices=sorted(SAMPLING), required=True)
    p.add_argument("--judge", type=Path, required=True)
    p.add_argument("--n-per-difficulty", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("snapshots", type=Path, nargs="+")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    judge = load_judge(a.judge)
    n = a.n_per_difficulty
    prompts = eval_prompts(SELECTION_PROMPT_SEED, n, split="select")
    for snap in a.snapshots:
        ok = judge.fidelity(generate(load_pipeline(snap), prompts, list(range(len(prompts))), SAMPLING[a.role]),
                            prompts)
        print(json.dumps({"snapshot": str(snap), "fidelity_easy": float(ok[:n].mean()),
                          "fidelity_hard": float(ok[n:].mean())}), flush=True)


if __name__ == "__main__":
    main()
