r"""The cascade MILP: GPUs, batch size and utilization per stage, pair and threshold per window.

One formulation serves both cascade policies (``diffserve``: the paper's; ``quality``: ours).
They differ in the queueing terms, the utilization levels and the objective. It is solved with
OR-Tools CP-SAT (integer coefficients: rates in milli-queries/s rounded against us, times in
microseconds rounded up, so a CP-SAT-feasible plan is feasible in the real numbers).

Data
----
- models ``m`` ordered light -> heavy; pairs ``p = (l(p), h(p))`` with known curves;
- batch sizes ``b`` of a model's profile with latency ``s[m,b]`` ms and per-worker throughput
  ``mu[m,b] = 1000 b / s[m,b]`` queries/s;
- per pair a threshold grid ``k`` with ``t[p,k]``, deferral ``f[p,k]`` and expected FID
  ``Q[p,k] = FID_p(1 - f[p,k])``;
- utilization levels ``rho[r]`` in (0, 1] (``diffserve``: only 1.0);
- demand ``D`` queries/s, GPUs ``N``, latency SLO ``SLO`` ms, current workers ``x0[m]``;
- a stage ``sg = (m, role)`` is model ``m`` as the light or as the heavy model of a pair; its
  options ``i = (b, r)``. The stage's arrival rate is ``lam = D`` (light) or ``D f[p,k]`` (heavy);
  ``w[sg,i,k]`` ms is the queueing estimate at that rate, ``phi[sg,i,k]`` ms per worker the
  batch-fill coefficient and ``cmin[sg,i]`` the fewest workers the estimate assumes.
  ``diffserve``: ``w`` = the observed delay (Little's law), ``phi = 0``, ``cmin = 1``.
  ``quality``: ``w`` = M/D/c wait with ``ceil(lam s / (b rho))`` workers, ``phi = 1000 (b-1)/lam``
  (see :mod:`planner.queueing`).

Variables
---------
- ``z[p,k]`` in {0,1}: pair ``p`` runs at threshold ``t[p,k]``;
- ``y[sg,i]`` in {0,1}: stage ``sg`` uses option ``i``;
- ``n[sg,i]`` in {0..N} (integer): workers of stage ``sg`` with option ``i``; this is the
  product ``x[sg] * y[sg,i]`` of the stage's GPU count and its option binary, linearized by
  (C4): since at most one ``y[sg,.]`` is 1, ``x[sg] = sum_i n[sg,i]``. No variable is indexed
  by GPU, so the model's size does not grow with ``N``;
- ``quality`` only: ``d[m]`` >= 0 GPUs moved for model ``m``;
- ``diffserve`` only: ``hr`` in {0..100}, the common capacity headroom in percent (tie-break).

Constraints
-----------
(C1) ``sum_{p,k} z[p,k] = 1``: one pair and one threshold.
(C2) ``sum_i y[(l,L),i] = sum_{p: l(p)=l} sum_k z[p,k]`` for every model ``l``: the chosen
     pair's light stage has exactly one option, other light stages none.
(C3) ``sum_i y[(h,H),i] = sum_{p: h(p)=h} sum_{k: f[p,k]>0} z[p,k]`` for every ``h``: the heavy
     stage exists iff something is deferred.
(C4) ``cmin[sg,i] y[sg,i] <= n[sg,i] <= N y[sg,i]``: workers only on the chosen option, at
     least one (and as many as the queueing estimate assumes).
(C5) ``sum_i rho[r] mu[l,b] n[(l,L),i] >= D sum_{p: l(p)=l, k} z[p,k]``: light capacity at the
     planned utilization serves all queries.
(C6) ``sum_i rho[r] mu[h,b] n[(h,H),i] >= D sum_{p: h(p)=h, k} f[p,k] z[p,k]``: heavy capacity
     serves the deferred share.
(C7) ``sum_{sg,i} n[sg,i] <= N``: GPUs in use.
(C8) for every ``(p,k)``: ``z[p,k] = 1  =>``
     ``sum_i (s + w)[(l,L),i] y[(l,L),i] + phi[(l,L),i] n[(l,L),i]``
     ``+ [f[p,k] > 0] sum_i (s + w)[(h,H),i,k] y[(h,H),i] + phi[(h,H),i,k] n[(h,H),i] <= SLO``:
     light batch latency + light queueing + heavy batch latency + heavy queueing within the SLO
     (big-M form: ``<= SLO + M (1 - z[p,k])``; CP-SAT takes it as an enforcement literal).
(C9) ``quality``: ``d[m] >= |sum_{sg of m, i} n[sg,i] - x0[m]|`` (two linear inequalities).
(C10) ``diffserve``: ``100 cap_L >= D (100 + hr)``; ``z[p,k] => 100 cap_H >= D f[p,k] (100 + hr)``.

Objectives
----------
- ``max_threshold`` (``diffserve``, the paper): ``max 101 * rank(t) + hr``, i.e. the largest
  threshold, then the most capacity headroom.
- ``min_fid`` (``quality``): ``min sum_{p,k} Q[p,k] z[p,k] + gamma / N * sum_m d[m]``; ``gamma``
  is the FID a whole-fleet move must buy (hysteresis: no GPU moves for marginal gains).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping

from ortools.sat.python import cp_model

from planner import queueing
from planner.types import DeferralCurve, Instance, ModelProfile, Plan, QualityCurve

LIGHT, HEAVY = "L", "H"
_US = 1000.0  # microseconds per millisecond (CP-SAT time unit)
_MQ = 1000.0  # milli-queries per query (CP-SAT rate unit)
_FID_SCALE = 10_000  # FID resolution 1e-4 in the integer objective
HEADROOM_MAX_PCT = 100


class PlannerInfeasible(Exception):
    """No plan satisfies the constraints (or none was found in the time limit); ``str`` says why."""


@dataclasses.dataclass(frozen=True)
class QueueModel:
    """How a stage's queueing delay is estimated (see :mod:`planner.queueing`).

    ``kind="observed"``: the paper's constant per model (``observed_ms``), utilization 1.0.
    ``kind="batched"``: M/D/c wait of batches + batch-fill wait, per utilization level.
    ``max_batch_wait_ms`` caps the fill wait (the batcher's max queue delay; None = waits for a
    full batch, fill grows with workers).
    """

    kind: str
    utilization_levels: tuple[float, ...] = (1.0,)
    observed_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    arrival_scv: float = 1.0
    max_batch_wait_ms: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("observed", "batched"):
            raise ValueError(f"QueueModel.kind = {self.kind!r}; expected 'observed' or 'batched'")
        if not self.utilization_levels or any(not 0 < r <= 1 for r in self.utilization_levels):
            raise ValueError(f"utilization_levels {self.utilization_levels}; expected values in (0, 1]")
        if self.max_batch_wait_ms is not None and not self.max_batch_wait_ms >= 0:
            raise ValueError(f"max_batch_wait_ms {self.max_batch_wait_ms}; expected >= 0 or None")

    def min_workers(self, prof: ModelProfile, b: int, rho: float, lam: float) -> int:
        if self.kind == "observed":
            return 1
        return queueing.min_workers(lam, b, prof.latency_ms(b), rho)

    def wait_ms(self, requests: list[tuple[ModelProfile, int, float, float]]) -> list[float]:
        """Queueing wait (not fill) in ms for each (stage profile, batch, level rho, rate lam).

        ``batched``: M/D/c wait with the fewest workers that keep utilization <= rho (the plan
        has at least that many, and more workers only shorten the wait), priced in one
        vectorized pass.
        """
        if self.kind == "observed":
            return [float(self.observed_ms.get(prof.name, 0.0)) for prof, _, _, _ in requests]
        if not requests:
            return []
        lam = [r[3] for r in requests]
        b = [r[1] for r in requests]
        s = [r[0].latency_ms(r[1]) for r in requests]
        c = [self.min_workers(r[0], r[1], r[2], r[3]) for r in requests]
        return [float(w) for w in queueing.mdc_wait_ms_many(lam, b, s, c, self.arrival_scv)]

    def fill_ms_per_worker(self, b: int, lam: float) -> float:
        """Batch-fill wait per worker of the stage, ms (0 when not modelled)."""
        if self.kind == "observed" or b == 1 or self.max_batch_wait_ms is not None:
            return 0.0
        return math.inf if lam <= 0 else 1000.0 * (b - 1) / lam

    def fill_const_ms(self, b: int) -> float:
        """Constant fill wait when capped by the batcher's max queue delay."""
        if self.kind == "observed" or b == 1 or self.max_batch_wait_ms is None:
            return 0.0
        return float(self.max_batch_wait_ms)


@dataclasses.dataclass(frozen=True)
class CascadeSpec:
    """What a cascade policy asks of :func:`solve_cascade`."""

    objective: str  # "max_threshold" | "min_fid"
    queue: QueueModel
    pairs: tuple[tuple[str, str], ...]
    switch_cost_fid: float = 0.0
    threshold_step: float | None = None
    dedupe_deferral: bool = False  # keep one threshold per distinct f(t) (smallest t)
    time_limit_s: float = 1.0
    search_workers: int = 1


@dataclasses.dataclass(frozen=True)
class _GridPoint:
    t: float
    f: float
    fid: float


def threshold_grid(deferral: DeferralCurve, quality: QualityCurve, step: float | None, dedupe: bool) -> list[_GridPoint]:
    """The threshold grid of a pair: the curve's own points, or ``step``-spaced interpolation."""
    if step is None:
        ts = list(deferral.thresholds)
    else:
        if not step > 0:
            raise ValueError(f"threshold_step = {step}; expected > 0")
        lo, hi = deferral.thresholds[0], deferral.thresholds[-1]
        ts = [lo + i * step for i in range(int(math.floor((hi - lo) / step + 1e-9)) + 1)]
    pts = [_GridPoint(t=round(t, 9), f=deferral.f(t), fid=quality.fid_at(1.0 - deferral.f(t))) for t in ts]
    if dedupe:
        seen: set[float] = set()
        pts = [p for p in pts if not (p.f in seen or seen.add(p.f))]  # type: ignore[func-returns-value]
    return pts


def _us(ms: float, slo_us: int) -> int:
    """ms -> integer µs rounded up, clamped just above the SLO (inf or huge => infeasible if used)."""
    if not math.isfinite(ms) or ms * _US > slo_us:
        return slo_us + 1
    return int(math.ceil(ms * _US - 1e-6))


@dataclasses.dataclass(frozen=True)
class _Option:
    batch: int
    rho: float
    cap_mq: int  # rho * mu * 1000, floored: planned milli-queries/s per worker
    mu_qps: float  # full per-worker throughput


def _options(prof: ModelProfile, q: QueueModel, slo_ms: float) -> list[_Option]:
    out = []
    for b in prof.batch_sizes:
        if prof.latency_ms(b) > slo_ms:  # can never meet the SLO
            continue
        for rho in q.utilization_levels:
            out.append(_Option(b, rho, int(math.floor(rho * prof.throughput_qps(b) * _MQ)), prof.throughput_qps(b)))
    return out


def solve_cascade(inst: Instance, spec: CascadeSpec, policy: str) -> Plan:
    """Solve the cascade MILP for ``inst``; returns the plan or raises :class:`PlannerInfeasible`."""
    t0 = time.perf_counter()
    N, D, q = inst.num_workers, inst.demand_qps, spec.queue
    slo_us = int(math.floor(inst.slo_ms * _US))
    grids: dict[tuple[str, str], list[_GridPoint]] = {}
    for p in spec.pairs:
        curves = inst.curves_for(*p)
        if curves is not None:
            grids[p] = threshold_grid(curves[0], curves[1], spec.threshold_step, spec.dedupe_deferral)
    if not grids:
        raise PlannerInfeasible(f"no eligible (light, heavy) pair with curves among {list(spec.pairs)}")

    m = cp_model.CpModel()
    z = {(p, k): m.new_bool_var(f"z{p}{k}") for p, g in grids.items() for k in range(len(g))}
    m.add_exactly_one(z.values())  # (C1)

    stages: dict[tuple[str, str], list[_Option]] = {}
    for p in grids:
        stages.setdefault((p[0], LIGHT), [])
        stages.setdefault((p[1], HEAVY), [])
    for sg in stages:
        stages[sg] = _options(inst.model(sg[0]), q, inst.slo_ms)
    y = {(sg, i): m.new_bool_var(f"y{sg}{i}") for sg, opts in stages.items() for i in range(len(opts))}
    n = {(sg, i): m.new_int_var(0, N, f"n{sg}{i}") for sg, opts in stages.items() for i in range(len(opts))}

    def active(sg: tuple[str, str], need_deferral: bool) -> list[cp_model.IntVar]:
        pos = 0 if sg[1] == LIGHT else 1
        return [z[(p, k)] for p, g in grids.items() if p[pos] == sg[0] for k in range(len(g)) if not need_deferral or g[k].f > 0]

    d_mq = int(math.ceil(D * _MQ - 1e-9))
    light_cap = []
    for sg, opts in stages.items():
        idx = range(len(opts))
        prof = inst.model(sg[0])
        m.add(sum(y[(sg, i)] for i in idx) == sum(active(sg, sg[1] == HEAVY)))  # (C2) / (C3)
        for i, o in enumerate(opts):
            cmin = q.min_workers(prof, o.batch, o.rho, D) if sg[1] == LIGHT else 1
            m.add(n[(sg, i)] <= N * y[(sg, i)])  # (C4)
            m.add(n[(sg, i)] >= min(cmin, N + 1) * y[(sg, i)])  # (C4)
        cap = sum(o.cap_mq * n[(sg, i)] for i, o in enumerate(opts))
        if sg[1] == LIGHT:
            m.add(cap >= d_mq * sum(active(sg, False)))  # (C5)
            light_cap.append(cap)
        else:
            deferred = [
                (int(math.ceil(D * g[k].f * _MQ - 1e-9)), z[(p, k)]) for p, g in grids.items() if p[1] == sg[0] for k in range(len(g))
            ]
            m.add(cap >= sum(c * v for c, v in deferred))  # (C6)
    m.add(sum(n.values()) <= N)  # (C7)

    # Price every (stage option, arrival rate) the latency constraints need, in one pass.
    rates: dict[tuple[str, str], set[float]] = {sg: set() for sg in stages}
    for p, g in grids.items():
        rates[(p[0], LIGHT)].add(D)
        rates[(p[1], HEAVY)].update(D * pt.f for pt in g if pt.f > 0)
    keys = [(sg, i, lam) for sg, lams in rates.items() for lam in sorted(lams) for i in range(len(stages[sg]))]
    waits = q.wait_ms([(inst.model(sg[0]), stages[sg][i].batch, stages[sg][i].rho, lam) for sg, i, lam in keys])
    wait = dict(zip(keys, waits))

    def stage_ms(sg: tuple[str, str], i: int, lam: float, x: int | None = None) -> float:
        """Planned latency of option ``i`` of stage ``sg`` at rate ``lam``: batch + queueing (+ fill)."""
        b = stages[sg][i].batch
        ms = inst.model(sg[0]).latency_ms(b) + wait[(sg, i, lam)] + q.fill_const_ms(b)
        return ms if x is None else ms + (q.fill_ms_per_worker(b, lam) * x if x > 0 and b > 1 else 0.0)

    def stage_terms(sg: tuple[str, str], lam: float) -> list:
        """Linear latency terms of a stage at arrival rate ``lam``, integer µs."""
        terms = []
        for i, o in enumerate(stages[sg]):
            terms.append(_us(stage_ms(sg, i, lam), slo_us) * y[(sg, i)])
            phi = q.fill_ms_per_worker(o.batch, lam)
            if phi > 0:
                terms.append(_us(phi, slo_us) * n[(sg, i)])
        return terms

    light_terms = {sg: stage_terms(sg, D) for sg in stages if sg[1] == LIGHT}
    for (p, k), zv in z.items():  # (C8)
        g = grids[p][k]
        terms = list(light_terms[(p[0], LIGHT)])
        if g.f > 0:
            terms += stage_terms((p[1], HEAVY), D * g.f)
        m.add(sum(terms) <= slo_us).only_enforce_if(zv)

    if spec.objective == "max_threshold":
        hr = m.new_int_var(0, HEADROOM_MAX_PCT, "headroom_pct")
        m.add(100 * sum(light_cap) >= d_mq * 100 + d_mq * hr)  # (C10)
        for (p, k), zv in z.items():
            f_mq = int(math.ceil(D * grids[p][k].f * _MQ - 1e-9))
            if f_mq > 0:
                hs = (p[1], HEAVY)
                hcap = sum(o.cap_mq * n[(hs, i)] for i, o in enumerate(stages[hs]))
                m.add(100 * hcap >= f_mq * 100 + f_mq * hr).only_enforce_if(zv)  # (C10)
        ranks = {key: r for r, key in enumerate(sorted(z, key=lambda pk: grids[pk[0]][pk[1]].t))}
        m.maximize((HEADROOM_MAX_PCT + 1) * sum(ranks[key] * v for key, v in z.items()) + hr)
    elif spec.objective == "min_fid":
        obj = [N * int(round(grids[p][k].fid * _FID_SCALE)) * v for (p, k), v in z.items()]
        if spec.switch_cost_fid > 0 and inst.current is not None:
            gamma = int(round(spec.switch_cost_fid * _FID_SCALE))
            for prof in inst.models:
                x = sum(n[(sg, i)] for sg, opts in stages.items() if sg[0] == prof.name for i in range(len(opts)))
                x0 = int(inst.current.workers.get(prof.name, 0))
                d = m.new_int_var(0, N + x0, f"moved_{prof.name}")
                m.add(d >= x - x0)  # (C9)
                m.add(d >= x0 - x)  # (C9)
                obj.append(gamma * d)
        m.minimize(sum(obj))
    else:
        raise ValueError(f"objective {spec.objective!r}; expected 'max_threshold' or 'min_fid'")

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = spec.time_limit_s
    solver.parameters.num_search_workers = spec.search_workers
    status = solver.solve(m)
    if status == cp_model.INFEASIBLE:
        raise PlannerInfeasible(
            f"infeasible: {N} GPUs cannot serve {D:.3f} qps within the {inst.slo_ms:.0f} ms SLO at any threshold"
        )
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise PlannerInfeasible(f"CP-SAT status {solver.status_name(status)} within {spec.time_limit_s} s")

    (p, k) = next(key for key, v in z.items() if solver.value(v))
    g = grids[p][k]
    workers, batch, cap, lat = {}, {}, {}, {}
    for sg in ((p[0], LIGHT), (p[1], HEAVY)):
        lam = D if sg[1] == LIGHT else D * g.f
        for i, o in enumerate(stages[sg]):
            if solver.value(y[(sg, i)]):
                x = int(solver.value(n[(sg, i)]))
                workers[sg[0]], batch[sg[0]], cap[sg[0]] = x, o.batch, x * o.mu_qps
                lat[sg[0]] = stage_ms(sg, i, lam, x)
    return Plan(
        policy=policy,
        workers=workers,
        batch_size=batch,
        threshold=g.t,
        capacity_qps=cap,
        expected_fid=g.fid,
        light_fraction=1.0 - g.f,
        slack_ms=inst.slo_ms - sum(lat.values()),
        status="OPTIMAL" if status == cp_model.OPTIMAL else "FEASIBLE",
        solve_time_ms=(time.perf_counter() - t0) * 1000.0,
        routing="cascade",
        heavy_share=g.f,
        light_model=p[0],
        heavy_model=p[1] if g.f > 0 else "",
        stage_latency_ms=lat,
    )
