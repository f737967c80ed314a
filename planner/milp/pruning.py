"""Exact reductions of the cascade MILP, applied before any model is built.

None of them removes a feasible plan that could be optimal:

- a batch size slower than the SLO is never an option (:mod:`planner.milp.options`);
- a light option whose ``cmin`` (fewest GPUs its queueing estimate assumes) exceeds ``N``, or
  whose latency alone breaks the SLO, is dropped; of light options with equal ``(b, cmin)``
  (hence equal wait) only the loosest ``rho`` is kept (its capacity constraint (C5) is the
  weakest, everything else equal);
- a heavy option that breaks the SLO alone at every rate the stage may see is dropped;
- a ``(p, k)`` whose cheapest light and heavy options alone (fewest GPUs, lowest latency, each a
  lower bound of what the MILP can achieve, since it rounds against itself) already break (C7)
  or (C8) gets no ``z`` variable (:func:`feasible_choices`).

In (C8), options that alone exceed the SLO at the stage's rate are excluded by
``z[p,k] => sum y = 0`` instead of a huge coefficient (:mod:`planner.milp.model`). For heavy
stages ``cmin = 1`` in (C4): (C6) at level ``rho`` already forces the GPUs the wait estimate
assumes.
"""
from __future__ import annotations

import math

from planner.milp.options import CascadeOptions, StageOption
from planner.milp.spec import HEAVY, LIGHT, Choice, Stage


def _light_options(opts: CascadeOptions, stage: Stage) -> list[StageOption]:
    """Usable light options, one per (batch, min_gpus): the one with the loosest ``rho``."""
    rate_qps = opts.light_rate_qps(stage[0])
    best: dict[tuple[int, int], StageOption] = {}
    for o in opts.stages[stage]:
        if o.min_gpus <= opts.gpus and opts.stage_ms(stage, o, rate_qps) <= opts.inst.slo_ms:
            key = (o.batch, o.min_gpus)  # same GPU floor, same wait: keep the loosest rho
            if key not in best or o.rho > best[key].rho:
                best[key] = o
    return list(best.values())


def prune_options(opts: CascadeOptions) -> CascadeOptions:
    """``opts`` without the stage options that cannot be used, and with equivalent ones merged."""
    slo_ms = opts.inst.slo_ms
    stages = {}
    for stage, options in opts.stages.items():
        if stage[1] == LIGHT:
            stages[stage] = _light_options(opts, stage)
        else:
            stages[stage] = [o for o in options if any(opts.stage_ms(stage, o, lam) <= slo_ms for lam in opts.rates[stage])]
    return CascadeOptions(opts.inst, opts.spec, opts.grids, opts.rates, stages, opts.fixed_ms)


def stage_floor(opts: CascadeOptions, stage: Stage, rate_qps: float) -> tuple[int, float]:
    """Fewest GPUs and lowest latency (ms) any single option of ``stage`` needs at ``rate_qps``.

    Both are lower bounds of what the MILP can achieve (it rounds against itself), so a
    (pair, threshold) whose floors already break (C7) or (C8) is left out of the model.
    """
    gpus = opts.gpus
    best_gpus, best_ms = gpus + 1, math.inf
    for o in opts.stages[stage]:
        x = max(o.min_gpus, math.ceil(rate_qps / (o.rho * o.mu_qps) - 1e-9)) if rate_qps > 0 else o.min_gpus
        ms = opts.stage_ms(stage, o, rate_qps, x) if x <= gpus else math.inf
        if ms <= opts.inst.slo_ms:
            best_gpus, best_ms = min(best_gpus, x), min(best_ms, ms)
    return best_gpus, best_ms


def feasible_choices(opts: CascadeOptions) -> list[Choice]:
    """The (pair, threshold index) choices whose stage floors fit the GPUs and the SLO."""
    floors: dict[tuple[Stage, float], tuple[int, float]] = {}

    def floor_of(stage: Stage, rate_qps: float) -> tuple[int, float]:
        if (stage, rate_qps) not in floors:
            floors[(stage, rate_qps)] = stage_floor(opts, stage, rate_qps)
        return floors[(stage, rate_qps)]

    kept = []
    for pair, grid in opts.grids.items():
        light_gpus, light_ms = floor_of((pair[0], LIGHT), opts.light_rate_qps(pair[0]))
        for k, pt in enumerate(grid):
            heavy_gpus, heavy_ms = floor_of((pair[1], HEAVY), opts.heavy_rate_qps(pair[1], pt.f)) if pt.f > 0 else (0, 0.0)
            if light_gpus + heavy_gpus <= opts.gpus and light_ms + heavy_ms <= opts.inst.slo_ms:
                kept.append((pair, k))
    return kept
