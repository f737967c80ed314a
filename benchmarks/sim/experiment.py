"""One simulated run: a cascade description, a trace, a cluster and a policy -> metrics.

The cascade comes from :func:`planner.data.load_cascade` (default: the DiffServe paper's data
committed under ``benchmarks/data/diffserve``; any directory with a ``cascade.json`` manifest or a
``profiles/<cascade>/`` written by ``export profile`` / ``export calibrate`` works the same way).
The parts that run many of these (paper comparison, trace sweep, scale, load, sim vs live) are in
:mod:`.paper`, :mod:`.load` and :mod:`.live`.

Setup by default (the paper's): 16 workers of which 15 hold models, the cascade's SLO (5 s for
the paper's), re-planning every 5 s on EWMA x 1.2 demand, drops at 1.5 x SLO.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.control import ControlConfig, ControlLoop, DemandEstimator
from planner import data as pdata
from planner.types import DeferralCurve, HybridSurface, ModelProfile, QualityCurve, RouterCurve

from .engine import SimConfig, simulate
from .hybrid import surface_fid
from .metrics import Series, fluid_fid_bound, routed_share, series, summarize
from .trace import (Trace, confidences_from_curve, load_trace, query_confidences, query_router_scores, rate_scale_trace,
                    scale_trace)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CASCADE = REPO / "benchmarks" / "data" / "diffserve"
PAPER_POLICIES = ("clipper-light", "clipper-heavy", "proteus", "static", "diffserve", "diffserve-fine", "quality")
LABEL = {"proteus": "proteus-like", "quality": "ours (quality)", "static": "diffserve-static",
         "diffserve": "diffserve (0.05 grid)", "diffserve-fine": "diffserve (0.01 grid)",
         "quality-nospread": "ours without spare-GPU headroom", "quality-drain": "ours draining observed queues"}
# Runs that are a planner policy with parameters: run name -> (policy name, keyword arguments).
# ``quality``: the batcher in the simulator (and in our Triton config) never waits for a full
#   batch, so the policy is told so (max_batch_wait_ms=0); its threshold grid is 0.01; GPUs its
#   plan leaves idle serve as headroom for bursts (planner.spare).
# ``diffserve`` plans on the paper's 0.05 threshold grid, ``diffserve-fine`` on ours' 0.01 grid
#   (both read f(t) at the grid points), to show the grid is not where our gain comes from.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "quality": ("quality", {"threshold_step": 0.01, "max_batch_wait_ms": 0.0, "spread_spare_workers": True}),
    "diffserve": ("diffserve", {"threshold_step": 0.05}),
    "diffserve-fine": ("diffserve", {"threshold_step": 0.01}),
    # Ablation (not in the default runs): ours without the spare-GPU headroom.
    "quality-nospread": ("quality", {"threshold_step": 0.01, "max_batch_wait_ms": 0.0}),
    # Ablation: ours also provisioning to drain the observed queues (QualityPolicy.drain_queues).
    "quality-drain": ("quality", {"threshold_step": 0.01, "max_batch_wait_ms": 0.0, "spread_spare_workers": True,
                                  "drain_queues": True}),
    # Ablation: ours assuming smoother batch arrivals in the M/D/c estimate (SCV 0.5, not 1).
    "quality-scv0.5": ("quality", {"threshold_step": 0.01, "max_batch_wait_ms": 0.0, "spread_spare_workers": True,
                                   "arrival_scv": 0.5}),
}
STATIC_KEYS = ("threshold", "light_workers", "heavy_workers", "light_batch", "heavy_batch")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One simulated experiment (all policies run under the same config).

    ``cascade``: a cascade directory (see module doc); ``slo_ms`` None: the cascade's (for a
    profiles directory, the SLO of ``configs/<name>.yaml``); ``trace``: a trace file, or a name
    in the cascade's or the paper's ``traces/``; ``static``: DiffServe-Static's configuration
    (pairs of :data:`STATIC_KEYS` and values; unset ones: the paper's t = 0.02, 4 + 12 GPUs, batch
    16 / 4); ``latency_factor``: every profiled latency x this, for serving and planning alike
    (e.g. the live run's measured slowdown); ``service_latency_factor``: batches take the planner's
    latencies x this (see :class:`.types.SimConfig`); ``prompt_ids``: see :func:`.trace.query_confidences`.
    """

    cascade: str = str(DEFAULT_CASCADE)
    device: str | None = None
    trace: str = "maf_4to32qps"
    num_workers: int = 15
    slo_ms: float | None = None
    window_s: float = 5.0
    model_load_s: float = 3.0
    drop_factor: float = 1.5
    overprovision: float = 1.2
    ewma_alpha: float = 0.5
    # Prior demand before the first window is measured; None: the first window's arrival rate
    # (a warm start: the cluster begins provisioned for the load it starts with).
    initial_demand_qps: float | None = None
    trace_scale: int = 1
    # Arrival rate x this factor (trace.rate_scale_trace; 1: the trace as recorded).
    load_factor: float = 1.0
    seed: int = 0
    prompt_ids: str = "auto"
    static: tuple[tuple[str, float], ...] = ()
    latency_factor: float = 1.0
    service_latency_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers = {self.num_workers}; expected >= 1 GPU")
        if self.slo_ms is not None and not self.slo_ms > 0:
            raise ValueError(f"slo_ms = {self.slo_ms}; expected > 0 ms")
        if not self.latency_factor > 0:
            raise ValueError(f"latency_factor = {self.latency_factor}; expected > 0")
        bad = [k for k, _ in self.static if k not in STATIC_KEYS]
        if bad:
            raise ValueError(f"static configuration keys {bad}; expected some of {STATIC_KEYS}")


@dataclasses.dataclass(frozen=True, eq=False)
class RouterInputs:
    """The prompt router as the ``hybrid`` policy plans and routes with it: the cascade's 2-D
    surface and router curve (``make calibrate``'s ``hybrid_surface.json``, ``router_curve.csv``)
    and each query's router score (its prompt's, from confidences.csv's ``router`` column)."""

    surface: HybridSurface
    curve: RouterCurve
    score: np.ndarray  # float64 (queries,)
    source: str


@dataclasses.dataclass(frozen=True, eq=False)
class Inputs:
    """What a run reads: the cascade (profiles already x ``latency_factor``), the trace, each
    query's confidence and, for a cascade calibrated with a prompt router, the router (else None)."""

    cascade: pdata.CascadeData
    trace: Trace
    confidence: np.ndarray
    confidence_source: str
    router: RouterInputs | None = None

    @property
    def light(self) -> ModelProfile:
        return self.cascade.light

    @property
    def heavy(self) -> ModelProfile:
        return self.cascade.heavy

    @property
    def deferral(self) -> DeferralCurve:
        return self.cascade.deferral

    @property
    def quality(self) -> QualityCurve:
        return self.cascade.quality

    @property
    def slo_ms(self) -> float:
        return self.cascade.slo_ms


def _project_slo_ms(cascade_dir: Path) -> float | None:
    """The SLO of ``configs/<name>.yaml`` for a profiles directory without a manifest (or None)."""
    if (cascade_dir / pdata.MANIFEST).exists() or cascade_dir.is_file():
        return None
    yaml_path = REPO / "configs" / f"{cascade_dir.name}.yaml"
    if not yaml_path.is_file():
        return None
    from serving.config import load_cascade as load_cascade_yaml  # noqa: PLC0415

    return load_cascade_yaml(yaml_path).slo_ms


def load_cascade(cfg: RunConfig) -> pdata.CascadeData:
    """The run's cascade: ``cfg.cascade`` with ``cfg.slo_ms`` and profiles x ``cfg.latency_factor``."""
    path = Path(cfg.cascade)
    cascade = pdata.load_cascade(path, cfg.device, cfg.slo_ms if cfg.slo_ms is not None else _project_slo_ms(path))
    if cfg.latency_factor != 1.0:
        models = tuple(dataclasses.replace(m, batch_latency_ms={b: ms * cfg.latency_factor
                                                                for b, ms in m.batch_latency_ms.items()})
                       for m in cascade.models)
        cascade = dataclasses.replace(cascade, models=models)
    return cascade


def trace_path(name: str, cascade: pdata.CascadeData) -> Path:
    """A trace file path, or the file ``<name>.txt`` in the cascade's traces, then the paper's."""
    p = Path(name)
    if p.suffix and p.is_file():
        return p
    dirs = list(dict.fromkeys(d.resolve() for d in (cascade.traces_dir, DEFAULT_CASCADE / "traces") if d is not None))
    for d in dirs:
        if (d / f"{name}.txt").is_file():
            return d / f"{name}.txt"
    known = sorted({q.stem for d in dirs if d.is_dir() for q in d.glob("*.txt")})
    raise ValueError(f"trace {name!r}: no such file, nor a trace named so in {[str(d) for d in dirs]}; "
                     f"expected a path or one of {known}")


def load_router(cfg: RunConfig, cascade: pdata.CascadeData, trace: Trace) -> RouterInputs | None:
    """The router of a cascade directory calibrated with one (its surface, router curve and per-prompt
    router scores, each query taking its prompt's as :func:`.trace.query_router_scores` does); None
    when any of them is missing."""
    from planner.hybrid_data import HYBRID_SURFACE_JSON, ROUTER_CURVE_CSV, load_hybrid_calibration  # noqa: PLC0415

    d = Path(cfg.cascade)
    conf = cascade.confidences
    if not ((d / HYBRID_SURFACE_JSON).is_file() and (d / ROUTER_CURVE_CSV).is_file()) or conf is None \
            or conf.router_score is None:
        return None
    surface, curve = load_hybrid_calibration(d)
    return RouterInputs(surface, curve, query_router_scores(trace, conf, cfg.prompt_ids),
                        f"{d / HYBRID_SURFACE_JSON}, {d / ROUTER_CURVE_CSV}, router scores of {conf.source}")


def load_inputs(cfg: RunConfig) -> Inputs:
    """The cascade, the trace (scaled when asked) and each query's confidence."""
    cascade = load_cascade(cfg)
    trace = load_trace(trace_path(cfg.trace, cascade))
    if cfg.trace_scale > 1:
        trace = scale_trace(trace, cfg.trace_scale, seed=cfg.seed)
    if cfg.load_factor != 1.0:
        trace = rate_scale_trace(trace, cfg.load_factor, seed=cfg.seed)
    if cascade.confidences is None:
        return Inputs(cascade, trace, confidences_from_curve(trace, cascade.deferral, cfg.seed),
                      "drawn from f(t) per prompt (no per-prompt confidences)")
    conf = query_confidences(trace, cascade.confidences, cfg.prompt_ids)
    wrapped = not np.isin(trace.prompt_id, cascade.confidences.content_id).all()
    return Inputs(cascade, trace, conf, cascade.confidences.source
                  + (" (prompt ids wrapped onto the confidences' prompts)" if wrapped else ""),
                  router=load_router(cfg, cascade, trace))


def make_policy(run_name: str, cfg: RunConfig):
    """The planner policy of a run (see VARIANTS); ``static`` takes ``cfg.static`` (default the
    paper's DiffServe-Static config: t=0.02, 4 light + 12 heavy scaled to the cluster, batch 16/4)."""
    import planner  # noqa: PLC0415

    name, kw = VARIANTS.get(run_name, (run_name, {}))
    if name == "static":
        kw = {k: (float(v) if k == "threshold" else int(v)) for k, v in cfg.static}
    return planner.make_policy(name, **kw)


def _planner_stats(windows) -> dict[str, Any]:
    pms = np.array([w.planner_wall_ms for w in windows])
    pcpu = np.array([w.planner_cpu_ms for w in windows])
    statuses: dict[str, int] = {}
    for w in windows:
        statuses[w.status] = statuses.get(w.status, 0) + 1
    router = np.array([w.router_share for w in windows])
    return {
        "router_share": {"mean": float(router.mean()), "max": float(router.max())},  # planned, per window
        "planner_ms": {"calls": len(pms), "mean": float(pms.mean()), "p50": float(np.percentile(pms, 50)),
                       "p95": float(np.percentile(pms, 95)), "max": float(pms.max())},
        "planner_cpu_ms": {"mean": float(pcpu.mean()), "p95": float(np.percentile(pcpu, 95)), "max": float(pcpu.max())},
        "plan_status": statuses,
        "fallback_reasons": sorted({w.reason for w in windows if w.status == "FALLBACK" and w.reason})[:5],
    }


def run_policy(cfg: RunConfig, name: str, inputs: Inputs, progress: bool = False, policy: Any = None) -> dict[str, Any]:
    """Simulates one policy (``policy``: a planner policy object instead of :func:`make_policy`'s).
    Only a ``hybrid`` run plans and routes with the prompt router (``inputs.router``), as live.
    Returns {"summary", "series", "planner_ms", ...} (JSON-ready except ``series``, a :class:`Series`)."""
    router = None
    if VARIANTS.get(name, (name, {}))[0] == "hybrid":
        router = inputs.router
        if router is None:
            raise ValueError(f"policy {name!r} needs the cascade's prompt router: {cfg.cascade} has no "
                             "hybrid_surface.json / router_curve.csv or confidences.csv has no 'router' column; "
                             "expected a profiles directory written by `export calibrate` with a router")
    cc = ControlConfig(models=(inputs.light, inputs.heavy), slo_ms=inputs.slo_ms, num_workers=cfg.num_workers,
                       deferral=inputs.deferral, quality=inputs.quality, window_s=cfg.window_s,
                       hybrid_surfaces={(inputs.light.name, inputs.heavy.name): router.surface} if router else {},
                       router=router.curve if router else None)
    prior = cfg.initial_demand_qps
    if prior is None:
        prior = float(np.count_nonzero(inputs.trace.arrival_ms < cfg.window_s * 1000.0)) / cfg.window_s
    est = DemandEstimator(alpha=cfg.ewma_alpha, overprovision=cfg.overprovision, initial_qps=prior)
    loop = ControlLoop(cc, policy if policy is not None else make_policy(name, cfg), est)
    res = simulate(inputs.trace, inputs.confidence, loop,
                   SimConfig(drop_factor=cfg.drop_factor, model_load_s=cfg.model_load_s, seed=cfg.seed,
                             service_latency_factor=cfg.service_latency_factor),
                   progress=progress, router_score=router.score if router else None,
                   router=router.curve if router else None)
    summary = {**summarize(res, inputs.quality, inputs.light.name, inputs.heavy.name).as_dict(),
               "routed_share": routed_share(res)}
    if router:  # routed prompts are not the least confident: FID off the 2-D surface, not the 1-D curve
        summary["mean_fid"] = surface_fid(res, {(inputs.light.name, inputs.heavy.name): router.surface})[0]
    return {
        "summary": summary,
        "series": series(res, inputs.quality, inputs.light.name, inputs.heavy.name),
        **_planner_stats(res.windows),
        "loop": {"events": res.events, "loop_wall_s": res.loop_wall_s, "planner_wall_s": res.planner_wall_s,
                 "loop_cpu_s": res.loop_cpu_s, "planner_cpu_s": res.planner_cpu_s,
                 "queries_per_s": len(res.arrival_ms) / res.loop_wall_s if res.loop_wall_s > 0 else None,
                 "queries_per_cpu_s": len(res.arrival_ms) / res.loop_cpu_s if res.loop_cpu_s > 0 else None},
    }


def series_json(s: Series) -> dict[str, list]:
    return {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}


def bound_for(cfg: RunConfig, inputs: Inputs) -> float:
    """The fluid FID bound of this trace and cluster (see :func:`.metrics.fluid_fid_bound`)."""
    return fluid_fid_bound(inputs.trace.arrival_ms, cfg.window_s, inputs.light, inputs.heavy, cfg.num_workers,
                           inputs.slo_ms, inputs.quality)


def describe(cfg: RunConfig, inputs: Inputs) -> dict[str, Any]:
    """What a results file records about the cascade and the run's inputs."""
    c = inputs.cascade
    return {"cascade": c.name, "cascade_source": c.source, "models": [m.name for m in c.models],
            "slo_ms": c.slo_ms, "trace": inputs.trace.name, "queries": len(inputs.trace),
            "confidences": inputs.confidence_source,
            "deferral_grid": "recomputed from the confidences" if c.published_deferral is not None else "the curve file's"}
