"""Planner data types: an :class:`Instance` goes in, a :class:`Plan` comes out.

Everything here is pure data (frozen dataclasses) with units in the field names. Curves are
piecewise-linear and are built from the paper's published files or from this project's own
calibration JSON (same schema), see :mod:`planner.data`.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Mapping, Sequence


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear interpolation of ys(xs) at x, clamped to the end points."""
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    i = bisect.bisect_right(xs, x) - 1
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0)) if x1 > x0 else float(y0)


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """Batch latency of one model variant on one GPU (or CPU instance slot).

    ``batch_latency_ms[b]`` is the time to serve one batch of ``b`` queries end to end
    (text encoder + all denoising steps + decoder), in milliseconds.
    ``quality_rank`` orders variants from lightest (0) to heaviest.
    """

    name: str
    batch_latency_ms: Mapping[int, float]
    quality_rank: int = 0

    def __post_init__(self) -> None:
        if not self.batch_latency_ms:
            raise ValueError(f"profile {self.name!r}: batch_latency_ms is empty")
        for b, ms in self.batch_latency_ms.items():
            if int(b) < 1 or not ms > 0:
                raise ValueError(f"profile {self.name!r}: batch {b} latency {ms} ms; expected batch >= 1, latency > 0")

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(int(b) for b in self.batch_latency_ms))

    def latency_ms(self, batch: int) -> float:
        """Latency of a batch of ``batch`` queries in ms (KeyError for an unprofiled size)."""
        return float(self.batch_latency_ms[batch])

    def throughput_qps(self, batch: int) -> float:
        """Queries per second one worker sustains at this batch size."""
        return 1000.0 * batch / self.latency_ms(batch)


@dataclasses.dataclass(frozen=True)
class DeferralCurve:
    """f(t): fraction of queries deferred to the heavy model at confidence threshold t.

    Non-decreasing in t; f(0) = 0 (nothing is below a threshold of 0).
    """

    thresholds: tuple[float, ...]
    deferral_fraction: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.deferral_fraction) or len(self.thresholds) < 2:
            raise ValueError("deferral curve needs >= 2 points and equal-length columns")
        if list(self.thresholds) != sorted(self.thresholds):
            raise ValueError("deferral curve thresholds must be increasing")

    def f(self, t: float) -> float:
        """Fraction of queries deferred at threshold ``t``."""
        return _interp(t, self.thresholds, self.deferral_fraction)

    def max_threshold_for(self, fraction: float) -> float:
        """Largest threshold on the grid whose deferral fraction is <= ``fraction``."""
        best = self.thresholds[0]
        for t, f in zip(self.thresholds, self.deferral_fraction):
            if f <= fraction + 1e-12:
                best = t
        return float(best)


@dataclasses.dataclass(frozen=True)
class QualityCurve:
    """Response quality vs the fraction of queries served by the light model.

    ``fid[i]`` is the FID (lower is better) when a share ``light_fraction[i]`` of queries is
    answered by the light model and the rest by the heavy model (query-aware routing).
    """

    light_fraction: tuple[float, ...]
    fid: tuple[float, ...]
    metric: str = "FID"

    def fid_at(self, light_fraction: float) -> float:
        """Expected FID at a light share in [0, 1]."""
        return _interp(light_fraction, self.light_fraction, self.fid)


@dataclasses.dataclass(frozen=True)
class Allocation:
    """What runs now: workers (GPUs) and batch size per model name."""

    workers: Mapping[str, int]
    batch_size: Mapping[str, int]
    threshold: float = 0.0


@dataclasses.dataclass(frozen=True)
class Instance:
    """One planning problem (one window).

    ``models`` are the variants ordered light -> heavy (the cascade uses a pair; policies that
    choose among more variants pick the pair). ``demand_qps`` is the (already over-provisioned)
    arrival-rate estimate. ``queue_delay_ms`` is the observed mean queueing delay per model
    during the last window (0 when unknown).
    """

    models: tuple[ModelProfile, ...]
    demand_qps: float
    slo_ms: float
    num_workers: int
    deferral: DeferralCurve
    quality: QualityCurve
    current: Allocation | None = None
    queue_delay_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"need >= 2 model variants (light, heavy), got {len(self.models)}")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.slo_ms <= 0:
            raise ValueError(f"slo_ms must be > 0, got {self.slo_ms}")
        if self.demand_qps < 0:
            raise ValueError(f"demand_qps must be >= 0, got {self.demand_qps}")

    @property
    def light(self) -> ModelProfile:
        return self.models[0]

    @property
    def heavy(self) -> ModelProfile:
        return self.models[-1]


@dataclasses.dataclass(frozen=True)
class Plan:
    """The planner's decision for one window.

    ``workers``/``batch_size`` are keyed by model name (models with 0 workers may be absent).
    ``threshold`` is the confidence threshold t (defer when confidence < t).
    ``capacity_qps`` is the throughput the allocation sustains per model.
    ``expected_fid`` is the quality curve at the planned light share.
    ``slack_ms`` is SLO minus the planned worst-case latency. ``status`` is the solver status
    ("OPTIMAL", "FEASIBLE", "FALLBACK", "STATIC"); ``reason`` says why for fallbacks.
    """

    policy: str
    workers: Mapping[str, int]
    batch_size: Mapping[str, int]
    threshold: float
    capacity_qps: Mapping[str, float]
    expected_fid: float
    light_fraction: float
    slack_ms: float
    status: str
    reason: str = ""
    solve_time_ms: float = 0.0
    routing: str = "cascade"  # "cascade" (discriminator) or "random" (query-agnostic share)

    def as_allocation(self) -> Allocation:
        return Allocation(workers=dict(self.workers), batch_size=dict(self.batch_size), threshold=self.threshold)
