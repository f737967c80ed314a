"""How hybrid routing picks its router share r at a heavy share h, from CALIBRATION prompts only.

Every function here is pure: it takes ``served_ok``, a bool (R, N) matrix whose row i says, for
each of N calibration prompts, whether the served image is correct when the router sends share
``candidates[i]`` straight to heavy (and the discriminator defers the rest of the heavy share h).
``candidates`` always holds 0 (discriminator-only) first and h (router-only) last.

Why the plain argmax (the first rule, :func:`argmax_smallest`) lost on the v1 cascade: above
h ~ 0.7 the calibration fidelity surface is flat at heavy's own ceiling (0.993 at every r from
0.05 to 0.90 at h = 0.90 on the 1,000 calibration prompts: every light failure is already
caught), so the argmax picks noise, and its tie-break (the smaller r) picks the most expensive
of the equals. Choosing on a random half of those prompts and checking on the other half
(:func:`half_split_check`, 50 splits stratified by difficulty, 17 heavy shares 0.10-0.90) left the
argmax behind the better of router-only and discriminator-only at 5.1 shares per split, with a
mean margin of -0.69 per 1,000 prompts: worse than not mixing at all.

The rule that won on the v1 cascade (:func:`within_one_se_largest`): among the candidates whose calibration fidelity is
within one binomial standard error sqrt(f (1 - f) / N) of the best one f, take the LARGEST r.
Within one standard error the calibration set cannot tell the candidates apart, and a larger r is
strictly cheaper at the same heavy share: routed prompts skip the light model and the
discriminator. Same check: behind at 0.74 shares per split, strictly ahead at 3.70, mean margin
+0.84 per 1,000. Alternatives measured the same way: argmax with ties to the larger r (3.02
behind, -0.01 per 1,000), one standard error of the paired difference to the best candidate
(0.96 behind, +0.72), and every rule on a 0.01 grid of r (more candidates, more noise picked:
one-SE 1.24 behind, +0.36; argmax 7.16 behind, -1.24), so the grid stays at 0.05. All of this
was measured on the calibration set alone, before the evaluation curves at the committed sizes
were computed; hybrid.json records the bootstrap and half-split numbers of both kept rules
(``router_share_selection``). The winner depends on the surface (on the v2 cascade, whose heavy
model is often wrong, the argmax wins the same check), so :func:`choose_rule` picks the rule per
cascade from its own calibration half splits.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

ROUTER_SHARE_STEP = 0.05

Rule = Callable[[np.ndarray, np.ndarray], float]


def candidate_router_shares(heavy_share: float, step: float = ROUTER_SHARE_STEP) -> np.ndarray:
    """0, step, 2 step, ... up to h, and h itself: discriminator-only first, router-only last."""
    if not 0.0 <= heavy_share <= 1.0:
        raise ValueError(f"heavy_share={heavy_share}; expected a share in [0, 1]")
    if not 0.0 < step <= 1.0:
        raise ValueError(f"step={step}; expected a router-share step in (0, 1]")
    grid = np.round(np.arange(0.0, heavy_share + 1e-9, step), 4)
    return grid if abs(grid[-1] - heavy_share) < 1e-9 else np.append(grid, round(heavy_share, 4))


def _check(candidates: np.ndarray, served_ok: np.ndarray) -> np.ndarray:
    served_ok = np.asarray(served_ok)
    if served_ok.ndim != 2 or served_ok.shape[0] != len(candidates) or served_ok.shape[1] == 0:
        raise ValueError(f"served_ok has shape {served_ok.shape}; expected ({len(candidates)}, N >= 1): "
                         "one row per candidate router share, one column per calibration prompt")
    return served_ok


def argmax_smallest(candidates: np.ndarray, served_ok: np.ndarray) -> float:
    """The first rule: the best calibration fidelity, ties to the smaller r (picks noise on a flat surface)."""
    fidelity = _check(candidates, served_ok).mean(axis=1)
    return float(candidates[int(np.argmax(fidelity))])


def within_one_se_largest(candidates: np.ndarray, served_ok: np.ndarray) -> float:
    """The largest r whose calibration fidelity is within one binomial standard error of the best."""
    served_ok = _check(candidates, served_ok)
    fidelity = served_ok.mean(axis=1)
    best = fidelity.max()
    standard_error = np.sqrt(best * (1.0 - best) / served_ok.shape[1])
    return float(candidates[np.flatnonzero(fidelity >= best - standard_error - 1e-12)[-1]])


RULES: dict[str, Rule] = {"within_one_se_largest": within_one_se_largest, "argmax_smallest": argmax_smallest}
RULE = "within_one_se_largest"  # the preferred rule (cheaper splits) when the check cannot tell them apart


def choose_rule(half_splits: dict[str, dict]) -> str:
    """The rule for THIS cascade, from its calibration set's :func:`half_split_check` results (one per
    rule name): fewest shares behind the better baseline, then the larger mean margin, then
    :data:`RULES` order (:data:`RULE` first). Why per cascade: which rule wins depends on the surface;
    the one-SE rule won on the v1 tiny cascade (heavy near-perfect, a flat surface) and lost on v2
    (heavy right on 37 % of hard prompts, a sloped one: 16.0 shares behind per split vs 2.9)."""
    unknown = set(half_splits) - set(RULES)
    if unknown or not half_splits:
        raise ValueError(f"half_splits names {sorted(half_splits)}; expected a non-empty subset of {sorted(RULES)}")
    order = list(RULES)
    return min(half_splits, key=lambda name: (half_splits[name]["shares_behind_per_split"],
                                              -half_splits[name]["mean_margin_over_better_baseline"],
                                              order.index(name)))


def bootstrap_choices(candidates: np.ndarray, served_ok: np.ndarray, rule: Rule, n_boot: int = 200,
                      seed: int = 0) -> np.ndarray:
    """r chosen by ``rule`` on ``n_boot`` resamples (with replacement) of the calibration prompts."""
    served_ok = _check(candidates, served_ok)
    rng = np.random.default_rng(seed)
    n = served_ok.shape[1]
    return np.array([rule(candidates, served_ok[:, rng.integers(0, n, n)]) for _ in range(n_boot)])


def half_split_check(per_share: list[tuple[np.ndarray, np.ndarray]], rule: Rule, strata: np.ndarray,
                     n_splits: int = 50, seed: int = 0) -> dict:
    """Choose r on a random half of the calibration prompts (stratified by ``strata``), score it on the
    other half against the better of r = 0 and r = h, at every heavy share; averaged over splits.

    ``per_share``: one (candidates, served_ok) pair per heavy share, all over the same N prompts.
    Returns the mean number of shares per split where the choice is behind / strictly ahead of the
    better baseline, and the mean margin (chosen - better baseline) in fidelity.
    """
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    behind = ahead = margin = 0.0
    for _ in range(n_splits):
        first = np.zeros(len(strata), bool)
        for value in np.unique(strata):
            members = rng.permutation(np.flatnonzero(strata == value))
            first[members[: len(members) // 2]] = True
        for candidates, served_ok in per_share:
            chosen = rule(candidates, _check(candidates, served_ok)[:, first])
            held_out = served_ok[:, ~first].mean(axis=1)
            score, better = held_out[int(np.flatnonzero(candidates == chosen)[0])], max(held_out[0], held_out[-1])
            behind += score < better - 1e-12
            ahead += score > better + 1e-12
            margin += score - better
    return {"n_splits": n_splits, "shares_behind_per_split": behind / n_splits,
            "shares_strictly_ahead_per_split": ahead / n_splits,
            "mean_margin_over_better_baseline": margin / (n_splits * len(per_share))}
