"""Planner data types: an :class:`Instance` goes in, a :class:`Plan` comes out.

Everything here is pure data (frozen dataclasses) with units in the field names. Curves are
piecewise-linear and are built from the paper's published files or from this project's own
calibration JSON (same schema), see :mod:`planner.data`.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import numbers
from typing import Mapping, Sequence


def _finite(x: float) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


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
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"profile name {self.name!r}; expected a non-empty string")
        for b, ms in self.batch_latency_ms.items():
            if not isinstance(b, numbers.Integral) or isinstance(b, bool) or b < 1 or not _finite(ms) or not ms > 0:
                raise ValueError(
                    f"profile {self.name!r}: batch {b!r} latency {ms!r} ms; expected an int batch >= 1 "
                    "and a finite latency > 0 ms"
                )

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(int(b) for b in self.batch_latency_ms))

    def latency_ms(self, batch: int) -> float:
        """Latency of a batch of ``batch`` queries in ms (KeyError for an unprofiled size)."""
        return float(self.batch_latency_ms[batch])

    def throughput_qps(self, batch: int) -> float:
        """Queries per second one GPU sustains at this batch size."""
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
        if any(not _finite(t) for t in self.thresholds) or any(
            b <= a for a, b in zip(self.thresholds, self.thresholds[1:])
        ):
            raise ValueError(f"deferral curve thresholds {self.thresholds}; expected finite, strictly increasing")
        for t, f in zip(self.thresholds, self.deferral_fraction):
            if not _finite(f) or not 0.0 <= f <= 1.0:
                raise ValueError(f"deferral fraction f({t}) = {f!r}; expected a fraction in [0, 1]")
        if any(b < a - 1e-12 for a, b in zip(self.deferral_fraction, self.deferral_fraction[1:])):
            raise ValueError(f"deferral fractions {self.deferral_fraction}; expected non-decreasing in t")

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

    def __post_init__(self) -> None:
        if len(self.light_fraction) != len(self.fid) or len(self.fid) < 2:
            raise ValueError(
                f"quality curve has {len(self.light_fraction)} light fractions and {len(self.fid)} FIDs; "
                "expected >= 2 points and equal-length columns"
            )
        xs = self.light_fraction
        if any(not _finite(x) or not 0.0 <= x <= 1.0 for x in xs) or any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"quality curve light fractions {xs}; expected strictly increasing values in [0, 1]")
        if any(not _finite(v) or v < 0 for v in self.fid):
            raise ValueError(f"quality curve FIDs {self.fid}; expected finite values >= 0")

    def fid_at(self, light_fraction: float) -> float:
        """Expected FID at a light share in [0, 1]."""
        return _interp(light_fraction, self.light_fraction, self.fid)


def _grid(name: str, xs: Sequence[float]) -> None:
    if len(xs) < 1 or any(not _finite(x) or not 0.0 <= x <= 1.0 for x in xs) or any(b <= a for a, b in zip(xs, xs[1:])):
        raise ValueError(f"{name} {tuple(xs)}; expected strictly increasing shares in [0, 1]")


def _bilinear(xs: Sequence[float], ys: Sequence[float], table: Sequence[Sequence[float]], x: float, y: float) -> float:
    """``table[i][j]`` at (xs[i], ys[j]) interpolated bilinearly at (x, y), clamped to the grid."""
    def cell(grid: Sequence[float], v: float) -> tuple[int, int, float]:
        if len(grid) == 1 or v <= grid[0]:
            return 0, 0, 0.0
        if v >= grid[-1]:
            return len(grid) - 1, len(grid) - 1, 0.0
        i = bisect.bisect_right(grid, v) - 1
        return i, i + 1, (v - grid[i]) / (grid[i + 1] - grid[i])
    i0, i1, u = cell(xs, x)
    j0, j1, w = cell(ys, y)
    lo = table[i0][j0] * (1 - w) + table[i0][j1] * w
    hi = table[i1][j0] * (1 - w) + table[i1][j1] * w
    return float(lo * (1 - u) + hi * u)


@dataclasses.dataclass(frozen=True)
class HybridSurface:
    """Served quality of one (light, heavy) pair with a prompt router in front of the cascade.

    A router share ``r`` of ALL queries goes straight to heavy (highest router scores first;
    they skip the light model and the discriminator); the discriminator defers a share ``d`` of
    the REST (lowest confidence first). The heavy model serves ``r + (1 - r) d``; ``r = 0`` is
    the plain cascade. ``fid[i][j]`` is the FID (lower is better) of the served set at
    ``(router_share[i], disc_share[j])``; ``disc_threshold[i][j]`` the discriminator threshold
    t (defer when confidence < t) that defers ``disc_share[j]`` of the prompts the router keeps
    at ``router_share[i]`` (a calibration mapping, as f(t) is for the cascade).
    """

    router_share: tuple[float, ...]
    disc_share: tuple[float, ...]
    fid: tuple[tuple[float, ...], ...]
    disc_threshold: tuple[tuple[float, ...], ...]
    metric: str = "FID"

    def __post_init__(self) -> None:
        _grid("hybrid surface router shares", self.router_share)
        _grid("hybrid surface discriminator shares", self.disc_share)
        shape = (len(self.router_share), len(self.disc_share))
        for name in ("fid", "disc_threshold"):
            table = getattr(self, name)
            if len(table) != shape[0] or any(len(row) != shape[1] for row in table):
                raise ValueError(f"hybrid surface {name}: {len(table)} rows of {[len(r) for r in table]}; "
                                 f"expected {shape[0]} rows of {shape[1]} (router shares x discriminator shares)")
        if any(not _finite(v) or v < 0 for row in self.fid for v in row):
            raise ValueError(f"hybrid surface FIDs {self.fid}; expected finite values >= 0")
        for r, row in zip(self.router_share, self.disc_threshold):
            if any(not _finite(t) or not 0.0 <= t <= 1.0 for t in row) or any(b < a for a, b in zip(row, row[1:])):
                raise ValueError(f"hybrid surface thresholds at router share {r}: {row}; expected values in [0, 1], "
                                 "non-decreasing in the discriminator share")

    @staticmethod
    def heavy_share(router_share: float, disc_share: float) -> float:
        """Share of all queries the heavy model serves: ``r + (1 - r) d``."""
        return router_share + (1.0 - router_share) * disc_share

    def fid_at(self, router_share: float, disc_share: float) -> float:
        """FID at (r, d), bilinear between grid points (clamped to the grid)."""
        return _bilinear(self.router_share, self.disc_share, self.fid, router_share, disc_share)


@dataclasses.dataclass(frozen=True)
class RouterCurve:
    """Router share vs the router's score threshold (calibration): a prompt goes straight to heavy
    when its router score is >= the threshold, and ``score_threshold[k]`` sends a share
    ``routed_share[k]`` of the calibration prompts there. Scores may be any real numbers."""

    routed_share: tuple[float, ...]
    score_threshold: tuple[float, ...]

    def __post_init__(self) -> None:
        _grid("router curve shares", self.routed_share)
        if len(self.score_threshold) != len(self.routed_share) or len(self.routed_share) < 2:
            raise ValueError(f"router curve: {len(self.routed_share)} shares and {len(self.score_threshold)} "
                             "thresholds; expected >= 2 points and equal-length columns")
        if any(not _finite(x) for x in self.score_threshold) or any(
                b > a for a, b in zip(self.score_threshold, self.score_threshold[1:])):
            raise ValueError(f"router curve thresholds {self.score_threshold}; expected finite, non-increasing "
                             "as the routed share grows")

    def threshold_for(self, share: float) -> float | None:
        """The score threshold that routes ``share`` of the queries (interpolated); None for a share
        <= 0 (no router: nothing is routed)."""
        if not _finite(share) or not 0.0 <= share <= 1.0:
            raise ValueError(f"router share {share!r}; expected a fraction in [0, 1]")
        if share <= 0.0:
            return None
        return _interp(share, self.routed_share, self.score_threshold)


@dataclasses.dataclass(frozen=True)
class Allocation:
    """What runs now: GPUs (field ``workers``) and batch size per model name."""

    workers: Mapping[str, int]
    batch_size: Mapping[str, int]
    threshold: float = 0.0

    def __post_init__(self) -> None:
        for name, n in self.workers.items():
            if not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(f"Allocation.workers[{name!r}] = {n!r}; expected an int >= 0")
        for name, b in self.batch_size.items():
            if not isinstance(b, numbers.Integral) or b < 1:
                raise ValueError(f"Allocation.batch_size[{name!r}] = {b!r}; expected an int >= 1")


@dataclasses.dataclass(frozen=True)
class Instance:
    """One planning problem (one window).

    ``models`` are the variants ordered light -> heavy (the cascade uses a pair; policies that
    choose among more variants pick the pair). ``num_workers`` is the number of GPUs the plan
    may use (one model instance each; the field keeps its name until the cross-package rename in
    docs/planner.md). ``demand_qps`` is the (already over-provisioned) arrival-rate estimate.
    ``queue_delay_ms`` is the observed mean queueing delay per model
    during the last window (0 when unknown). ``queue_length`` (mean queries waiting) with
    ``model_arrival_qps`` (arrivals per second at that model) gives the paper's Little's-law
    queueing estimate ``queue_length / arrival rate``; it takes precedence over
    ``queue_delay_ms`` for a model that has both. Keys that name no model (e.g. the
    discriminator) are ignored.

    ``pair_curves`` optionally gives the deferral and quality curves of other (light, heavy)
    pairs, keyed by model names; the pair (models[0], models[-1]) uses ``deferral``/``quality``
    unless listed. A pair without curves is never chosen (the planner does not invent curves).

    ``hybrid_surfaces`` optionally gives, per (light, heavy) pair, the served quality with a
    prompt router in front of the cascade (:class:`HybridSurface`); only the ``hybrid`` policy
    reads them.

    ``demand_margin``: the over-provisioning factor already in ``demand_qps`` (the demand
    forecast times this margin, e.g. the orchestrator's 1.2). Capacity is planned for
    ``demand_qps``; ``quality``'s modelled queueing is priced at the forecast rate
    ``demand_qps / demand_margin``, so the margin is not counted twice.
    """

    models: tuple[ModelProfile, ...]
    demand_qps: float
    slo_ms: float
    num_workers: int
    deferral: DeferralCurve
    quality: QualityCurve
    current: Allocation | None = None
    queue_delay_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    queue_length: Mapping[str, float] = dataclasses.field(default_factory=dict)
    model_arrival_qps: Mapping[str, float] = dataclasses.field(default_factory=dict)
    pair_curves: Mapping[tuple[str, str], tuple[DeferralCurve, QualityCurve]] = dataclasses.field(
        default_factory=dict
    )
    hybrid_surfaces: Mapping[tuple[str, str], HybridSurface] = dataclasses.field(default_factory=dict)
    demand_margin: float = 1.0

    def __post_init__(self) -> None:
        if not _finite(self.demand_margin) or self.demand_margin < 1.0:
            raise ValueError(f"demand_margin must be a finite number >= 1 (over-provisioning factor), "
                             f"got {self.demand_margin!r}")
        if len(self.models) < 2:
            raise ValueError(f"need >= 2 model variants (light, heavy), got {len(self.models)}")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names {names}; expected unique names")
        if not isinstance(self.num_workers, numbers.Integral) or self.num_workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, got {self.num_workers!r}")
        if not _finite(self.slo_ms) or self.slo_ms <= 0:
            raise ValueError(f"slo_ms must be a finite number > 0, got {self.slo_ms!r}")
        if not _finite(self.demand_qps) or self.demand_qps < 0:
            raise ValueError(f"demand_qps must be a finite number >= 0, got {self.demand_qps!r}")
        for field in ("queue_delay_ms", "queue_length", "model_arrival_qps"):
            for name, v in getattr(self, field).items():
                if not _finite(v) or v < 0:
                    raise ValueError(f"{field}[{name!r}] = {v!r}; expected a finite value >= 0")
        for pair, curves in self.pair_curves.items():
            if len(pair) != 2 or pair[0] not in names or pair[1] not in names:
                raise ValueError(f"pair_curves key {pair!r}; expected (light, heavy) model names from {names}")
            if names.index(pair[0]) >= names.index(pair[1]):
                raise ValueError(f"pair_curves key {pair!r}; expected the light model before the heavy one")
            if len(curves) != 2 or not isinstance(curves[0], DeferralCurve) or not isinstance(curves[1], QualityCurve):
                raise ValueError(f"pair_curves[{pair!r}]; expected (DeferralCurve, QualityCurve)")
        for pair, surface in self.hybrid_surfaces.items():
            if len(pair) != 2 or pair[0] not in names or pair[1] not in names or names.index(pair[0]) >= names.index(pair[1]):
                raise ValueError(f"hybrid_surfaces key {pair!r}; expected (light, heavy) model names from {names}, "
                                 "the light model first")
            if not isinstance(surface, HybridSurface):
                raise ValueError(f"hybrid_surfaces[{pair!r}] is a {type(surface).__name__}; expected a HybridSurface")

    def model(self, name: str) -> ModelProfile:
        """The profile named ``name`` (KeyError naming the known models otherwise)."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r}; models are {[m.name for m in self.models]}")

    def curves_for(self, light: str, heavy: str) -> tuple[DeferralCurve, QualityCurve] | None:
        """Deferral and quality curves of the pair (light, heavy), or None when unknown."""
        if (light, heavy) in self.pair_curves:
            return self.pair_curves[(light, heavy)]
        if (light, heavy) == (self.models[0].name, self.models[-1].name):
            return self.deferral, self.quality
        return None

    @property
    def light(self) -> ModelProfile:
        return self.models[0]

    @property
    def heavy(self) -> ModelProfile:
        return self.models[-1]


@dataclasses.dataclass(frozen=True)
class Plan:
    """The planner's decision for one window.

    ``workers`` (GPUs per model) and ``batch_size`` are keyed by model name (models with 0 GPUs
    may be absent).
    ``threshold`` is the confidence threshold t (defer when confidence < t).
    ``capacity_qps`` is the throughput the allocation sustains per model.
    ``expected_fid`` is the quality curve at the planned light share.
    ``slack_ms`` is SLO minus the planned worst-case latency. ``status`` is the solver status
    ("OPTIMAL", "FEASIBLE", "FALLBACK", "STATIC"); ``reason`` says why for fallbacks.
    ``routing`` is "cascade" (discriminator decides), "random" (query-agnostic: heavy with
    probability ``heavy_share``), "light" or "heavy" (everything to one model).
    ``heavy_share`` is the planned fraction of queries the heavy model serves (f(t) for a
    cascade). ``light_model``/``heavy_model`` name the chosen pair ("" when unused).
    ``stage_latency_ms`` is the planned latency per model: batch execution plus the policy's
    queueing estimate, in ms. ``solve_time_ms`` is the wall time of the solve.
    ``router_share`` is the share of all queries the prompt router sends straight to heavy
    (``hybrid``; 0: no router). Of the rest, the discriminator defers those with confidence below
    ``threshold``; ``heavy_share`` counts both.
    ``admit_factor``: the admission limit (x SLO) the plan asks the cascade to shed at (the
    control state's ``admit_factor``); None: the cascade's own ``drop_factor`` (1.5). The
    overload fallback sets 1.0 (:func:`planner.baselines.fallback_plan`).
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
    routing: str = "cascade"  # "cascade" (discriminator), "random" (query-agnostic share), "light", "heavy"
    heavy_share: float = 0.0
    light_model: str = ""
    heavy_model: str = ""
    stage_latency_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    router_share: float = 0.0
    admit_factor: float | None = None

    def as_allocation(self) -> Allocation:
        return Allocation(workers=dict(self.workers), batch_size=dict(self.batch_size), threshold=self.threshold)
