"""Splitting the cascade MILP by pair, and the search over the pieces.

``min_fid`` with several pairs: by (C1) the pairs share no decision, and a pair's stages alone
carry its objective (other stages are forced to 0 by (C2)-(C4), so they add no move cost and no
tie-break), so the optimum is the best of the per-pair optima. Each pair is solved as its own
model, in order of its bound ``N min_k Q[p,k]`` (no move cost, no ties), and a pair whose bound
cannot beat the incumbent's objective is not built at all. Tie-break weights are computed over
every stage (:func:`planner.milp.model.tie_weights`), so objective values of different pairs
compare exactly as in the one model over all pairs. ``max_threshold`` ranks thresholds across
pairs in one objective: one model.
"""
from __future__ import annotations

import time

from ortools.sat.python import cp_model

from planner.milp.decode import GroupSolution, decode_solution
from planner.milp.model import TieWeights, build_group_model, solve_group_model
from planner.milp.options import CascadeOptions
from planner.milp.spec import FID_SCALE, Choice, Pair


def choice_groups(opts: CascadeOptions, kept: list[Choice], weights: TieWeights) -> tuple[list[list[Choice]], dict[Pair, int]]:
    """The groups of choices to solve as separate models, in solve order, and each pair's bound
    (the best objective it could reach; empty when there is one group over every pair)."""
    if opts.spec.objective != "min_fid" or not opts.spec.decompose_pairs:
        return [kept], {}
    by_pair: dict[Pair, list[Choice]] = {}
    for choice in kept:
        by_pair.setdefault(choice[0], []).append(choice)
    bound = {
        p: opts.gpus * min(int(round(opts.grids[p][k].fid * FID_SCALE)) for _, k in group) * weights.fid_weight
        for p, group in by_pair.items()
    }
    return sorted(by_pair.values(), key=lambda group: bound[group[0][0]]), bound


def solve_groups(
    opts: CascadeOptions, groups: list[list[Choice]], bound: dict[Pair, int], weights: TieWeights, t0: float
) -> tuple[GroupSolution | None, bool]:
    """Solve the groups in order within the spec's time limit (counted from ``t0``).

    Returns the best solution (None when none was found) and whether the result is proven:
    every group solved to optimality or proved infeasible, none skipped for time.
    """
    best: GroupSolution | None = None
    proven = True
    for group in groups:
        if best is not None and bound[group[0][0]] >= best.objective:
            break  # sorted by bound: no later pair can beat the incumbent either
        left_s = opts.spec.time_limit_s - (time.perf_counter() - t0)
        if left_s <= 0:
            proven = False
            break
        gm = build_group_model(opts, group, weights)
        status, solver = solve_group_model(opts, gm, left_s)
        if status == cp_model.INFEASIBLE:
            continue
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            proven = False
            continue
        proven = proven and status == cp_model.OPTIMAL
        solution = decode_solution(opts, gm, solver)
        if best is None or solution.objective < best.objective:  # ties: the earlier (better-bound) pair
            best = solution
    return best, proven
