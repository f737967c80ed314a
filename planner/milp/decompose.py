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

ROUTER_CHUNK = 16  # first chunk of a pair's choices with the router (then 32, 64, ...)


def choice_groups(opts: CascadeOptions, kept: list[Choice], weights: TieWeights) -> tuple[list[list[Choice]], list[int]]:
    """The groups of choices to solve as separate models, in solve order, and each group's bound
    (the best objective it could reach, ``N min Q`` scaled; unused with one group over every pair).

    With the router (``spec.router``) a pair's choices are also cut, in order of their FID, into
    chunks of :data:`ROUTER_CHUNK` x 1, 2, 4, ... choices: a chunk is a group like a pair (its
    stages alone carry its objective, and its bound is its best FID), so the search stops at the
    first chunk whose bound cannot beat the incumbent, and each proof covers a chunk, not the
    11 x 11 surface (measured: ``benchmarks/bench_planner.py --hybrid``)."""
    if opts.spec.objective != "min_fid" or not opts.spec.decompose_pairs:
        return [kept], [0]
    by_pair: dict[Pair, list[Choice]] = {}
    for choice in kept:
        by_pair.setdefault(choice[0], []).append(choice)

    def fid_bound(choice: Choice) -> int:
        return opts.gpus * int(round(opts.grids[choice[0]][choice[1]].fid * FID_SCALE)) * weights.fid_weight

    groups: list[list[Choice]] = []
    for group in by_pair.values():
        if not opts.spec.router:
            groups.append(group)
            continue
        ranked, size = sorted(group, key=fid_bound), ROUTER_CHUNK
        while ranked:
            groups.append(ranked[:size])
            ranked, size = ranked[size:], 2 * size
    bounds = [min(fid_bound(c) for c in g) for g in groups]
    order = sorted(range(len(groups)), key=lambda i: bounds[i])
    return [groups[i] for i in order], [bounds[i] for i in order]


def solve_groups(
    opts: CascadeOptions, groups: list[list[Choice]], bounds: list[int], weights: TieWeights, t0: float
) -> tuple[GroupSolution | None, bool]:
    """Solve the groups in order within the spec's time limit (counted from ``t0``).

    Returns the best solution (None when none was found) and whether the result is proven:
    every group solved to optimality or proved infeasible, none skipped for time.
    """
    best: GroupSolution | None = None
    proven = True
    for group, bound in zip(groups, bounds):
        if best is not None and bound >= best.objective:
            break  # sorted by bound: no later group can beat the incumbent either
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
