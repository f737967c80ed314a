"""The control loop's pure core: an :class:`Observation` of the last window goes in, a
:class:`ControlDecision` (demand estimate + the planner's :class:`~planner.types.Plan`) comes out.

The same code drives the simulator (``benchmarks/sim/``, simulated clock) and the live
orchestrator (wall clock, Triton metrics). Nothing here touches Triton, files or clocks other
than measuring how long the planner call took.

Demand estimation follows the DiffServe paper: the measured arrival rate of each window is
smoothed by an EWMA and multiplied by an over-provisioning factor (1.2) so that short bursts
above the estimate still fit the plan.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping, Protocol

from planner.types import Allocation, DeferralCurve, HybridSurface, Instance, ModelProfile, Plan, QualityCurve, RouterCurve


class Policy(Protocol):
    """What :func:`planner.make_policy` returns."""

    def plan(self, instance: Instance) -> Plan: ...


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the serving side measured during one control window ``[window_start_ms, +window_s)``.

    ``arrivals`` counts queries that arrived in the window; ``drops`` / ``timeouts`` count load
    sheds and late responses that happened in it; ``queue_delay_ms`` is the mean queueing delay
    per model name (absent when the model served nothing); ``queue_length`` the time-averaged
    number of queries waiting per model over the window; ``model_arrival_qps`` the rate at which queries
    entered each model's queue (deferred ones included); ``current`` is the allocation in force
    at the end of the window (None before the first plan). Build it with
    :func:`orchestrator.observe.build_observation` from plain measurements, as the live loop
    does, so that every field the planner reads means the same thing everywhere.
    """

    window_start_ms: float
    window_s: float
    arrivals: int
    drops: int = 0
    timeouts: int = 0
    queue_delay_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    queue_length: Mapping[str, float] = dataclasses.field(default_factory=dict)
    model_arrival_qps: Mapping[str, float] = dataclasses.field(default_factory=dict)
    current: Allocation | None = None

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"Observation.window_s = {self.window_s}; expected > 0 seconds")
        for name in ("arrivals", "drops", "timeouts"):
            v = getattr(self, name)
            if v < 0:
                raise ValueError(f"Observation.{name} = {v}; expected a count >= 0")
        for field in ("queue_delay_ms", "queue_length", "model_arrival_qps"):
            for model, v in getattr(self, field).items():
                if not (v >= 0 and math.isfinite(v)):
                    raise ValueError(f"Observation.{field}[{model!r}] = {v}; expected a finite value >= 0")

    @property
    def arrival_rate_qps(self) -> float:
        """Measured arrival rate over the window, queries per second."""
        return self.arrivals / self.window_s


@dataclasses.dataclass(frozen=True)
class DemandEstimator:
    """EWMA of the measured arrival rate, times an over-provisioning factor.

    ``alpha`` is the weight of the newest window (1.0 = no smoothing). ``smoothed_qps`` is None
    until the first observation, when ``initial_qps`` stands in for it.
    """

    alpha: float = 0.5
    overprovision: float = 1.2
    initial_qps: float = 1.0
    smoothed_qps: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"DemandEstimator.alpha = {self.alpha}; expected 0 < alpha <= 1")
        if not self.overprovision >= 1.0:
            raise ValueError(f"DemandEstimator.overprovision = {self.overprovision}; expected >= 1.0")
        if not (self.initial_qps >= 0 and math.isfinite(self.initial_qps)):
            raise ValueError(f"DemandEstimator.initial_qps = {self.initial_qps}; expected a finite rate >= 0")

    def observe(self, rate_qps: float) -> "DemandEstimator":
        """Returns a new estimator that has seen one more window's arrival rate (qps)."""
        if not (rate_qps >= 0 and math.isfinite(rate_qps)):
            raise ValueError(f"measured arrival rate {rate_qps} qps; expected a finite rate >= 0")
        if self.smoothed_qps is None:
            new = rate_qps
        else:
            new = self.alpha * rate_qps + (1.0 - self.alpha) * self.smoothed_qps
        return dataclasses.replace(self, smoothed_qps=new)

    @property
    def demand_qps(self) -> float:
        """The over-provisioned demand the planner is asked to serve, queries per second."""
        base = self.initial_qps if self.smoothed_qps is None else self.smoothed_qps
        return base * self.overprovision


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    """Everything the planner instance needs besides the demand: the cascade and the cluster
    (with several variants, the other pairs' curves and the hybrid surfaces: see :class:`Instance`).
    ``router``: the calibration that turns a plan's router share into the router's score
    threshold in the control file (None: no prompt router; the threshold stays unset)."""

    models: tuple[ModelProfile, ...]
    slo_ms: float
    num_workers: int
    deferral: DeferralCurve
    quality: QualityCurve
    window_s: float = 5.0
    pair_curves: Mapping[tuple[str, str], tuple[DeferralCurve, QualityCurve]] = dataclasses.field(default_factory=dict)
    hybrid_surfaces: Mapping[tuple[str, str], HybridSurface] = dataclasses.field(default_factory=dict)
    router: RouterCurve | None = None

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"ControlConfig.models has {len(self.models)} entries; expected >= 2 (light, heavy)")
        if not self.slo_ms > 0:
            raise ValueError(f"ControlConfig.slo_ms = {self.slo_ms}; expected > 0 ms")
        if self.num_workers < 1:
            raise ValueError(f"ControlConfig.num_workers = {self.num_workers}; expected >= 1")
        if not self.window_s > 0:
            raise ValueError(f"ControlConfig.window_s = {self.window_s}; expected > 0 s")


@dataclasses.dataclass(frozen=True)
class SloChoice:
    """The SLO the orchestrator plans for and writes to the control file, and where it came from."""

    slo_ms: float
    source: str  # "<cascade yaml>" or "override: ..."
    overridden: bool


def choose_slo(cascade_slo_ms: float, cascade_source: str, override_ms: float | None) -> SloChoice:
    """One SLO source: the cascade YAML's ``slo_ms`` unless the user overrides it explicitly.

    Raises ValueError for an override that is not a finite number > 0 (naming it)."""
    if override_ms is None:
        return SloChoice(float(cascade_slo_ms), cascade_source, False)
    if not (math.isfinite(override_ms) and override_ms > 0):
        raise ValueError(f"--slo-ms {override_ms}; expected a finite number of milliseconds > 0")
    return SloChoice(float(override_ms), f"override: --slo-ms {override_ms:g} replaces slo_ms {cascade_slo_ms:g} "
                     f"of {cascade_source}", True)


@dataclasses.dataclass(frozen=True)
class ControlDecision:
    """One control step's output.

    ``plan`` is what to apply; ``demand_qps`` the (over-provisioned) demand it was planned for;
    ``measured_rate_qps`` the raw arrival rate of the observed window (None for the initial
    decision); ``estimator`` the estimator state to carry into the next step;
    ``planner_wall_ms`` / ``planner_cpu_ms`` the wall-clock / this process's CPU time of the
    planner call (CPU time is the fairer measure on a shared machine).
    """

    plan: Plan
    demand_qps: float
    measured_rate_qps: float | None
    estimator: DemandEstimator
    planner_wall_ms: float
    planner_cpu_ms: float = 0.0


def build_instance(config: ControlConfig, demand_qps: float, observation: Observation | None,
                   demand_margin: float = 1.0) -> Instance:
    """The planner's problem for this window (pure); ``demand_margin``: the over-provisioning in
    ``demand_qps`` (the estimator's)."""
    return Instance(
        models=config.models,
        demand_qps=demand_qps,
        slo_ms=config.slo_ms,
        num_workers=config.num_workers,
        deferral=config.deferral,
        quality=config.quality,
        current=None if observation is None else observation.current,
        queue_delay_ms={} if observation is None else dict(observation.queue_delay_ms),
        queue_length={} if observation is None else dict(observation.queue_length),
        model_arrival_qps={} if observation is None else dict(observation.model_arrival_qps),
        pair_curves=config.pair_curves,
        hybrid_surfaces=config.hybrid_surfaces,
        demand_margin=demand_margin,
    )


def decide(
    config: ControlConfig,
    policy: Policy,
    estimator: DemandEstimator,
    observation: Observation | None,
) -> ControlDecision:
    """One control step: update the demand estimate with ``observation`` (None: the initial plan,
    from the estimator's prior) and ask ``policy`` for a plan.

    Returns the decision; raises TypeError when the policy returns something other than a Plan.
    """
    if observation is not None:
        estimator = estimator.observe(observation.arrival_rate_qps)
    instance = build_instance(config, estimator.demand_qps, observation, estimator.overprovision)
    t0, c0 = time.perf_counter(), time.process_time()
    plan = policy.plan(instance)
    wall_ms = (time.perf_counter() - t0) * 1000.0
    cpu_ms = (time.process_time() - c0) * 1000.0
    if not isinstance(plan, Plan):
        raise TypeError(f"policy {policy!r} returned {type(plan).__name__}; expected planner.types.Plan")
    return ControlDecision(
        plan=plan,
        demand_qps=estimator.demand_qps,
        measured_rate_qps=None if observation is None else observation.arrival_rate_qps,
        estimator=estimator,
        planner_wall_ms=wall_ms,
        planner_cpu_ms=cpu_ms,
    )


class ControlLoop:
    """Thin stateful shell over :func:`decide`: remembers the estimator between windows."""

    def __init__(self, config: ControlConfig, policy: Policy, estimator: DemandEstimator | None = None) -> None:
        self.config = config
        self.policy = policy
        self.estimator = estimator if estimator is not None else DemandEstimator()

    def initial(self) -> ControlDecision:
        """The plan before any observation (from the estimator's prior demand)."""
        return decide(self.config, self.policy, self.estimator, None)

    def step(self, observation: Observation) -> ControlDecision:
        """Observe one window and return the next plan."""
        decision = decide(self.config, self.policy, self.estimator, observation)
        self.estimator = decision.estimator
        return decision
