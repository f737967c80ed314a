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
  backlog rate ``B[m]`` queries/s (queued queries to drain; 0 unless ``quality`` drains queues);
- a stage ``sg = (m, role)`` is model ``m`` as the light or as the heavy model of a pair; its
  options ``i = (b, r)``. The stage's arrival rate is ``lam = D + B[l]`` (light) or
  ``D f[p,k] + B[h]`` (heavy, when ``f[p,k] > 0``); below, ``D`` in (C5) and ``D f`` in (C6) stand
  for these rates;
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
- ``quality`` only: ``d[m]`` >= 0 GPUs that newly load model ``m``;
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
     light batch latency + light queueing + heavy batch latency + heavy queueing within the
     SLO (big-M form: ``<= SLO + M (1 - z[p,k])``; CP-SAT takes it as an enforcement literal).
(C9) ``quality``: ``d[m] >= sum_{sg of m, i} n[sg,i] - x0[m]``, ``d[m] >= 0``: GPUs that must
     load model ``m`` (freeing a GPU costs nothing, loading one costs a model load).
(C10) ``diffserve``: ``100 cap_L >= D (100 + hr)``; ``z[p,k] => 100 cap_H >= D f[p,k] (100 + hr)``.

Exact reductions before the solve: batch sizes slower than the SLO are not options; a light
option whose ``cmin`` exceeds ``N`` or whose latency alone breaks the SLO is dropped, and of
light options with equal ``(b, cmin)`` (same wait) only the loosest ``rho`` is kept; a
``(p,k)`` whose cheapest light and heavy options alone (fewest GPUs, lowest latency, each a
lower bound) already break (C7) or (C8) gets no ``z``; in (C8), options that alone exceed the
SLO at the stage's rate are excluded by ``z[p,k] => sum y = 0`` instead of a huge coefficient.
For heavy stages ``cmin = 1`` in (C4): (C6) at level ``rho`` already forces the workers the
wait estimate assumes.

Decomposition (``min_fid``, several pairs): by (C1) the pairs share no decision, and a pair's
stages alone carry its objective (other stages are forced to 0 by (C2)-(C4), so they add no
move cost and no tie-break), so the optimum is the best of the per-pair optima. Each pair is
solved as its own model, in order of its bound ``N min_k Q[p,k]`` (no move cost, no ties), and a
pair whose bound cannot beat the incumbent's objective is not built at all. Tie-break weights
are computed over every stage, so objective values of different pairs compare exactly as in
the one model over all pairs. ``max_threshold`` ranks thresholds across pairs: one model.

Objectives
----------
- ``max_threshold`` (``diffserve``, the paper): the largest threshold ``t``; ties broken
  lexicographically by the most capacity headroom ``hr``, then the shortest batches
  (``sum s[m,b] y``). One weighted integer objective with weights that keep the order.
- ``min_fid`` (``quality``): ``min sum_{p,k} Q[p,k] z[p,k] + gamma / N * sum_m d[m]``; ``gamma``
  is the FID a whole-fleet move must buy (hysteresis: no GPU moves for marginal gains); ties
  broken by the lowest planned utilization (``sum rho y``), then the shortest batches.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping

from ortools.sat.python import cp_model

from planner.queueing import QueueModel  # noqa: F401  (re-exported: policies build it from here)
from planner.types import DeferralCurve, Instance, Plan, QualityCurve

LIGHT, HEAVY = "L", "H"
_US = 1000.0  # microseconds per millisecond (CP-SAT time unit)
_MQ = 1000.0  # milli-queries per query (CP-SAT rate unit)
_FID_SCALE = 10_000  # FID resolution 1e-4 in the integer objective
HEADROOM_MAX_PCT = 100


class PlannerInfeasible(Exception):
    """No plan satisfies the constraints (or none was found in the time limit); ``str`` says why."""


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
    # CP-SAT presolve (probing, symmetry) costs more than the search on these few-hundred-
    # variable models; off by default.
    presolve: bool = False
    # Measured (``benchmarks/bench_planner.py --solver-sweep``): the LP relaxation and presolve
    # roughly double the CPU time on these models; fixed best-objective-first search and
    # CP-SAT's automatic search are within noise of each other.
    linearization_level: int = 0
    fixed_search: bool = True
    # ``min_fid``: solve each pair as its own model and keep the best (see Decomposition); False
    # builds the one model over all pairs (same plans, kept to check that in the tests).
    decompose_pairs: bool = True
    # Queued queries per model to drain, as extra arrival rate (queries/s) at that model's stage
    # (``quality`` with ``drain_queues``); empty: none.
    backlog_qps: Mapping[str, float] = dataclasses.field(default_factory=dict)


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


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: used as a dict key in hot loops
class _Option:
    batch: int
    rho: float
    cap_mq: int  # rho * mu * 1000, floored: planned milli-queries/s per worker
    mu_qps: float  # full per-worker throughput
    cmin: int  # fewest workers the queueing estimate assumes (light stages; 1 for heavy)


_BIG = 2**62


def _lin(m: cp_model.CpModel, terms: list[tuple[cp_model.IntVar, int]], lo: int, hi: int, enforce=None) -> None:
    """Add ``lo <= sum(coef * var) <= hi`` (only if ``enforce`` is true) straight into the proto.

    The expression API spends ~10x the solve time in Python on these models; writing the proto
    keeps a 16-GPU plan within tens of milliseconds.
    """
    acc: dict[int, int] = {}
    for v, c in terms:
        if c:
            acc[v.index] = acc.get(v.index, 0) + int(c)
    ct = m.proto.constraints.add()
    if enforce is not None:
        ct.enforcement_literal.append(enforce.index)
    ct.linear.vars.extend(acc.keys())
    ct.linear.coeffs.extend(acc.values())
    ct.linear.domain.extend([lo, hi])


def _lin2(m: cp_model.CpModel, a: cp_model.IntVar, ca: int, b: cp_model.IntVar, cb: int, lo: int, hi: int) -> None:
    """``lo <= ca a + cb b <= hi`` for two distinct variables (the hot path of (C4))."""
    ct = m.proto.constraints.add()
    ct.linear.vars.extend((a.index, b.index))
    ct.linear.coeffs.extend((ca, cb))
    ct.linear.domain.extend((lo, hi))


def solve_cascade(inst: Instance, spec: CascadeSpec, policy: str) -> Plan:
    """Solve the cascade MILP for ``inst``; returns the plan or raises :class:`PlannerInfeasible`."""
    t0 = time.perf_counter()
    N, D, q = inst.num_workers, inst.demand_qps, spec.queue

    def lam_l(m: str) -> float:
        """Arrival rate (queries/s) at light model ``m``'s stage: every query, plus its backlog."""
        return D + spec.backlog_qps.get(m, 0.0)

    def lam_h(m: str, f: float) -> float:
        """Arrival rate at heavy model ``m``'s stage when a share ``f`` is deferred (0: no stage)."""
        return D * f + spec.backlog_qps.get(m, 0.0) if f > 0 else 0.0

    slo_us = int(math.floor(inst.slo_ms * _US))
    grids: dict[tuple[str, str], list[_GridPoint]] = {}
    for p in spec.pairs:
        curves = inst.curves_for(*p)
        if curves is not None:
            grids[p] = threshold_grid(curves[0], curves[1], spec.threshold_step, spec.dedupe_deferral)
    if not grids:
        raise PlannerInfeasible(f"no eligible (light, heavy) pair with curves among {list(spec.pairs)}")

    # Stage options (b, rho) and the arrival rates each stage may see: D (light), D f (heavy).
    rates: dict[tuple[str, str], list[float]] = {}
    for p, g in grids.items():
        rates.setdefault((p[0], LIGHT), [lam_l(p[0])])
        rates.setdefault((p[1], HEAVY), [])
        rates[(p[1], HEAVY)] = sorted(set(rates[(p[1], HEAVY)]) | {lam_h(p[1], pt.f) for pt in g if pt.f > 0})
    stages: dict[tuple[str, str], list[_Option]] = {}
    for sg in rates:
        prof = inst.model(sg[0])
        stages[sg] = [
            _Option(b, rho, int(math.floor(rho * prof.throughput_qps(b) * _MQ)), prof.throughput_qps(b),
                    q.min_workers(prof, b, rho, lam_l(sg[0])) if sg[1] == LIGHT else 1)
            for b in prof.batch_sizes
            if prof.latency_ms(b) <= inst.slo_ms  # a slower batch can never meet the SLO
            for rho in q.utilization_levels
        ]
    # Price every (stage option, rate) in one vectorized pass: batch + wait (+ capped fill), ms.
    keys = [(sg, o, lam) for sg, lams in rates.items() for lam in lams for o in stages[sg]]
    waits = q.wait_ms([(inst.model(sg[0]), o.batch, o.rho, lam) for sg, o, lam in keys], N)
    fixed = {
        key: inst.model(key[0][0]).latency_ms(key[1].batch) + w + q.fill_const_ms(key[1].batch) for key, w in zip(keys, waits)
    }

    def stage_ms(sg: tuple[str, str], o: _Option, lam: float, x: int = 0) -> float:
        """Planned latency of option ``o`` of stage ``sg`` at rate ``lam`` with ``x`` workers, ms."""
        ms = fixed[(sg, o, lam)]
        return ms + (q.fill_ms_per_worker(o.batch, lam) * x if x > 0 and o.batch > 1 else 0.0)

    for sg, opts in stages.items():  # prune options that cannot be used, dedupe equivalent ones
        if sg[1] == LIGHT:
            best: dict[tuple[int, int], _Option] = {}
            for o in opts:
                if o.cmin <= N and stage_ms(sg, o, lam_l(sg[0])) <= inst.slo_ms:
                    key = (o.batch, o.cmin)  # same workers floor, same wait: keep the loosest rho
                    if key not in best or o.rho > best[key].rho:
                        best[key] = o
            stages[sg] = list(best.values())
        else:
            stages[sg] = [o for o in opts if any(stage_ms(sg, o, lam) <= inst.slo_ms for lam in rates[sg])]

    def floor(sg: tuple[str, str], lam: float) -> tuple[int, float]:
        """Fewest GPUs and lowest latency (ms) any single option of ``sg`` needs at rate ``lam``.

        Both are lower bounds of what the MILP can achieve (it rounds against itself), so a
        (pair, threshold) whose floors already break (C7) or (C8) is left out of the model.
        """
        best_x, best_ms = N + 1, math.inf
        for o in stages[sg]:
            x = max(o.cmin, math.ceil(lam / (o.rho * o.mu_qps) - 1e-9)) if lam > 0 else o.cmin
            ms = stage_ms(sg, o, lam, x) if x <= N else math.inf
            if ms <= inst.slo_ms:
                best_x, best_ms = min(best_x, x), min(best_ms, ms)
        return best_x, best_ms

    floors: dict[tuple[tuple[str, str], float], tuple[int, float]] = {}
    kept = []
    for p, g in grids.items():
        lk = ((p[0], LIGHT), lam_l(p[0]))
        if lk not in floors:
            floors[lk] = floor(*lk)
        xl, ml = floors[lk]
        for k, pt in enumerate(g):
            hk = ((p[1], HEAVY), lam_h(p[1], pt.f))
            if pt.f > 0 and hk not in floors:
                floors[hk] = floor(*hk)
            xh, mh = floors[hk] if pt.f > 0 else (0, 0.0)
            if xl + xh <= N and ml + mh <= inst.slo_ms:
                kept.append((p, k))
    if not kept:
        raise PlannerInfeasible(
            f"infeasible: {N} GPUs cannot serve {D:.3f} qps within the {inst.slo_ms:.0f} ms SLO at any threshold"
        )

    # Tie-break weights over all stages, so the objective of a model restricted to some pairs
    # has the same coefficients as the one model over every pair, and values compare exactly.
    batch_ms = {(sg, i): int(round(inst.model(sg[0]).latency_ms(o.batch))) for sg, opts in stages.items() for i, o in enumerate(opts)}
    ms_bound = sum(max((batch_ms[(sg, i)] for i in range(len(opts))), default=0) for sg, opts in stages.items()) + 1
    w_fid = (100 * len(stages) + 1) * ms_bound  # ``min_fid``: weight of FID + move cost over the ties
    if spec.objective not in ("max_threshold", "min_fid"):
        raise ValueError(f"objective {spec.objective!r}; expected 'max_threshold' or 'min_fid'")

    def solve_group(group: list[tuple[tuple[str, str], int]], limit_s: float) -> tuple[int, int, dict]:
        """Build and solve the MILP over the (pair, threshold) choices ``group`` and their stages.

        Returns (CP-SAT status, objective as an exact integer (``min_fid``; 0 otherwise), decoded
        choice: ``pk``, and per model workers / batch / capacity qps / latency ms).
        """
        m = cp_model.CpModel()
        z = {(p, k): m.new_bool_var(f"z{p}{k}") for p, k in group}
        used = {(p[0], LIGHT) for p, _ in group} | {(p[1], HEAVY) for p, _ in group}
        sgs = {sg: opts for sg, opts in stages.items() if sg in used}  # other stages would be forced to 0
        _lin(m, [(v, 1) for v in z.values()], 1, 1)  # (C1)
        y = {(sg, i): m.new_bool_var(f"y{sg}{i}") for sg, opts in sgs.items() for i in range(len(opts))}
        n = {(sg, i): m.new_int_var(0, N, f"n{sg}{i}") for sg, opts in sgs.items() for i in range(len(opts))}

        def active(sg: tuple[str, str]) -> list[tuple[tuple[str, str], int]]:
            """The (pair, threshold) choices under which stage ``sg`` runs."""
            if sg[1] == LIGHT:
                return [(p, k) for p, k in z if p[0] == sg[0]]
            return [(p, k) for p, k in z if p[1] == sg[0] and grids[p][k].f > 0]

        def cap_terms(sg: tuple[str, str], scale: int = 1) -> list[tuple[cp_model.IntVar, int]]:
            return [(n[(sg, i)], scale * o.cap_mq) for i, o in enumerate(sgs[sg])]

        d_mq = int(math.ceil(D * _MQ - 1e-9))
        for sg, opts in sgs.items():
            act = active(sg)
            # (C2) light / (C3) heavy: one option exactly when the stage runs
            _lin(m, [(y[(sg, i)], 1) for i in range(len(opts))] + [(z[pk], -1) for pk in act], 0, 0)
            for i, o in enumerate(opts):
                _lin2(m, n[(sg, i)], 1, y[(sg, i)], -N, -_BIG, 0)  # (C4) n <= N y
                _lin2(m, n[(sg, i)], 1, y[(sg, i)], -o.cmin, 0, _BIG)  # (C4) n >= cmin y
            if sg[1] == LIGHT:  # (C5)
                dl_mq = int(math.ceil(lam_l(sg[0]) * _MQ - 1e-9))
                _lin(m, cap_terms(sg) + [(z[pk], -dl_mq) for pk in act], 0, _BIG)
            else:  # (C6): every (p, k) with this heavy model, f = 0 ones contribute nothing
                dem = [(z[(p, k)], -int(math.ceil(lam_h(sg[0], grids[p][k].f) * _MQ - 1e-9))) for p, k in z if p[1] == sg[0]]
                _lin(m, cap_terms(sg) + dem, 0, _BIG)
        _lin(m, [(v, 1) for v in n.values()], 0, N)  # (C7)

        def latency_terms(sg: tuple[str, str], lam: float) -> tuple[list[tuple[cp_model.IntVar, int]], list[cp_model.IntVar]]:
            """Stage latency at rate ``lam`` as linear terms in µs ((s + w) y + phi n), and the option
            binaries that cannot meet the SLO at this rate whatever else happens (excluded by (C8))."""
            terms, banned = [], []
            for i, o in enumerate(sgs[sg]):
                c = _us(stage_ms(sg, o, lam), slo_us)
                if c > slo_us:
                    banned.append(y[(sg, i)])
                    continue
                terms.append((y[(sg, i)], c))
                phi = q.fill_ms_per_worker(o.batch, lam)
                if phi > 0:
                    terms.append((n[(sg, i)], _us(phi, slo_us)))
            return terms, banned

        terms_at: dict[tuple[tuple[str, str], float], tuple[list, list]] = {}  # shared by pairs with a stage and rate
        for (p, k), zv in z.items():  # (C8)
            f = grids[p][k].f
            keys_ = [((p[0], LIGHT), lam_l(p[0]))] + ([((p[1], HEAVY), lam_h(p[1], f))] if f > 0 else [])
            for key in keys_:
                if key not in terms_at:
                    terms_at[key] = latency_terms(*key)
            _lin(m, [t for key in keys_ for t in terms_at[key][0]], -_BIG, slo_us, enforce=zv)
            banned = [v for key in keys_ for v in terms_at[key][1]]
            if banned:  # (C8) for options alone over the SLO: z => none of them
                _lin(m, [(v, 1) for v in banned], 0, 0, enforce=zv)

        # Tie-breaks only weigh option binaries (cheap for the search): shorter batches, then (for
        # ``quality``) lower planned utilization, i.e. more headroom.
        ties = [key for key in batch_ms if key in y]
        ov, oc = [], []
        if spec.objective == "max_threshold":
            hr = m.new_int_var(0, HEADROOM_MAX_PCT, "headroom_pct")
            light_all = [t for sg in sgs if sg[1] == LIGHT for t in cap_terms(sg, 100)]
            _lin(m, light_all + [(hr, -d_mq)], 100 * d_mq, _BIG)  # (C10)
            for (p, k), zv in z.items():
                f_mq = int(math.ceil(D * grids[p][k].f * _MQ - 1e-9))
                if f_mq > 0:
                    _lin(m, cap_terms((p[1], HEAVY), 100) + [(hr, -f_mq)], 100 * f_mq, _BIG, enforce=zv)  # (C10)
            order = sorted(z, key=lambda pk: grids[pk[0]][pk[1]].t)
            w_hr = ms_bound
            w_t = (HEADROOM_MAX_PCT + 1) * w_hr
            m.maximize(
                cp_model.LinearExpr.weighted_sum(
                    [z[pk] for pk in order] + [hr] + [y[key] for key in ties],
                    [w_t * r for r in range(len(order))] + [w_hr] + [-batch_ms[key] for key in ties],
                )
            )
        else:
            ov, oc = list(z.values()), [N * int(round(grids[p][k].fid * _FID_SCALE)) for (p, k) in z]
            if spec.switch_cost_fid > 0 and inst.current is not None:
                gamma = int(round(spec.switch_cost_fid * _FID_SCALE))
                for name in dict.fromkeys(sg[0] for sg in sgs):  # a model with no stage here loads nothing
                    x = [(n[(sg, i)], 1) for sg, opts in sgs.items() if sg[0] == name for i in range(len(opts))]
                    x0 = int(inst.current.workers.get(name, 0))
                    d = m.new_int_var(0, N, f"loads_{name}")
                    _lin(m, x + [(d, -1)], -_BIG, x0)  # (C9) d >= x - x0 (and d >= 0 by domain)
                    ov.append(d)
                    oc.append(gamma)
            # Lexicographic: FID + move cost, then the lowest planned utilization, then short batches.
            ov += [y[key] for key in ties]
            oc = [c * w_fid for c in oc] + [int(round(100 * stages[key[0]][key[1]].rho)) * ms_bound + batch_ms[key] for key in ties]
            m.minimize(cp_model.LinearExpr.weighted_sum(ov, oc))

        # Branch on (pair, threshold) best-objective first: the first feasible one is then usually
        # the optimum and the rest of the search is the proof.
        best_first = sorted(z, key=lambda pk: grids[pk[0]][pk[1]].fid if spec.objective == "min_fid" else -grids[pk[0]][pk[1]].t)
        m.add_decision_strategy([z[pk] for pk in best_first], cp_model.CHOOSE_FIRST, cp_model.SELECT_MAX_VALUE)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = limit_s
        solver.parameters.num_search_workers = spec.search_workers
        solver.parameters.cp_model_presolve = spec.presolve
        solver.parameters.linearization_level = spec.linearization_level
        if spec.fixed_search:
            solver.parameters.search_branching = cp_model.FIXED_SEARCH
        status = solver.solve(m)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return status, 0, {}
        pk = next(key for key, v in z.items() if solver.value(v))
        dec: dict = {"pk": pk, "workers": {}, "batch": {}, "cap": {}, "lat": {}}
        g = grids[pk[0]][pk[1]]
        for sg in ((pk[0][0], LIGHT), (pk[0][1], HEAVY)):
            lam = lam_l(sg[0]) if sg[1] == LIGHT else lam_h(sg[0], g.f)
            for i, o in enumerate(sgs[sg]):
                if solver.value(y[(sg, i)]):
                    x = int(solver.value(n[(sg, i)]))
                    dec["workers"][sg[0]], dec["batch"][sg[0]], dec["cap"][sg[0]] = x, o.batch, x * o.mu_qps
                    dec["lat"][sg[0]] = stage_ms(sg, o, lam, x)
        return status, sum(c * solver.value(v) for v, c in zip(ov, oc)), dec

    # ``min_fid`` with several pairs: the pairs share no decision (C1), so the optimum over all
    # is the best of the per-pair optima. Solving each pair as its own small model, best FID
    # bound first, and skipping pairs whose bound (their best FID, no move cost, no ties) cannot
    # beat the incumbent, gives the same plan as the one big model at a fraction of its cost.
    # ``max_threshold`` ranks thresholds across pairs in one objective: one model.
    bound: dict[tuple[str, str], int] = {}
    if spec.objective == "min_fid" and spec.decompose_pairs:
        by_pair: dict[tuple[str, str], list[tuple[tuple[str, str], int]]] = {}
        for pk in kept:
            by_pair.setdefault(pk[0], []).append(pk)
        bound = {p: N * min(int(round(grids[p][k].fid * _FID_SCALE)) for _, k in g) * w_fid for p, g in by_pair.items()}
        groups = sorted(by_pair.values(), key=lambda g: bound[g[0][0]])
    else:
        groups = [kept]
    best: tuple[int, dict] | None = None
    proven = True  # every group solved to optimality or proved infeasible
    for g in groups:
        if best is not None and bound[g[0][0]] >= best[0]:
            break  # sorted by bound: no later pair can beat the incumbent either
        left_s = spec.time_limit_s - (time.perf_counter() - t0)
        if left_s <= 0:
            proven = False
            break
        status, obj, dec = solve_group(g, left_s)
        if status == cp_model.INFEASIBLE:
            continue
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            proven = False
            continue
        proven = proven and status == cp_model.OPTIMAL
        if best is None or obj < best[0]:  # ties: the earlier (better-bound) pair, like one model's first solution
            best = (obj, dec)
    if best is None:
        if proven:
            raise PlannerInfeasible(
                f"infeasible: {N} GPUs cannot serve {D:.3f} qps within the {inst.slo_ms:.0f} ms SLO at any threshold"
            )
        raise PlannerInfeasible(f"CP-SAT found no plan within {spec.time_limit_s} s")

    dec = best[1]
    (p, k) = dec["pk"]
    g = grids[p][k]
    return Plan(
        policy=policy,
        workers=dec["workers"],
        batch_size=dec["batch"],
        threshold=g.t,
        capacity_qps=dec["cap"],
        expected_fid=g.fid,
        light_fraction=1.0 - g.f,
        slack_ms=inst.slo_ms - sum(dec["lat"].values()),
        status="OPTIMAL" if proven else "FEASIBLE",
        solve_time_ms=(time.perf_counter() - t0) * 1000.0,
        routing="cascade",
        heavy_share=g.f,
        light_model=p[0],
        heavy_model=p[1] if g.f > 0 else "",
        stage_latency_ms=dec["lat"],
    )
