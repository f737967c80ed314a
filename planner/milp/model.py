r"""The cascade MILP: GPUs, batch size and utilization per stage, pair and threshold per window.

One formulation serves both cascade policies (``diffserve``: the paper's; ``quality``: ours).
They differ in the queueing terms, the utilization levels and the objective. It is solved with
OR-Tools CP-SAT (integer coefficients: rates in milli-queries/s rounded against us, times in
microseconds rounded up, so a CP-SAT-feasible plan is feasible in the real numbers). This module
builds and solves the model over a set of (pair, threshold) choices; :mod:`planner.milp.options`
prices its coefficients, :mod:`planner.milp.pruning` removes what cannot be optimal,
:mod:`planner.milp.decompose` splits it by pair and :mod:`planner.milp.decode` reads the plan.

Data
----
- models ``m`` ordered light -> heavy; pairs ``p = (l(p), h(p))`` with known curves;
- batch sizes ``b`` of a model's profile with latency ``s[m,b]`` ms and per-GPU throughput
  ``mu[m,b] = 1000 b / s[m,b]`` queries/s;
- per pair a threshold grid ``k`` with ``t[p,k]``, deferral ``f[p,k]`` and expected FID
  ``Q[p,k] = FID_p(1 - f[p,k])``, and router share ``r[p,k] = 0``; with a prompt router
  (``hybrid``, a pair with a :class:`~planner.types.HybridSurface`) the grid is the surface's
  points ``k = (r, d)``: a share ``r[p,k]`` of all queries goes straight to heavy (skipping light
  and the discriminator), the discriminator defers a share ``d`` of the rest at threshold
  ``t[p,k]``, the heavy model serves ``f[p,k] = r + (1 - r) d`` and ``Q[p,k]`` is the surface's
  FID; ``r = 0`` is the cascade and every constraint below reduces to its form without a router;
- utilization levels ``rho`` in (0, 1] (``diffserve``: only 1.0);
- demand ``D`` queries/s, GPUs ``N``, latency SLO ``SLO`` ms, current GPUs per model ``x0[m]``;
  backlog rate ``B[m]`` queries/s (queued queries to drain; 0 unless ``quality`` drains queues);
- a stage ``sg = (m, role)`` is model ``m`` as the light or as the heavy model of a pair; its
  options ``i = (b, rho)``. The stage's arrival rate is ``lam = D (1 - r[p,k]) + B[l]`` (light,
  when ``r[p,k] < 1``) or ``D f[p,k] + B[h]`` (heavy, when ``f[p,k] > 0``); below, ``D (1 - r)``
  in (C5) and ``D f`` in (C6) stand for these rates;
  ``w[sg,i,k]`` ms is the queueing estimate at that rate, ``phi[sg,i,k]`` ms per GPU the
  batch-fill coefficient and ``cmin[sg,i]`` the fewest GPUs the estimate assumes (a light stage
  with several rates: the lowest over them, as (C5) at each rate forces that rate's floor).
  ``diffserve``: ``w`` = the observed delay (Little's law), ``phi = 0``, ``cmin = 1``.
  ``quality``: ``w`` = M/D/c wait with ``ceil(lam s / (b rho))`` GPUs, ``phi = 1000 (b-1)/lam``
  (see :mod:`planner.queueing`).

Variables
---------
- ``z[p,k]`` in {0,1}: pair ``p`` runs at threshold ``t[p,k]`` (and router share ``r[p,k]``);
- ``y[sg,i]`` in {0,1}: stage ``sg`` uses option ``i``;
- ``n[sg,i]`` in {0..N} (integer): GPUs of stage ``sg`` with option ``i``; this is the
  product ``x[sg] * y[sg,i]`` of the stage's GPU count and its option binary, linearized by
  (C4): since at most one ``y[sg,.]`` is 1, ``x[sg] = sum_i n[sg,i]``. No variable is indexed
  by GPU, so the model's size does not grow with ``N``;
- ``quality`` only: ``d[m]`` >= 0 GPUs that newly load model ``m``;
- ``diffserve`` only: ``hr`` in {0..100}, the common capacity headroom in percent (tie-break).

Constraints
-----------
(C1) ``sum_{p,k} z[p,k] = 1``: one pair and one threshold.
(C2) ``sum_i y[(l,L),i] = sum_{p: l(p)=l} sum_{k: r[p,k]<1} z[p,k]`` for every model ``l``: the
     chosen pair's light stage has exactly one option when the router keeps some queries,
     other light stages none.
(C3) ``sum_i y[(h,H),i] = sum_{p: h(p)=h} sum_{k: f[p,k]>0} z[p,k]`` for every ``h``: the heavy
     stage exists iff it serves something (routed or deferred).
(C4) ``cmin[sg,i] y[sg,i] <= n[sg,i] <= N y[sg,i]``: GPUs only on the chosen option, at
     least one (and as many as the queueing estimate assumes).
(C5) ``sum_i rho[i] mu[l,b] n[(l,L),i] >= D sum_{p: l(p)=l, k} (1 - r[p,k]) z[p,k]``: light
     capacity at the planned utilization serves every query the router keeps (all of them
     without a router).
(C6) ``sum_i rho[i] mu[h,b] n[(h,H),i] >= D sum_{p: h(p)=h, k} f[p,k] z[p,k]``: heavy capacity
     serves the routed and the deferred share.
(C7) ``sum_{sg,i} n[sg,i] <= N``: GPUs in use.
(C8) for every ``(p,k)``, with ``Lat_L = sum_i (s + w)[(l,L),i,k] y[(l,L),i] + phi[(l,L),i,k] n[(l,L),i]``
     and ``Lat_H`` the same for ``(h,H)``: ``z[p,k] = 1  =>``
     ``Lat_L + Lat_H <= SLO`` when some queries pass both models (``f[p,k] > r[p,k]``: the
     discriminator defers some); otherwise each path alone: ``Lat_L <= SLO`` (if ``r < 1``) and
     ``Lat_H <= SLO`` (if ``f > 0``), since a routed query costs only heavy and a light-served one
     only light. Batch latency + queueing of each stage on the path within the SLO (big-M form:
     ``<= SLO + M (1 - z[p,k])``; CP-SAT takes it as an enforcement literal).
(C9) ``quality``: ``d[m] >= sum_{sg of m, i} n[sg,i] - x0[m]``, ``d[m] >= 0``: GPUs that must
     load model ``m`` (freeing a GPU costs nothing, loading one costs a model load).
(C10) ``diffserve``: ``100 cap_L >= D (100 + hr)``; ``z[p,k] => 100 cap_H >= D f[p,k] (100 + hr)``.

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

from ortools.sat.python import cp_model

from planner.milp.options import CascadeOptions, StageOption
from planner.milp.spec import FID_SCALE, HEADROOM_MAX_PCT, HEAVY, LIGHT, US_PER_MS, Choice, Stage

_BIG = 2**62
Terms = list[tuple[cp_model.IntVar, int]]


def _lin(model: cp_model.CpModel, terms: Terms, lo: int, hi: int, enforce=None) -> None:
    """Add ``lo <= sum(coef * var) <= hi`` (only if ``enforce`` is true) straight into the proto.

    The expression API spends ~10x the solve time in Python on these models; writing the proto
    keeps a 16-GPU plan within tens of milliseconds.
    """
    acc: dict[int, int] = {}
    for v, c in terms:
        if c:
            acc[v.index] = acc.get(v.index, 0) + int(c)
    ct = model.proto.constraints.add()
    if enforce is not None:
        ct.enforcement_literal.append(enforce.index)
    ct.linear.vars.extend(acc.keys())
    ct.linear.coeffs.extend(acc.values())
    ct.linear.domain.extend([lo, hi])


def _lin2(model: cp_model.CpModel, a: cp_model.IntVar, ca: int, b: cp_model.IntVar, cb: int, lo: int, hi: int) -> None:
    """``lo <= ca a + cb b <= hi`` for two distinct variables (the hot path of (C4))."""
    ct = model.proto.constraints.add()
    ct.linear.vars.extend((a.index, b.index))
    ct.linear.coeffs.extend((ca, cb))
    ct.linear.domain.extend((lo, hi))


def _us(ms: float, slo_us: int) -> int:
    """ms -> integer µs rounded up, clamped just above the SLO (inf or huge => infeasible if used)."""
    if not math.isfinite(ms) or ms * US_PER_MS > slo_us:
        return slo_us + 1
    return int(math.ceil(ms * US_PER_MS - 1e-6))


@dataclasses.dataclass(frozen=True)
class TieWeights:
    """Tie-break coefficients, computed over every stage so that the objective of a model
    restricted to some pairs has the same coefficients as the one model over every pair, and
    objective values of different models compare exactly."""

    batch_ms: dict[tuple[Stage, int], int]  # (stage, option index) -> batch latency, integer ms
    ms_bound: int  # more than any sum of batch_ms
    fid_weight: int  # ``min_fid``: weight of FID + move cost over the ties


def tie_weights(opts: CascadeOptions) -> TieWeights:
    batch_ms = {
        (sg, i): int(round(opts.inst.model(sg[0]).latency_ms(o.batch)))
        for sg, options in opts.stages.items()
        for i, o in enumerate(options)
    }
    ms_bound = sum(max((batch_ms[(sg, i)] for i in range(len(o))), default=0) for sg, o in opts.stages.items()) + 1
    return TieWeights(batch_ms, ms_bound, (100 * len(opts.stages) + 1) * ms_bound)


@dataclasses.dataclass(frozen=True, eq=False)
class GroupModel:
    """The CP-SAT model over one group of (pair, threshold) choices, with its variables."""

    model: cp_model.CpModel
    z: dict[Choice, cp_model.IntVar]
    y: dict[tuple[Stage, int], cp_model.IntVar]
    n: dict[tuple[Stage, int], cp_model.IntVar]  # GPUs per (stage, option)
    stages: dict[Stage, list[StageOption]]  # the stages of the group's pairs
    # ``min_fid``'s objective as (variables, coefficients), to compare values across models
    objective_vars: tuple[cp_model.IntVar, ...] = ()
    objective_coefs: tuple[int, ...] = ()

    def capacity_terms(self, stage: Stage, scale: int = 1) -> Terms:
        """Planned capacity of ``stage`` in milli-queries/s (times ``scale``), as linear terms."""
        return [(self.n[(stage, i)], scale * o.cap_mq) for i, o in enumerate(self.stages[stage])]

    def active_choices(self, opts: CascadeOptions, stage: Stage) -> list[Choice]:
        """The (pair, threshold) choices under which ``stage`` runs."""
        if stage[1] == LIGHT:
            return [(p, k) for p, k in self.z if p[0] == stage[0] and opts.grids[p][k].light_runs]
        return [(p, k) for p, k in self.z if p[1] == stage[0] and opts.grids[p][k].f > 0]


def _add_stage_constraints(opts: CascadeOptions, gm: GroupModel) -> None:
    """(C2)-(C6) per stage, then (C7)."""
    gpus = opts.gpus
    for sg, options in gm.stages.items():
        active = gm.active_choices(opts, sg)
        # (C2) light / (C3) heavy: one option exactly when the stage runs
        _lin(gm.model, [(gm.y[(sg, i)], 1) for i in range(len(options))] + [(gm.z[pk], -1) for pk in active], 0, 0)
        for i, o in enumerate(options):
            _lin2(gm.model, gm.n[(sg, i)], 1, gm.y[(sg, i)], -gpus, -_BIG, 0)  # (C4) n <= N y
            _lin2(gm.model, gm.n[(sg, i)], 1, gm.y[(sg, i)], -o.min_gpus, 0, _BIG)  # (C4) n >= cmin y
        if sg[1] == LIGHT:  # (C5): the queries the router keeps (all of them without a router)
            demand = [(gm.z[(p, k)], -opts.demand_mq(opts.light_rate_qps(sg[0], opts.grids[p][k].r))) for p, k in active]
            _lin(gm.model, gm.capacity_terms(sg) + demand, 0, _BIG)
        else:  # (C6): every (p, k) with this heavy model, f = 0 ones contribute nothing
            demand = [(gm.z[(p, k)], -opts.demand_mq(opts.heavy_rate_qps(sg[0], opts.grids[p][k].f)))
                      for p, k in gm.z if p[1] == sg[0]]
            _lin(gm.model, gm.capacity_terms(sg) + demand, 0, _BIG)
    _lin(gm.model, [(v, 1) for v in gm.n.values()], 0, gpus)  # (C7)


def _latency_terms(opts: CascadeOptions, gm: GroupModel, stage: Stage, rate_qps: float) -> tuple[Terms, list[cp_model.IntVar]]:
    """Stage latency at ``rate_qps`` as linear terms in µs ((s + w) y + phi n), and the option
    binaries that cannot meet the SLO at this rate whatever else happens (excluded by (C8))."""
    slo_us = opts.slo_us
    terms, banned = [], []
    for i, o in enumerate(gm.stages[stage]):
        c = _us(opts.stage_ms(stage, o, rate_qps), slo_us)
        if c > slo_us:
            banned.append(gm.y[(stage, i)])
            continue
        terms.append((gm.y[(stage, i)], c))
        phi = opts.spec.queue.fill_ms_per_gpu(o.batch, rate_qps)
        if phi > 0:
            terms.append((gm.n[(stage, i)], _us(phi, slo_us)))
    return terms, banned


def _add_latency_constraints(opts: CascadeOptions, gm: GroupModel) -> None:
    """(C8) for every (pair, threshold) choice of the group."""
    terms_at: dict[tuple[Stage, float], tuple[Terms, list]] = {}  # shared by pairs with a stage and rate
    for (p, k), zv in gm.z.items():
        pt = opts.grids[p][k]
        keys = [((p[0], LIGHT), opts.light_rate_qps(p[0], pt.r))] if pt.light_runs else []
        if pt.f > 0:
            keys.append(((p[1], HEAVY), opts.heavy_rate_qps(p[1], pt.f)))
        for key in keys:
            if key not in terms_at:
                terms_at[key] = _latency_terms(opts, gm, *key)
        paths = [keys] if pt.defers or len(keys) == 1 else [[key] for key in keys]  # light + heavy, or each alone
        for path in paths:
            _lin(gm.model, [t for key in path for t in terms_at[key][0]], -_BIG, opts.slo_us, enforce=zv)
        banned = [v for key in keys for v in terms_at[key][1]]
        if banned:  # (C8) for options alone over the SLO: z => none of them
            _lin(gm.model, [(v, 1) for v in banned], 0, 0, enforce=zv)


def _max_threshold_objective(opts: CascadeOptions, gm: GroupModel, weights: TieWeights) -> tuple[list, list[int]]:
    """``diffserve``: (C10) and max t, then headroom, then short batches.

    Returns no objective terms: only ``min_fid`` compares objective values across models."""
    m, z = gm.model, gm.z
    hr = m.new_int_var(0, HEADROOM_MAX_PCT, "headroom_pct")
    d_mq = opts.demand_mq(opts.inst.demand_qps)
    light_all = [t for sg in gm.stages if sg[1] == LIGHT for t in gm.capacity_terms(sg, 100)]
    _lin(m, light_all + [(hr, -d_mq)], 100 * d_mq, _BIG)  # (C10)
    for (p, k), zv in z.items():
        f_mq = opts.demand_mq(opts.inst.demand_qps * opts.grids[p][k].f)
        if f_mq > 0:
            _lin(m, gm.capacity_terms((p[1], HEAVY), 100) + [(hr, -f_mq)], 100 * f_mq, _BIG, enforce=zv)  # (C10)
    ties = [key for key in weights.batch_ms if key in gm.y]
    order = sorted(z, key=lambda pk: opts.grids[pk[0]][pk[1]].t)
    w_hr = weights.ms_bound
    w_t = (HEADROOM_MAX_PCT + 1) * w_hr
    m.maximize(
        cp_model.LinearExpr.weighted_sum(
            [z[pk] for pk in order] + [hr] + [gm.y[key] for key in ties],
            [w_t * r for r in range(len(order))] + [w_hr] + [-weights.batch_ms[key] for key in ties],
        )
    )
    return [], []


def _min_fid_objective(opts: CascadeOptions, gm: GroupModel, weights: TieWeights) -> tuple[list, list[int]]:
    """``quality``: (C9) and min FID + move cost, then low utilization, then short batches.

    Returns the objective's (variables, coefficients): its value compares across models."""
    m, gpus, inst, spec = gm.model, opts.gpus, opts.inst, opts.spec
    ov = list(gm.z.values())
    oc = [gpus * int(round(opts.grids[p][k].fid * FID_SCALE)) for (p, k) in gm.z]
    if spec.switch_cost_fid > 0 and inst.current is not None:
        gamma = int(round(spec.switch_cost_fid * FID_SCALE))
        for name in dict.fromkeys(sg[0] for sg in gm.stages):  # a model with no stage here loads nothing
            x = [(gm.n[(sg, i)], 1) for sg, options in gm.stages.items() if sg[0] == name for i in range(len(options))]
            x0 = int(inst.current.workers.get(name, 0))
            d = m.new_int_var(0, gpus, f"loads_{name}")
            _lin(m, x + [(d, -1)], -_BIG, x0)  # (C9) d >= x - x0 (and d >= 0 by domain)
            ov.append(d)
            oc.append(gamma)
    # Lexicographic: FID + move cost, then the lowest planned utilization, then short batches.
    ties = [key for key in weights.batch_ms if key in gm.y]
    ov += [gm.y[key] for key in ties]
    oc = [c * weights.fid_weight for c in oc] + [
        int(round(100 * opts.stages[key[0]][key[1]].rho)) * weights.ms_bound + weights.batch_ms[key] for key in ties
    ]
    m.minimize(cp_model.LinearExpr.weighted_sum(ov, oc))
    return ov, oc


def build_group_model(opts: CascadeOptions, group: list[Choice], weights: TieWeights) -> GroupModel:
    """The MILP over the (pair, threshold) choices ``group`` and the stages of their pairs."""
    m = cp_model.CpModel()
    gpus = opts.gpus
    z = {(p, k): m.new_bool_var(f"z{p}{k}") for p, k in group}
    used = {(p[0], LIGHT) for p, _ in group} | {(p[1], HEAVY) for p, _ in group}
    stages = {sg: options for sg, options in opts.stages.items() if sg in used}  # other stages would be forced to 0
    _lin(m, [(v, 1) for v in z.values()], 1, 1)  # (C1)
    y = {(sg, i): m.new_bool_var(f"y{sg}{i}") for sg, options in stages.items() for i in range(len(options))}
    n = {(sg, i): m.new_int_var(0, gpus, f"n{sg}{i}") for sg, options in stages.items() for i in range(len(options))}
    gm = GroupModel(m, z, y, n, stages)
    _add_stage_constraints(opts, gm)
    _add_latency_constraints(opts, gm)
    objective = _max_threshold_objective if opts.spec.objective == "max_threshold" else _min_fid_objective
    ov, oc = objective(opts, gm, weights)
    # Branch on (pair, threshold) best-objective first: the first feasible one is then usually
    # the optimum and the rest of the search is the proof.
    min_fid = opts.spec.objective == "min_fid"
    best_first = sorted(z, key=lambda pk: opts.grids[pk[0]][pk[1]].fid if min_fid else -opts.grids[pk[0]][pk[1]].t)
    m.add_decision_strategy([z[pk] for pk in best_first], cp_model.CHOOSE_FIRST, cp_model.SELECT_MAX_VALUE)
    return dataclasses.replace(gm, objective_vars=tuple(ov), objective_coefs=tuple(oc))


def solve_group_model(opts: CascadeOptions, gm: GroupModel, limit_s: float) -> tuple[int, cp_model.CpSolver]:
    """Solve ``gm`` within ``limit_s`` seconds with the spec's CP-SAT settings; (status, solver)."""
    spec = opts.spec
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = limit_s
    solver.parameters.num_search_workers = spec.search_workers
    solver.parameters.cp_model_presolve = spec.presolve
    solver.parameters.linearization_level = spec.linearization_level
    if spec.fixed_search:
        solver.parameters.search_branching = cp_model.FIXED_SEARCH
    return solver.solve(gm.model), solver
