"""Simulator data types: configuration, per-window control records and the run's result."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

# Outcome codes of a query.
PENDING, SERVED_LIGHT, SERVED_HEAVY, DROPPED = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Serving-side parameters of a simulation (the planner's side lives in ControlConfig).

    ``drop_factor`` and ``ewma_alpha`` are the live cascade's (``CascadeConfig`` defaults: shed
    past 1.5 x SLO, EWMA weight 0.2 of the newest stage call; see
    :mod:`benchmarks.sim.admission`); ``seed``: random routing draws; ``service_latency_factor``:
    batches take the planner's profiled latency x this (1: the profile is exact; e.g. < 1 when the
    planner plans with derated profiles that the serving side beats).
    """

    drop_factor: float = 1.5
    model_load_s: float = 3.0
    seed: int = 0
    ewma_alpha: float = 0.2
    service_latency_factor: float = 1.0

    def __post_init__(self) -> None:
        if not self.drop_factor >= 1.0:
            raise ValueError(f"SimConfig.drop_factor = {self.drop_factor}; expected >= 1.0 (x SLO)")
        if not (self.model_load_s >= 0 and math.isfinite(self.model_load_s)):
            raise ValueError(f"SimConfig.model_load_s = {self.model_load_s}; expected a finite time >= 0 s")
        if not (self.service_latency_factor > 0 and math.isfinite(self.service_latency_factor)):
            raise ValueError(f"SimConfig.service_latency_factor = {self.service_latency_factor}; expected a finite factor > 0")
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ValueError(f"SimConfig.ewma_alpha = {self.ewma_alpha}; expected 0 < alpha <= 1")


@dataclasses.dataclass(frozen=True)
class WindowRecord:
    """One control decision as applied at ``time_ms`` (simulated)."""

    time_ms: float
    threshold: float
    routing: str
    light_fraction: float
    workers: dict[str, int]
    batch_size: dict[str, int]
    demand_qps: float
    measured_rate_qps: float | None
    status: str
    reason: str
    planner_wall_ms: float
    planner_cpu_ms: float = 0.0
    router_share: float = 0.0
    light_model: str = ""
    heavy_model: str = ""


@dataclasses.dataclass(frozen=True, eq=False)
class SimResult:
    """Per-query outcomes (arrays aligned with the trace) and the control history.

    ``finish_ms`` is the response (or drop) time, NaN for queries never resolved;
    ``outcome`` holds PENDING / SERVED_LIGHT / SERVED_HEAVY / DROPPED codes.
    ``loop_wall_s`` / ``loop_cpu_s`` are the wall / process CPU time of the event loop without
    the planner calls; ``planner_wall_s`` / ``planner_cpu_s`` those of the planner calls.
    ``light_model`` / ``heavy_model``: per query, the index into ``model_names`` of the pair it
    was admitted under (meaningless for a query shed on arrival); ``routed``: sent straight to
    heavy, skipping light and the discriminator (prompt router, or heavy-only routing).
    """

    arrival_ms: np.ndarray
    finish_ms: np.ndarray
    outcome: np.ndarray
    windows: tuple[WindowRecord, ...]
    slo_ms: float
    window_s: float
    events: int
    loop_wall_s: float
    planner_wall_s: float
    loop_cpu_s: float = 0.0
    planner_cpu_s: float = 0.0
    model_names: tuple[str, ...] = ()
    light_model: np.ndarray | None = None
    heavy_model: np.ndarray | None = None
    routed: np.ndarray | None = None
