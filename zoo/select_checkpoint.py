"""Judge fidelity of training snapshots on the SELECTION prompt set (seed 123, the domain's
``select`` split): compositions that neither the training streams nor the report's evaluation
prompts (``eval`` split) contain, so that choosing a checkpoint neither rewards memorised
captions nor tunes on the reported numbers.

Usage: ``python -m zoo.select_checkpoint --role light --judge runs/tiny/judge runs/tiny/light_snap_*``
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from zoo.domain import HARD_KINDS, eval_prompts, parse_caption
from zoo.judge import load_judge
from zoo.sampling import SAMPLING, generate, load_pipeline
from zoo.text_baseline import hard_kind

SELECTION_PROMPT_SEED = 123


def main() -> None:
    """Print one JSON line per snapshot: fidelity on easy and hard selection prompts (and per hard kind)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--role", choices=sorted(SAMPLING), required=True)
    p.add_argument("--judge", type=Path, required=True)
    p.add_argument("--n-per-difficulty", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help="DDIM steps instead of the role's default (zoo.sampling.SAMPLING)")
    p.add_argument("snapshots", type=Path, nargs="+")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    judge = load_judge(a.judge)
    n = a.n_per_difficulty
    prompts = eval_prompts(SELECTION_PROMPT_SEED, n, split="select")
    kinds = np.array([hard_kind(parse_caption(q)) for q in prompts[n:]])
    sampling = SAMPLING[a.role] if a.steps is None else dataclasses.replace(SAMPLING[a.role], steps=a.steps)
    for snap in a.snapshots:
        ok = judge.fidelity(generate(load_pipeline(snap), prompts, list(range(len(prompts))), sampling), prompts)
        print(json.dumps({"snapshot": str(snap), "steps": sampling.steps, "fidelity_easy": float(ok[:n].mean()),
                          "fidelity_hard": float(ok[n:].mean()),
                          "fidelity_hard_by_kind": {k: float(ok[n:][kinds == k].mean()) for k in HARD_KINDS
                                                    if (kinds == k).any()}}), flush=True)


if __name__ == "__main__":
    main()
