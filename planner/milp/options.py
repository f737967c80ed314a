"""The choices the cascade MILP ranges over, priced in real numbers before any model is built.

- per pair, the threshold grid: points ``(t, f(t), FID(1 - f(t)))`` (:func:`threshold_grid`), or
  with a prompt router (``hybrid``) the points ``(r, d)`` of the pair's
  :class:`~planner.types.HybridSurface` (:func:`surface_grid`);
- per stage (a model as the light or the heavy model of a pair), the arrival rates it may see
  (light: the queries the router keeps, ``D (1 - r)``, plus its backlog; heavy: the share
  ``D f`` it serves at each grid point plus its backlog) and its options ``(batch, utilization
  level)`` (:class:`StageOption`);
- per (stage, option, rate), the planned latency without the batch-fill term that grows with the
  GPU count: batch execution + queueing wait + capped fill, in ms, priced for all in one
  vectorized pass (:class:`planner.queueing.QueueModel`).

:func:`build_options` returns all of it as one :class:`CascadeOptions`; pruning, model build and
decode read it and nothing else.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from planner.milp.spec import HEAVY, LIGHT, MQ_PER_Q, US_PER_MS, CascadeSpec, Pair, PlannerInfeasible, Stage
from planner.types import DeferralCurve, HybridSurface, Instance, QualityCurve


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One threshold of a pair: ``t``, the share ``f`` of all queries the heavy model serves and
    the expected ``fid``; ``r`` is the router share (sent straight to heavy; 0: no router), so a
    share ``1 - r`` passes the light model and ``f - r`` of all queries pass both models."""

    t: float
    f: float
    fid: float
    r: float = 0.0

    @property
    def light_runs(self) -> bool:
        """Whether any query passes the light model (the router keeps some)."""
        return self.r < 1.0

    @property
    def defers(self) -> bool:
        """Whether some queries pass light and then heavy (the discriminator defers some)."""
        return self.f > self.r


def threshold_grid(deferral: DeferralCurve, quality: QualityCurve, step: float | None, dedupe: bool) -> list[GridPoint]:
    """The threshold grid of a pair: the curve's own points, or ``step``-spaced interpolation."""
    if step is None:
        ts = list(deferral.thresholds)
    else:
        if not step > 0:
            raise ValueError(f"threshold_step = {step}; expected > 0")
        lo, hi = deferral.thresholds[0], deferral.thresholds[-1]
        ts = [lo + i * step for i in range(int(math.floor((hi - lo) / step + 1e-9)) + 1)]
    pts = [GridPoint(t=round(t, 9), f=deferral.f(t), fid=quality.fid_at(1.0 - deferral.f(t))) for t in ts]
    if dedupe:
        seen: set[float] = set()
        pts = [p for p in pts if not (p.f in seen or seen.add(p.f))]  # type: ignore[func-returns-value]
    return pts


def surface_grid(surface: HybridSurface, routed_only: bool = False) -> list[GridPoint]:
    """The (router share, discriminator share) points of a pair's surface (``routed_only``: those
    with r > 0). Points with the same (r, f) ask the same of the cluster (at r = 1 every d
    does): only the lowest FID is kept."""
    best: dict[tuple[float, float], GridPoint] = {}
    for i, r in enumerate(surface.router_share):
        if routed_only and r <= 0.0:
            continue
        for j, d in enumerate(surface.disc_share):
            pt = GridPoint(t=surface.disc_threshold[i][j], f=surface.heavy_share(r, d), fid=surface.fid[i][j], r=r)
            key = (pt.r, pt.f)
            if key not in best or pt.fid < best[key].fid:
                best[key] = pt
    return list(best.values())


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: used as a dict key in hot loops
class StageOption:
    """One (batch, utilization level) option of a stage."""

    batch: int
    rho: float
    cap_mq: int  # rho * mu * 1000, floored: planned milli-queries/s per GPU
    mu_qps: float  # full per-GPU throughput
    min_gpus: int  # fewest GPUs the queueing estimate assumes at any of the stage's rates (light; 1 for heavy)


@dataclasses.dataclass(frozen=True, eq=False)
class StagePrices:
    """One stage's planned latency per (option, rate) without the fill term that grows with the
    GPUs: batch + wait + capped fill, ms. Rows follow the stage's options as built (pruning keeps
    the rows and drops options), columns its rates."""

    option_row: Mapping[StageOption, int]
    rate_col: Mapping[float, int]
    ms: np.ndarray  # (options, rates)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cells", self.ms.tolist())  # scalar reads from lists: the model build's hot path

    def at(self, option: StageOption, rate_qps: float) -> float:
        return self._cells[self.option_row[option]][self.rate_col[rate_qps]]  # type: ignore[attr-defined]

    def row(self, option: StageOption) -> np.ndarray:
        """The option's latency at each of the stage's rates (in the order of ``rates``)."""
        return self.ms[self.option_row[option]]


@dataclasses.dataclass(frozen=True, eq=False)
class CascadeOptions:
    """Everything the MILP ranges over for one instance (see the module docstring)."""

    inst: Instance
    spec: CascadeSpec
    grids: Mapping[Pair, list[GridPoint]]
    rates: Mapping[Stage, list[float]]  # arrival rates (queries/s) each stage may see
    stages: Mapping[Stage, list[StageOption]]
    prices: Mapping[Stage, StagePrices]  # batch + wait + capped fill, ms

    @property
    def gpus(self) -> int:
        return self.inst.num_workers

    @property
    def slo_us(self) -> int:
        return int(math.floor(self.inst.slo_ms * US_PER_MS))

    def light_rate_qps(self, model: str, r: float = 0.0) -> float:
        """Arrival rate (queries/s) at light model ``model``'s stage: every query the router keeps
        (all without a router), plus its backlog; 0 (no stage) when the router takes all."""
        return self.inst.demand_qps * (1.0 - r) + self.spec.backlog_qps.get(model, 0.0) if r < 1.0 else 0.0

    def heavy_rate_qps(self, model: str, f: float) -> float:
        """Arrival rate at heavy model ``model``'s stage when it serves a share ``f`` (0: no stage)."""
        return self.inst.demand_qps * f + self.spec.backlog_qps.get(model, 0.0) if f > 0 else 0.0

    def stage_rate_qps(self, stage: Stage, point: GridPoint) -> float:
        """Arrival rate at ``stage`` at the pair's grid point ``point``."""
        return self.light_rate_qps(stage[0], point.r) if stage[1] == LIGHT else self.heavy_rate_qps(stage[0], point.f)

    def stage_ms(self, stage: Stage, option: StageOption, rate_qps: float, gpus: int = 0) -> float:
        """Planned latency of ``option`` of ``stage`` at ``rate_qps`` with ``gpus`` GPUs, ms."""
        ms = self.prices[stage].at(option, rate_qps)
        if gpus > 0 and option.batch > 1:  # the fill wait grows with the GPUs sharing the stream
            return ms + self.spec.queue.fill_ms_per_gpu(option.batch, rate_qps) * gpus
        return ms

    def demand_mq(self, rate_qps: float) -> int:
        """A rate in integer milli-queries/s, rounded up (against the plan)."""
        return int(math.ceil(rate_qps * MQ_PER_Q - 1e-9))


def _pair_grids(inst: Instance, spec: CascadeSpec) -> dict[Pair, list[GridPoint]]:
    """Per pair its threshold grid (r = 0) from its curves; with the router, plus the points of its
    hybrid surface (those with r > 0 when the pair also has curves: the cascade's own grid is the
    finer one at r = 0), so ``hybrid`` can always plan what ``quality`` plans."""
    grids: dict[Pair, list[GridPoint]] = {}
    for pair in spec.pairs:
        surface = inst.hybrid_surfaces.get(pair) if spec.router else None
        curves = inst.curves_for(*pair)
        grid = [] if curves is None else threshold_grid(curves[0], curves[1], spec.threshold_step, spec.dedupe_deferral)
        if surface is not None:
            grid += surface_grid(surface, routed_only=curves is not None)
        if spec.heavy_only and curves is not None and not any(pt.r >= 1.0 for pt in grid):
            # every query straight to heavy (r = 1: light does not run), FID at light share 0
            grid.append(GridPoint(t=1.0, f=1.0, fid=curves[1].fid_at(0.0), r=1.0))
        if grid:
            grids[pair] = grid
    if not grids:
        raise PlannerInfeasible(f"no eligible (light, heavy) pair with curves among {list(spec.pairs)}")
    return grids


def _stage_options(inst: Instance, spec: CascadeSpec, stage: Stage, rates_qps: list[float]) -> list[StageOption]:
    """A stage's (batch, level) options; a light stage's GPU floor is the lowest over its rates,
    the floor at its lowest rate ((C5) at each rate already forces that rate's floor)."""
    prof, queue = inst.model(stage[0]), spec.queue
    lowest = min(rates_qps, default=0.0)
    return [
        StageOption(b, rho, int(math.floor(rho * prof.throughput_qps(b) * MQ_PER_Q)), prof.throughput_qps(b),
                    queue.min_gpus(prof, b, rho, lowest) if stage[1] == LIGHT else 1)
        for b in prof.batch_sizes
        if prof.latency_ms(b) <= inst.slo_ms  # a slower batch can never meet the SLO
        for rho in queue.utilization_levels
    ]


def build_options(inst: Instance, spec: CascadeSpec) -> CascadeOptions:
    """Grids, stage rates and options, and every (stage, option, rate) priced; raises
    :class:`PlannerInfeasible` when no requested pair has curves."""
    grids = _pair_grids(inst, spec)
    skeleton = CascadeOptions(inst, spec, grids, {}, {}, {})  # for the rate helpers only
    found: dict[Stage, set[float]] = {}
    for (light, heavy), grid in grids.items():
        light_rates = {skeleton.light_rate_qps(light, pt.r) for pt in grid if pt.light_runs}
        heavy_rates = {skeleton.heavy_rate_qps(heavy, pt.f) for pt in grid if pt.f > 0}
        found.setdefault((light, LIGHT), set()).update(light_rates)
        found.setdefault((heavy, HEAVY), set()).update(heavy_rates)
    rates = {sg: sorted(lams) for sg, lams in found.items()}  # a stage no point runs stays, without options
    stages = {sg: _stage_options(inst, spec, sg, rates[sg]) for sg in rates}
    return CascadeOptions(inst, spec, grids, rates, stages, _prices(inst, spec, stages, rates))


def _prices(inst: Instance, spec: CascadeSpec, stages: Mapping[Stage, list[StageOption]],
            rates: Mapping[Stage, list[float]]) -> dict[Stage, StagePrices]:
    """Every (stage, option, rate) priced in one vectorized pass: batch + wait (+ capped fill), ms."""
    parts: dict[str, list[np.ndarray]] = {"batch": [], "lat": [], "rho": [], "lam": [], "fill": []}
    segments = []
    for sg, lams in rates.items():  # option-major per stage: cell (i, j) = option i at rate j
        prof, options, n_rates = inst.model(sg[0]), stages[sg], len(lams)
        parts["batch"].append(np.repeat(np.array([o.batch for o in options], dtype=np.int64), n_rates))
        parts["lat"].append(np.repeat(np.array([prof.latency_ms(o.batch) for o in options], dtype=np.float64), n_rates))
        parts["rho"].append(np.repeat(np.array([o.rho for o in options], dtype=np.float64), n_rates))
        parts["fill"].append(np.repeat(np.array([spec.queue.fill_const_ms(o.batch) for o in options], dtype=np.float64),
                                       n_rates))
        parts["lam"].append(np.tile(np.array(lams, dtype=np.float64), len(options)))
        segments.append((sg[0], len(options) * n_rates))
    flat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    lat, fill = flat["lat"], flat["fill"]
    waits = spec.queue.wait_ms_flat(segments, flat["batch"], lat, flat["rho"], flat["lam"], inst.num_workers)
    total, out, at = lat + waits + fill, {}, 0
    for sg, lams in rates.items():
        n = len(stages[sg]) * len(lams)
        out[sg] = StagePrices({o: i for i, o in enumerate(stages[sg])}, {lam: j for j, lam in enumerate(lams)},
                              total[at:at + n].reshape(len(stages[sg]), len(lams)))
        at += n
    return out
