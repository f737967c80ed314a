"""Exact reductions of the cascade MILP, applied before any model is built.

None of them removes a feasible plan that could be optimal:

- a batch size slower than the SLO is never an option (:mod:`planner.milp.options`);
- a light option whose ``cmin`` (fewest GPUs its queueing estimate assumes) exceeds ``N``, or
  whose latency alone breaks the SLO, at every rate the stage may see is dropped; of light
  options with equal ``b`` and equal ``cmin`` at each of those rates (hence equal waits) only the
  loosest ``rho`` is kept (its capacity constraint (C5) is the weakest, everything else equal);
- a heavy option that breaks the SLO alone at every rate the stage may see is dropped;
- with the router only: an option that another option of its stage and level dominates
  (:func:`_undominated`) is dropped;
- a ``(p, k)`` whose cheapest light and heavy options alone (fewest GPUs, lowest latency, each a
  lower bound of what the MILP can achieve, since it rounds against itself) already break (C7)
  or (C8) gets no ``z`` variable (:func:`feasible_choices`); the latencies add up only when some
  queries pass both models (``f > r``), else each stage alone must fit.

In (C8), options that alone exceed the SLO at the stage's rate are excluded by
``z[p,k] => sum y = 0`` instead of a huge coefficient (:mod:`planner.milp.model`). For heavy
stages ``cmin = 1`` in (C4): (C6) at level ``rho`` already forces the GPUs the wait estimate
assumes.
"""
from __future__ import annotations

import math

import numpy as np

from planner.milp.options import CascadeOptions, StageOption
from planner.milp.spec import HEAVY, LIGHT, Choice, Stage


def _light_options(opts: CascadeOptions, stage: Stage) -> list[StageOption]:
    """Usable light options, one per (batch, GPU floor at each rate): the one with the loosest ``rho``."""
    prof, queue, rates = opts.inst.model(stage[0]), opts.spec.queue, opts.rates[stage]
    best: dict[tuple, StageOption] = {}
    for o in opts.stages[stage]:
        floors = tuple(queue.min_gpus(prof, o.batch, o.rho, lam) for lam in rates) if len(rates) > 1 else (o.min_gpus,)
        row = opts.prices[stage].row(o)
        if any(c <= opts.gpus and ms <= opts.inst.slo_ms for c, ms in zip(floors, row.tolist())):
            key = (o.batch, floors)  # same GPU floors, same waits: keep the loosest rho
            if key not in best or o.rho > best[key].rho:
                best[key] = o
    return list(best.values())


def _undominated(opts: CascadeOptions, stage: Stage, options: list[StageOption]) -> list[StageOption]:
    """``options`` without those another option of the same level ``rho`` dominates: a smaller
    batch (no more fill wait, no longer tie-break) with at least its capacity, at most its GPU
    floor and at most its latency at every rate. A plan on the dominated option is as good on the
    other one with the same GPUs (no constraint tighter, objective no higher), so the optimum stays.
    With a batch rule of constant throughput above batch 1 (HADIS's), 32 batches become 2."""
    if len(options) < 2:
        return options
    prices, prof = opts.prices[stage], opts.inst.model(stage[0])
    kept: list[StageOption] = []
    for rho in dict.fromkeys(o.rho for o in options):
        level = [o for o in options if o.rho == rho]
        rows = np.array([prices.row(o) for o in level]).reshape(len(level), -1)
        col = lambda values: np.array(values)[:, None]  # noqa: E731 - option i (rows) against option j (columns)
        batch, cap, cmin = col([o.batch for o in level]), col([o.cap_mq for o in level]), col([o.min_gpus for o in level])
        tie_ms = col([round(prof.latency_ms(o.batch)) for o in level])
        # dominates[i, j]: option i dominates option j; the relation is transitive, so an option
        # dominated by a dropped one is also dominated by a kept one.
        dominates = ((batch < batch.T) & (cap >= cap.T) & (cmin <= cmin.T) & (tie_ms <= tie_ms.T)
                     & (rows[:, None, :] <= rows[None, :, :]).all(axis=2))
        kept += [o for o, dominated in zip(level, dominates.any(axis=0)) if not dominated]
    order = {id(o): i for i, o in enumerate(options)}
    return sorted(kept, key=lambda o: order[id(o)])


def prune_options(opts: CascadeOptions) -> CascadeOptions:
    """``opts`` without the stage options that cannot be used, and with equivalent ones merged;
    with the router (``spec.router``: many rates per stage) also without dominated options
    (:func:`_undominated`; the cascade-only policies keep theirs, so their plans stay as they were)."""
    slo_ms = opts.inst.slo_ms
    stages = {}
    for stage, options in opts.stages.items():
        if stage[1] == LIGHT:
            stages[stage] = _light_options(opts, stage)
        else:
            prices = opts.prices[stage]
            stages[stage] = [o for o in options if bool((prices.row(o) <= slo_ms).any())]
        if opts.spec.router:
            stages[stage] = _undominated(opts, stage, stages[stage])
    return CascadeOptions(opts.inst, opts.spec, opts.grids, opts.rates, stages, opts.prices)


def stage_floors(opts: CascadeOptions, stage: Stage) -> dict[float, tuple[int, float]]:
    """Per rate the stage may see: the fewest GPUs and the lowest latency (ms) any single option
    of ``stage`` needs there (vectorized over options and rates).

    Both are lower bounds of what the MILP can achieve (it rounds against itself), so a
    (pair, threshold) whose floors already break (C7) or (C8) is left out of the model.
    """
    gpus, options, rates = opts.gpus, opts.stages[stage], opts.rates[stage]
    if not options or not rates:
        return {lam: (gpus + 1, math.inf) for lam in rates}
    col = lambda values: np.array(values, dtype=np.float64)[:, None]  # noqa: E731
    cmin, rho, mu, batch = (col([getattr(o, k) for o in options]) for k in ("min_gpus", "rho", "mu_qps", "batch"))
    lam = np.array(rates, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(lam > 0, np.maximum(cmin, np.ceil(lam / (rho * mu) - 1e-9)), cmin)
        fixed = opts.prices[stage].ms[[opts.prices[stage].option_row[o] for o in options]]
        queue = opts.spec.queue
        if queue.kind == "observed" or queue.max_batch_wait_ms is not None:
            ms = fixed
        else:  # + the fill wait that grows with the GPUs (CascadeOptions.stage_ms), batches > 1 only
            ms = np.where(batch > 1, fixed + np.where(lam > 0, 1000.0 * (batch - 1) / lam, np.inf) * x, fixed)
    ok = (x <= gpus) & (ms <= opts.inst.slo_ms)
    best_gpus = np.where(ok, x, gpus + 1).min(axis=0)
    best_ms = np.where(ok, ms, np.inf).min(axis=0)
    return {r: (int(g), float(m)) for r, g, m in zip(rates, best_gpus.tolist(), best_ms.tolist())}


def feasible_choices(opts: CascadeOptions) -> list[Choice]:
    """The (pair, threshold index) choices whose stage floors fit the GPUs and the SLO."""
    floors: dict[Stage, dict[float, tuple[int, float]]] = {}

    def floor_of(stage: Stage, rate_qps: float) -> tuple[int, float]:
        if stage not in floors:
            floors[stage] = stage_floors(opts, stage)
        return floors[stage][rate_qps]

    kept = []
    for pair, grid in opts.grids.items():
        for k, pt in enumerate(grid):
            light_gpus, light_ms = floor_of((pair[0], LIGHT), opts.light_rate_qps(pair[0], pt.r)) if pt.light_runs else (0, 0.0)
            heavy_gpus, heavy_ms = floor_of((pair[1], HEAVY), opts.heavy_rate_qps(pair[1], pt.f)) if pt.f > 0 else (0, 0.0)
            path_ms = light_ms + heavy_ms if pt.defers else max(light_ms, heavy_ms)
            if light_gpus + heavy_gpus <= opts.gpus and path_ms <= opts.inst.slo_ms:
                kept.append((pair, k))
    return kept
