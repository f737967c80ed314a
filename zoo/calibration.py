"""The tiny cascade's calibration plug-ins, named in ``configs/tiny.yaml`` (``calibration:``).

``make calibrate`` (``export.calibrate``) loads them by their ``module:function`` names, so export
never imports the zoo: a real cascade names its own prompt source and quality metric instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

JUDGE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "judge"


def held_apart_prompts(seed: int, count: int) -> list[str]:
    """``count`` seeded prompts of the domain's ``select`` split (half easy, half hard): compositions
    seen neither in training nor in the report's ``eval`` prompts, so calibrating the planner on
    them does not tune it on the numbers it is judged by."""
    from zoo.domain import eval_prompts  # noqa: PLC0415

    return eval_prompts(seed, (count + 1) // 2, split="select")[:count]


def judge_fid(prompts: Sequence[str], seed: int,
              judge_path: Path = JUDGE_WEIGHTS) -> tuple[Callable[[np.ndarray], float] | None, str]:
    """FID vs the domain's rendering of the same captions, in the judge's feature space (or None, reason)."""
    from zoo import domain, metrics  # noqa: PLC0415
    from zoo.judge import load_judge  # noqa: PLC0415

    if not judge_path.exists():
        return None, f"no judge weights at {judge_path} (train them with `make zoo` first)"
    judge = load_judge(judge_path)
    rng = np.random.default_rng(seed + 1)
    real = np.stack([domain.render(domain.parse_caption(p), rng) for p in prompts])
    real_features = judge.features(real)
    return (lambda images: metrics.fid(judge.features(images), real_features)), "judge in-domain FID"
