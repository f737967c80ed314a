r"""Baseline policies (same interface as the cascade MILP) and the overload fallback plan.

- ``clipper-light`` / ``clipper-heavy``: every GPU serves one model, no cascade. The batch is
  the smallest profiled size whose N-GPU throughput meets the demand within the SLO (the
  lowest latency that keeps up); if none does, the highest-throughput batch within the SLO
  and status FALLBACK. Exhaustive over <= 6 batch sizes, hence OPTIMAL.
- ``proteus``: query-agnostic accuracy scaling. Each query goes to exactly one model at random,
  to the heavy one with probability ``s``; the MILP below picks the largest ``s``.
- ``static``: a fixed configuration (default the paper's DiffServe-Static: t = 0.02, 4 light +
  12 heavy GPUs, batch 16 light / 4 heavy), scaled proportionally when the cluster is smaller.
- :func:`fallback_plan`: demand above capacity (or any solver trouble): maximum throughput,
  t = 0, every GPU on the lightest model at its highest-throughput batch that fits the SLO; when
  none fits (the observed queueing alone exceeds the SLO), its highest-throughput batch all the
  same: the backlog needs the most throughput to drain, and admission shedding drops what
  cannot make its deadline. It asks the cascade to shed at the SLO itself
  (``admit_factor`` :data:`OVERLOAD_ADMIT_FACTOR`) instead of its default 1.5 x SLO: demand is
  above capacity, so a query admitted on a predicted latency past the SLO is a violation anyway
  and its GPU time makes the queries behind it late. The Clipper baselines keep the default.

Queueing for all of them is the observed delay (the paper's Little's law,
:func:`observed_queue_ms`), as in the paper's comparison.

Proteus MILP (CP-SAT; rates in milli-queries/s, shares in per-mille ``s`` in {0..1000})
--------------------------------------------------------------------------------------
Variables: ``y[m,b]`` in {0,1} (model ``m`` in {L, H} uses batch ``b``), ``n[m,b]`` in {0..N}
(its GPUs, the linearized product ``x[m] * y[m,b]``), ``s``.

(P1) ``sum_b y[m,b] <= 1`` for each ``m``.
(P2) ``y[m,b] <= n[m,b] <= N y[m,b]``.
(P3) ``sum_b mu[L,b] n[L,b] >= D (1 - s / 1000)``: light capacity for its random share.
(P4) ``sum_b mu[H,b] n[H,b] >= D s / 1000``: heavy capacity for its share.
(P5) ``sum_{m,b} n[m,b] <= N``.
(P6) ``sum_b (lat[m,b] + q[m]) y[m,b] <= SLO`` for each ``m`` (a query visits one model).
(P7) ``1000 - s <= 1000 sum_b y[L,b]`` and ``s <= 1000 sum_b y[H,b]``: a share needs a stage;
     ``sum_b y[L,b] <= 1000 - s`` and ``sum_b y[H,b] <= s``: a stage needs a share.
Objective: ``max s``, ties broken by the shortest batches. Expected FID is estimated as the linear mix
``(1 - s) FID(all light) + s FID(all heavy)`` of the quality curve's end points (the curve
itself is for query-aware routing; a random mix has no published curve).
"""
from __future__ import annotations

import dataclasses
import math
import time

from ortools.sat.python import cp_model

from planner import queueing
from planner.types import Instance, ModelProfile, Plan

_MQ = 1000.0
# The overload fallback's admission limit, x SLO (Plan.admit_factor; docs/planner.md "Overload
# in the simulator" has the measurement behind it).
OVERLOAD_ADMIT_FACTOR = 1.0


def observed_queue_ms(inst: Instance, name: str) -> float:
    """The paper's queueing estimate for model ``name``: Little's law ``L / lambda`` on the last
    window when queue length and arrival rate are known, else the observed mean delay, else 0."""
    if name in inst.queue_length and inst.model_arrival_qps.get(name, 0.0) > 0:
        return queueing.littles_law_delay_ms(inst.queue_length[name], inst.model_arrival_qps[name])
    return float(inst.queue_delay_ms.get(name, 0.0))


def _feasible_batches(prof: ModelProfile, queue_ms: float, slo_ms: float) -> list[int]:
    return [b for b in prof.batch_sizes if prof.latency_ms(b) + queue_ms <= slo_ms]


def max_throughput_batch(prof: ModelProfile, batches: list[int]) -> int:
    """The batch of ``batches`` with the highest per-GPU throughput (ties: the smaller batch,
    the same throughput at less latency).

    Not simply the largest batch: a GPU can saturate before the largest profiled batch (the
    paper's SD-Turbo: 20.78 qps at 16, 20.51 at 32), where the larger batch only adds latency.
    """
    return max(batches, key=lambda b: (prof.throughput_qps(b), -b))


def drain_batch(prof: ModelProfile, slo_ms: float) -> int:
    """The batch that drains a backlog fastest: the highest-throughput one whose execution alone
    fits the SLO (queries queued after the backlog can still make it), or of all batches when
    none does (nothing can meet the SLO; answer as many as possible)."""
    return max_throughput_batch(prof, _feasible_batches(prof, 0.0, slo_ms) or list(prof.batch_sizes))


def fallback_plan(inst: Instance, policy: str, reason: str, t0: float | None = None) -> Plan:
    """Maximum-throughput plan: t = 0, all GPUs on the lightest model at its highest-throughput
    batch within the SLO (its latency plus the observed queueing).

    Under overload the observed queueing alone can exceed the SLO, so that no batch "fits". The
    plan then still takes the highest-throughput batch (:func:`drain_batch`): a small batch
    would cut capacity exactly when the backlog needs the most, and the queries that cannot make
    their deadline are shed on admission by the cascade, not by the planner.
    """
    prof = inst.models[0]
    q = observed_queue_ms(inst, prof.name)
    ok = _feasible_batches(prof, q, inst.slo_ms)
    if ok:
        b = max_throughput_batch(prof, ok)
    else:
        b = drain_batch(prof, inst.slo_ms)
        reason += (f"; observed queueing {q:.0f} ms leaves no batch of {prof.name} within the {inst.slo_ms:.0f} ms "
                   f"SLO: highest-throughput batch {b} to drain the backlog")
    n = inst.num_workers
    lat = prof.latency_ms(b) + q
    return Plan(
        policy=policy,
        workers={prof.name: n},
        batch_size={prof.name: b},
        threshold=0.0,
        capacity_qps={prof.name: n * prof.throughput_qps(b)},
        expected_fid=inst.quality.fid_at(1.0),
        light_fraction=1.0,
        slack_ms=inst.slo_ms - lat,
        status="FALLBACK",
        reason=reason,
        solve_time_ms=0.0 if t0 is None else (time.perf_counter() - t0) * 1000.0,
        routing="cascade",
        heavy_share=0.0,
        light_model=prof.name,
        heavy_model="",
        stage_latency_ms={prof.name: lat},
        admit_factor=OVERLOAD_ADMIT_FACTOR,
    )


@dataclasses.dataclass(frozen=True)
class ClipperPolicy:
    """All GPUs on one model (``which`` = "light": models[0], "heavy": models[-1])."""

    which: str = "light"

    def __post_init__(self) -> None:
        if self.which not in ("light", "heavy"):
            raise ValueError(f"ClipperPolicy.which = {self.which!r}; expected 'light' or 'heavy'")

    @property
    def name(self) -> str:
        return f"clipper-{self.which}"

    def solve(self, inst: Instance) -> Plan:
        prof = inst.models[0] if self.which == "light" else inst.models[-1]
        q = observed_queue_ms(inst, prof.name)
        ok = _feasible_batches(prof, q, inst.slo_ms)
        backlogged = not ok
        if backlogged:
            # The observed queueing alone exceeds the SLO (overload). Clipper still serves every
            # query with its one model, at its highest-throughput batch that executes within the
            # SLO; the all-light fallback plan would make Clipper-Heavy a different system.
            ok = _feasible_batches(prof, 0.0, inst.slo_ms)
            if not ok:  # a baseline keeps the cascade's default shedding, even in the fallback
                return dataclasses.replace(fallback_plan(inst, self.name, f"no batch of {prof.name} fits the SLO"),
                                           admit_factor=None)
        n = inst.num_workers
        meets = [] if backlogged else [b for b in ok if n * prof.throughput_qps(b) >= inst.demand_qps]
        b = min(meets) if meets else max_throughput_batch(prof, ok)
        share_light = 1.0 if self.which == "light" else 0.0
        lat = prof.latency_ms(b) + q
        return Plan(
            policy=self.name,
            workers={prof.name: n},
            batch_size={prof.name: b},
            threshold=0.0 if self.which == "light" else 1.0,
            capacity_qps={prof.name: n * prof.throughput_qps(b)},
            expected_fid=inst.quality.fid_at(share_light),
            light_fraction=share_light,
            slack_ms=inst.slo_ms - lat,
            status="OPTIMAL" if meets else "FALLBACK",
            reason="" if meets else (f"queueing {q:.0f} ms leaves no batch of {prof.name} within the SLO; "
                                     "max-throughput batch" if backlogged else
                                     f"demand {inst.demand_qps:.3f} qps above {prof.name} capacity; max-throughput batch"),
            routing=self.which,
            heavy_share=1.0 - share_light,
            light_model=prof.name if self.which == "light" else "",
            heavy_model=prof.name if self.which == "heavy" else "",
            stage_latency_ms={prof.name: lat},
        )


@dataclasses.dataclass(frozen=True)
class ProteusPolicy:
    """Query-agnostic random routing at the largest heavy share capacity allows (MILP above)."""

    time_limit_s: float = 1.0
    search_workers: int = 1
    name: str = "proteus"

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0 or self.search_workers < 1:
            raise ValueError(
                f"ProteusPolicy time_limit_s={self.time_limit_s}, search_workers={self.search_workers}; expected > 0, >= 1"
            )

    def solve(self, inst: Instance) -> Plan:
        t0 = time.perf_counter()
        N, D = inst.num_workers, inst.demand_qps
        profs = {"L": inst.models[0], "H": inst.models[-1]}
        qms = {k: observed_queue_ms(inst, p.name) for k, p in profs.items()}
        m = cp_model.CpModel()
        s = m.new_int_var(0, 1000, "heavy_share_permille")
        y, n, cap = {}, {}, {}
        for k, prof in profs.items():
            bs = _feasible_batches(prof, qms[k], inst.slo_ms)  # (P6): infeasible batches never offered
            for b in bs:
                y[k, b] = m.new_bool_var(f"y{k}{b}")
                n[k, b] = m.new_int_var(0, N, f"n{k}{b}")
                m.add(n[k, b] <= N * y[k, b])  # (P2)
                m.add(n[k, b] >= y[k, b])  # (P2)
            m.add(sum(y[k, b] for b in bs) <= 1)  # (P1)
            cap[k] = sum(int(math.floor(prof.throughput_qps(b) * _MQ)) * n[k, b] for b in bs)
            share = 1000 - s if k == "L" else s
            m.add(1000 * sum(y[k, b] for b in bs) >= share)  # (P7)
            m.add(sum(y[k, b] for b in bs) <= share)  # (P7)
        d_mq = int(math.ceil(D * _MQ - 1e-9))
        m.add(1000 * cap["L"] >= d_mq * (1000 - s))  # (P3)
        m.add(1000 * cap["H"] >= d_mq * s)  # (P4)
        m.add(sum(n.values()) <= N)  # (P5)
        # Largest heavy share; among equals, the shortest batches (integer ms).
        lat_ms = {key: int(round(profs[key[0]].latency_ms(key[1]))) for key in y}
        w = sum(lat_ms.values()) + 1
        m.maximize(cp_model.LinearExpr.weighted_sum([s] + list(y.values()), [w] + [-lat_ms[k] for k in y]))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = self.time_limit_s
        solver.parameters.num_search_workers = self.search_workers
        status = solver.solve(m)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return fallback_plan(inst, self.name, f"proteus MILP {solver.status_name(status)}: demand {D:.3f} qps", t0)
        share = solver.value(s) / 1000.0
        gpus, batch, capq, lat = {}, {}, {}, {}
        for (k, b), v in y.items():
            if solver.value(v):
                prof = profs[k]
                gpus[prof.name] = int(solver.value(n[k, b]))
                batch[prof.name] = b
                capq[prof.name] = gpus[prof.name] * prof.throughput_qps(b)
                lat[prof.name] = prof.latency_ms(b) + qms[k]
        q = inst.quality
        return Plan(
            policy=self.name,
            workers=gpus,
            batch_size=batch,
            threshold=0.0,
            capacity_qps=capq,
            expected_fid=(1.0 - share) * q.fid_at(1.0) + share * q.fid_at(0.0),
            light_fraction=1.0 - share,
            slack_ms=inst.slo_ms - max(lat.values()),
            status="OPTIMAL" if status == cp_model.OPTIMAL else "FEASIBLE",
            solve_time_ms=(time.perf_counter() - t0) * 1000.0,
            routing="random",
            heavy_share=share,
            light_model=profs["L"].name if share < 1.0 else "",
            heavy_model=profs["H"].name if share > 0.0 else "",
            stage_latency_ms=lat,
        )


@dataclasses.dataclass(frozen=True)
class StaticPolicy:
    """A fixed cascade configuration (the paper's DiffServe-Static by default)."""

    threshold: float = 0.02
    light_workers: int = 4
    heavy_workers: int = 12
    light_batch: int = 16
    heavy_batch: int = 4
    name: str = "static"

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"StaticPolicy.threshold = {self.threshold}; expected in [0, 1]")
        for f in ("light_workers", "heavy_workers"):
            if getattr(self, f) < 0:
                raise ValueError(f"StaticPolicy.{f} = {getattr(self, f)}; expected >= 0")
        if self.light_workers < 1:
            raise ValueError(f"StaticPolicy.light_workers = {self.light_workers}; expected >= 1")
        for f in ("light_batch", "heavy_batch"):
            if getattr(self, f) < 1:
                raise ValueError(f"StaticPolicy.{f} = {getattr(self, f)}; expected >= 1")

    def solve(self, inst: Instance) -> Plan:
        light, heavy = inst.models[0], inst.models[-1]
        for prof, b in ((light, self.light_batch), (heavy, self.heavy_batch)):
            if b not in prof.batch_latency_ms:
                raise ValueError(f"static batch {b} for {prof.name!r} is not profiled; profiled {prof.batch_sizes}")
        nl, nh, reason = self.light_workers, self.heavy_workers, ""
        if nl + nh > inst.num_workers:  # keep the configured ratio on a smaller cluster
            nl = max(1, round(inst.num_workers * nl / (nl + nh)))
            nh = inst.num_workers - nl
            reason = f"scaled {self.light_workers}+{self.heavy_workers} GPUs to {nl}+{nh} for {inst.num_workers} GPUs"
        f = inst.deferral.f(self.threshold)
        lat = {
            light.name: light.latency_ms(self.light_batch) + observed_queue_ms(inst, light.name),
            heavy.name: heavy.latency_ms(self.heavy_batch) + observed_queue_ms(inst, heavy.name),
        }
        return Plan(
            policy=self.name,
            workers={light.name: nl, heavy.name: nh},
            batch_size={light.name: self.light_batch, heavy.name: self.heavy_batch},
            threshold=self.threshold,
            capacity_qps={light.name: nl * light.throughput_qps(self.light_batch), heavy.name: nh * heavy.throughput_qps(self.heavy_batch)},
            expected_fid=inst.quality.fid_at(1.0 - f),
            light_fraction=1.0 - f,
            slack_ms=inst.slo_ms - (lat[light.name] + (lat[heavy.name] if f > 0 else 0.0)),
            status="STATIC",
            reason=reason,
            routing="cascade",
            heavy_share=f,
            light_model=light.name,
            heavy_model=heavy.name,
            stage_latency_ms=lat,
        )
