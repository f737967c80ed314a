"""Planning policies behind one interface: ``make_policy(name, **kw).plan(instance) -> Plan``.

``plan`` never raises for a valid :class:`Instance`: infeasible demand, solver time-outs and
unexpected solver errors all become :func:`planner.baselines.fallback_plan` (status
"FALLBACK", ``reason`` says why). Only a non-Instance argument raises (TypeError: a bug in the
caller, not a runtime condition). Bad policy parameters raise ValueError at construction.

- ``diffserve``: the paper's MILP (:mod:`planner.milp`, objective ``max_threshold``) on the
  pair (models[0], models[-1]) with the observed (Little's-law) queueing delay.
- ``quality``: ours (objective ``min_fid``): the threshold that minimises expected FID on the
  (U-shaped) quality curve, any (light, heavy) pair with known curves, queueing from an M/D/c
  model of batched service plus batch-fill wait at chosen utilization levels (priced at the
  forecast rate, ``Instance.demand_margin``), and a GPU-move cost (hysteresis); besides its
  thresholds each pair has the option of every query on its heavy model alone (``heavy_only``:
  light and the discriminator do not run, FID the curve's all-heavy value).
- ``hybrid``: ours with a prompt router (HADIS): ``quality``'s objective and queueing, where each
  pair with a :class:`~planner.types.HybridSurface` (``Instance.hybrid_surfaces``) also chooses
  the router share r (queries sent straight to heavy, skipping light and the discriminator) and
  the discriminator share d of the rest, on the surface's grid; pairs with only curves plan as
  in ``quality``.
- ``clipper-light``, ``clipper-heavy``, ``proteus``, ``static``: :mod:`planner.baselines`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol

from planner.baselines import ClipperPolicy, ProteusPolicy, StaticPolicy, fallback_plan, observed_queue_ms
from planner.spare import spread_spare_workers
from planner.milp import CascadeSpec, PlannerInfeasible, solve_cascade
from planner.queueing import QueueModel
from planner.types import Instance, Plan

POLICY_NAMES = ("diffserve", "quality", "hybrid", "clipper-light", "clipper-heavy", "proteus", "static")


class _Solver(Protocol):
    name: str

    def solve(self, inst: Instance) -> Plan: ...


_SOLVER_KNOBS = ("presolve", "linearization_level", "fixed_search", "decompose_pairs")


def _apply_overrides(owner: str, spec: CascadeSpec, overrides: tuple[tuple[str, Any], ...]) -> CascadeSpec:
    """CP-SAT knobs for experiments (benchmarks/bench_planner.py --solver-sweep)."""
    bad = [k for k, _ in overrides if k not in _SOLVER_KNOBS]
    if bad:
        raise ValueError(f"{owner}.solver_overrides keys {bad}; expected some of {_SOLVER_KNOBS}")
    return dataclasses.replace(spec, **dict(overrides))


def _check_solver_params(owner: str, time_limit_s: float, search_workers: int, threshold_step: float | None) -> None:
    if not time_limit_s > 0:
        raise ValueError(f"{owner}.time_limit_s = {time_limit_s}; expected > 0 seconds")
    if not isinstance(search_workers, int) or search_workers < 1:
        raise ValueError(f"{owner}.search_workers = {search_workers!r}; expected an int >= 1")
    if threshold_step is not None and not 0 < threshold_step <= 1:
        raise ValueError(f"{owner}.threshold_step = {threshold_step}; expected in (0, 1] or None")


@dataclasses.dataclass(frozen=True)
class DiffServePolicy:
    """The paper's formulation: maximize t s.t. capacity, SLO (observed queueing) and N GPUs."""

    time_limit_s: float = 1.0
    search_workers: int = 1  # CP-SAT search threads, not GPUs
    threshold_step: float | None = None
    solver_overrides: tuple[tuple[str, Any], ...] = ()
    name: str = "diffserve"

    def __post_init__(self) -> None:
        _check_solver_params("DiffServePolicy", self.time_limit_s, self.search_workers, self.threshold_step)
        _apply_overrides("DiffServePolicy", CascadeSpec("max_threshold", QueueModel("observed"), ()), self.solver_overrides)

    def solve(self, inst: Instance) -> Plan:
        pair = (inst.models[0].name, inst.models[-1].name)
        queue = QueueModel(kind="observed", observed_ms={p: observed_queue_ms(inst, p) for p in pair})
        spec = CascadeSpec(
            objective="max_threshold",
            queue=queue,
            pairs=(pair,),
            threshold_step=self.threshold_step,
            time_limit_s=self.time_limit_s,
            search_workers=self.search_workers,
        )
        return solve_cascade(inst, _apply_overrides(self.name, spec, self.solver_overrides), self.name)


@dataclasses.dataclass(frozen=True)
class QualityPolicy:
    """Ours: minimum expected FID with modelled batched queueing and GPU-move hysteresis.

    ``utilization_levels``: planned utilizations a stage may run at (higher = fewer GPUs, more
    queueing). ``switch_cost_fid``: FID a move of the whole fleet must buy (``k`` of ``N``
    GPUs newly loading a model cost ``switch_cost_fid * k / N``; freeing GPUs is free). ``arrival_scv``: squared coefficient of
    variation of batch arrivals in the M/D/c estimate (1 = Poisson). ``max_batch_wait_ms``:
    the batcher's maximum wait for a full batch (None: waits until full).
    """

    utilization_levels: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95)
    switch_cost_fid: float = 0.5
    arrival_scv: float = 1.0
    max_batch_wait_ms: float | None = None
    time_limit_s: float = 1.0
    search_workers: int = 1  # CP-SAT search threads, not GPUs
    threshold_step: float | None = None
    solver_overrides: tuple[tuple[str, Any], ...] = ()
    spread_spare_workers: bool = False  # give GPUs the plan leaves idle to its models (planner.spare)
    # Plan capacity to drain the observed queues: each model's mean queue length over the last
    # window, spread over one SLO, is added to its stage's arrival rate.
    drain_queues: bool = False
    name: str = "quality"
    router: bool = False  # plan pairs with a hybrid surface on it (the ``hybrid`` policy)
    # Also consider every query on the heavy model alone (planner.milp.spec.CascadeSpec.heavy_only).
    heavy_only: bool = True

    def __post_init__(self) -> None:
        _check_solver_params("QualityPolicy", self.time_limit_s, self.search_workers, self.threshold_step)
        _apply_overrides("QualityPolicy", CascadeSpec("min_fid", QueueModel("observed"), ()), self.solver_overrides)
        if not self.utilization_levels or any(not 0 < r <= 1 for r in self.utilization_levels):
            raise ValueError(f"QualityPolicy.utilization_levels = {self.utilization_levels}; expected values in (0, 1]")
        if not self.switch_cost_fid >= 0:
            raise ValueError(f"QualityPolicy.switch_cost_fid = {self.switch_cost_fid}; expected >= 0")
        if not self.arrival_scv >= 0:
            raise ValueError(f"QualityPolicy.arrival_scv = {self.arrival_scv}; expected >= 0")
        if self.max_batch_wait_ms is not None and not self.max_batch_wait_ms >= 0:
            raise ValueError(f"QualityPolicy.max_batch_wait_ms = {self.max_batch_wait_ms}; expected >= 0 or None")

    def solve(self, inst: Instance) -> Plan:
        names = [m.name for m in inst.models]
        pairs = tuple(
            (names[i], names[j])
            for i in range(len(names))
            for j in range(i + 1, len(names))
            if inst.curves_for(names[i], names[j]) is not None
            or (self.router and (names[i], names[j]) in inst.hybrid_surfaces)
        )
        queue = QueueModel(
            kind="batched",
            utilization_levels=tuple(self.utilization_levels),
            arrival_scv=self.arrival_scv,
            max_batch_wait_ms=self.max_batch_wait_ms,
            rate_margin=inst.demand_margin,
        )
        spec = CascadeSpec(
            objective="min_fid",
            queue=queue,
            pairs=pairs,
            switch_cost_fid=self.switch_cost_fid,
            threshold_step=self.threshold_step,
            dedupe_deferral=True,
            time_limit_s=self.time_limit_s,
            search_workers=self.search_workers,
            backlog_qps={m: float(v) / (inst.slo_ms / 1000.0) for m, v in inst.queue_length.items() if v > 0}
            if self.drain_queues else {},
            router=self.router,
            heavy_only=self.heavy_only,
        )
        plan = solve_cascade(inst, _apply_overrides(self.name, spec, self.solver_overrides), self.name)
        return spread_spare_workers(plan, inst) if self.spread_spare_workers else plan


@dataclasses.dataclass(frozen=True)
class HybridPolicy(QualityPolicy):
    """Ours with the prompt router: :class:`QualityPolicy` that also picks, per pair with a hybrid
    surface, the router share and the discriminator share (hence the threshold) on the surface."""

    name: str = "hybrid"
    router: bool = True


@dataclasses.dataclass(frozen=True)
class SafePolicy:
    """Wraps a policy so that ``plan`` returns a FALLBACK plan instead of raising."""

    inner: Any

    @property
    def name(self) -> str:
        return self.inner.name

    def plan(self, instance: Instance) -> Plan:
        """The policy's plan for ``instance`` (never raises for a valid Instance)."""
        if not isinstance(instance, Instance):
            raise TypeError(f"plan() takes a planner.types.Instance, got {type(instance).__name__}")
        t0 = time.perf_counter()
        try:
            plan = self.inner.solve(instance)
        except PlannerInfeasible as e:
            return fallback_plan(instance, self.name, str(e), t0)
        except Exception as e:  # noqa: BLE001 - the control loop must always get a plan
            return fallback_plan(instance, self.name, f"planner error {type(e).__name__}: {e}", t0)
        return dataclasses.replace(plan, solve_time_ms=(time.perf_counter() - t0) * 1000.0)


def make_policy(name: str, **kw: Any) -> SafePolicy:
    """The policy called ``name`` (one of :data:`POLICY_NAMES`) with its keyword parameters.

    Returns an object with ``.name`` and ``.plan(instance) -> Plan``. Raises ValueError for an
    unknown name or bad parameters, TypeError for unknown keywords.
    """
    if name == "diffserve":
        inner: _Solver = DiffServePolicy(**kw)
    elif name == "quality":
        inner = QualityPolicy(**kw)
    elif name == "hybrid":
        inner = HybridPolicy(**kw)
    elif name in ("clipper-light", "clipper-heavy"):
        if kw:
            raise TypeError(f"{name} takes no parameters, got {sorted(kw)}")
        inner = ClipperPolicy(which=name.split("-")[1])
    elif name == "proteus":
        inner = ProteusPolicy(**kw)
    elif name == "static":
        inner = StaticPolicy(**kw)
    else:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
    return SafePolicy(inner)
