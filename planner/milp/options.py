"""The choices the cascade MILP ranges over, priced in real numbers before any model is built.

- per pair, the threshold grid: points ``(t, f(t), FID(1 - f(t)))`` (:func:`threshold_grid`);
- per stage (a model as the light or the heavy model of a pair), the arrival rates it may see
  (light: every query plus its backlog; heavy: the deferred share ``D f`` of each grid point plus
  its backlog) and its options ``(batch, utilization level)`` (:class:`StageOption`);
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

from planner.milp.spec import HEAVY, LIGHT, MQ_PER_Q, US_PER_MS, CascadeSpec, Pair, PlannerInfeasible, Stage
from planner.types import DeferralCurve, Instance, QualityCurve


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One threshold of a pair: ``t``, its deferral fraction ``f`` and the expected ``fid``."""

    t: float
    f: float
    fid: float


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


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: used as a dict key in hot loops
class StageOption:
    """One (batch, utilization level) option of a stage."""

    batch: int
    rho: float
    cap_mq: int  # rho * mu * 1000, floored: planned milli-queries/s per GPU
    mu_qps: float  # full per-GPU throughput
    min_gpus: int  # fewest GPUs the queueing estimate assumes (light stages; 1 for heavy)


@dataclasses.dataclass(frozen=True, eq=False)
class CascadeOptions:
    """Everything the MILP ranges over for one instance (see the module docstring)."""

    inst: Instance
    spec: CascadeSpec
    grids: Mapping[Pair, list[GridPoint]]
    rates: Mapping[Stage, list[float]]  # arrival rates (queries/s) each stage may see
    stages: Mapping[Stage, list[StageOption]]
    fixed_ms: Mapping[tuple[Stage, StageOption, float], float]  # batch + wait + capped fill, ms

    @property
    def gpus(self) -> int:
        return self.inst.num_workers

    @property
    def slo_us(self) -> int:
        return int(math.floor(self.inst.slo_ms * US_PER_MS))

    def light_rate_qps(self, model: str) -> float:
        """Arrival rate (queries/s) at light model ``model``'s stage: every query, plus its backlog."""
        return self.inst.demand_qps + self.spec.backlog_qps.get(model, 0.0)

    def heavy_rate_qps(self, model: str, f: float) -> float:
        """Arrival rate at heavy model ``model``'s stage when a share ``f`` is deferred (0: no stage)."""
        return self.inst.demand_qps * f + self.spec.backlog_qps.get(model, 0.0) if f > 0 else 0.0

    def stage_rate_qps(self, stage: Stage, f: float) -> float:
        """Arrival rate at ``stage`` when the pair defers a share ``f``."""
        return self.light_rate_qps(stage[0]) if stage[1] == LIGHT else self.heavy_rate_qps(stage[0], f)

    def stage_ms(self, stage: Stage, option: StageOption, rate_qps: float, gpus: int = 0) -> float:
        """Planned latency of ``option`` of ``stage`` at ``rate_qps`` with ``gpus`` GPUs, ms."""
        ms = self.fixed_ms[(stage, option, rate_qps)]
        if gpus > 0 and option.batch > 1:  # the fill wait grows with the GPUs sharing the stream
            return ms + self.spec.queue.fill_ms_per_gpu(option.batch, rate_qps) * gpus
        return ms

    def demand_mq(self, rate_qps: float) -> int:
        """A rate in integer milli-queries/s, rounded up (against the plan)."""
        return int(math.ceil(rate_qps * MQ_PER_Q - 1e-9))


def _pair_grids(inst: Instance, spec: CascadeSpec) -> dict[Pair, list[GridPoint]]:
    grids: dict[Pair, list[GridPoint]] = {}
    for pair in spec.pairs:
        curves = inst.curves_for(*pair)
        if curves is not None:
            grids[pair] = threshold_grid(curves[0], curves[1], spec.threshold_step, spec.dedupe_deferral)
    if not grids:
        raise PlannerInfeasible(f"no eligible (light, heavy) pair with curves among {list(spec.pairs)}")
    return grids


def _stage_options(inst: Instance, spec: CascadeSpec, stage: Stage, light_rate_qps: float) -> list[StageOption]:
    prof, queue = inst.model(stage[0]), spec.queue
    return [
        StageOption(b, rho, int(math.floor(rho * prof.throughput_qps(b) * MQ_PER_Q)), prof.throughput_qps(b),
                    queue.min_gpus(prof, b, rho, light_rate_qps) if stage[1] == LIGHT else 1)
        for b in prof.batch_sizes
        if prof.latency_ms(b) <= inst.slo_ms  # a slower batch can never meet the SLO
        for rho in queue.utilization_levels
    ]


def build_options(inst: Instance, spec: CascadeSpec) -> CascadeOptions:
    """Grids, stage rates and options, and every (stage, option, rate) priced; raises
    :class:`PlannerInfeasible` when no requested pair has curves."""
    grids = _pair_grids(inst, spec)
    skeleton = CascadeOptions(inst, spec, grids, {}, {}, {})  # for the rate helpers only
    rates: dict[Stage, list[float]] = {}
    for (light, heavy), grid in grids.items():
        rates.setdefault((light, LIGHT), [skeleton.light_rate_qps(light)])
        rates.setdefault((heavy, HEAVY), [])
        heavy_rates = {skeleton.heavy_rate_qps(heavy, pt.f) for pt in grid if pt.f > 0}
        rates[(heavy, HEAVY)] = sorted(set(rates[(heavy, HEAVY)]) | heavy_rates)
    stages = {sg: _stage_options(inst, spec, sg, skeleton.light_rate_qps(sg[0])) for sg in rates}
    # Price every (stage option, rate) in one vectorized pass: batch + wait (+ capped fill), ms.
    keys = [(sg, o, lam) for sg, lams in rates.items() for lam in lams for o in stages[sg]]
    waits = spec.queue.wait_ms([(inst.model(sg[0]), o.batch, o.rho, lam) for sg, o, lam in keys], inst.num_workers)
    fixed_ms = {
        key: inst.model(key[0][0]).latency_ms(key[1].batch) + w + spec.queue.fill_const_ms(key[1].batch)
        for key, w in zip(keys, waits)
    }
    return CascadeOptions(inst, spec, grids, rates, stages, fixed_ms)
