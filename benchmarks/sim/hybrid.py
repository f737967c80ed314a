"""The HADIS setting in simulation: hybrid routing (ours with the prompt router: pair, router share
and threshold per window) against DiffServe on its best fixed pair, ours without the router, and
Clipper and a static configuration on that pair.

    .venv/bin/python -m benchmarks.sim --only hybrid                        # -> benchmarks/results/sim/hybrid/
    .venv/bin/python -m benchmarks.sim --only hybrid --latency-factor 0.1   # the artifact's 10x-faster ablation

Setting (``benchmarks/data/hadis``, :mod:`planner.hadis`): 4 variants with the artifact's batch
rule (batches 1..32), SLO 6 s, 16 GPUs (all of them hold models), the four traces; re-planning
every 5 s on EWMA x 1.2 demand, shedding at 1.5 x SLO (the simulator's defaults). Each query's
prompt gives its router score (the artifact's linear router) and, per model, the discriminator's
confidence in that model's image (mean P(real) of the prompt's 4 images): the light-served,
deferred and routed queries are the artifact's own per-prompt decisions.

Served FID: per window, per (light, heavy) pair the window's responses were admitted under, the
pair's measured 11 x 11 surface read (bilinearly) at the realised router share r (routed /
served) and discriminator share d (deferred / served through light), weighted by responses; a
dropped query gives no response (as in the DiffServe comparison).

"DiffServe on its best fixed pair": the DiffServe MILP (``diffserve``, its f(t) on a 1 % grid of
deferral shares) run on each of the 6 pairs for the whole trace; the best pair is chosen offline,
with hindsight, per trace: the lowest FID among the pairs whose violation ratio is <= 0.01 (the
fewest violations when none is). Clipper-light / -heavy and static run on that pair; static is
the plan DiffServe's MILP makes for the trace's peak 5-s arrival rate, kept for the whole trace.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Mapping

import numpy as np

from orchestrator.control import ControlConfig, ControlLoop, DemandEstimator
from planner import Instance, make_policy
from planner.hadis import HadisData

from .engine import SERVED_HEAVY, SERVED_LIGHT, SimConfig, SimResult, simulate
from .metrics import routed_share, summarize
from .trace import Trace, load_trace

TRACES = ("maf_1to20qps", "maf_1to24qps", "maf_1to28qps", "maf_1to32qps")
OURS = {"max_batch_wait_ms": 0.0, "spread_spare_workers": True}  # as ``quality`` in the DiffServe comparison
LABEL = {"hybrid": "hybrid (ours)", "quality": "ours without router", "diffserve-best": "diffserve, best fixed pair",
         "clipper-light": "clipper-light", "clipper-heavy": "clipper-heavy", "static": "static"}
Pair = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class HybridConfig:
    """One HADIS experiment; ``best_pair_max_violations``: the violation ratio a pair may have to
    count as DiffServe's best (see the module docstring)."""

    traces: tuple[str, ...] = TRACES
    num_workers: int = 16
    window_s: float = 5.0
    model_load_s: float = 3.0
    drop_factor: float = 1.5
    overprovision: float = 1.2
    ewma_alpha: float = 0.5
    seed: int = 0
    latency_factor: float = 1.0
    best_pair_max_violations: float = 0.01


def surface_fid(res: SimResult, surfaces: Mapping[Pair, Any]) -> tuple[float, np.ndarray]:
    """(mean FID, FID per window) read off the surface of the pair each response was admitted under."""
    names, k = res.model_names, len(res.model_names)
    served = (res.outcome == SERVED_LIGHT) | (res.outcome == SERVED_HEAVY)
    win = (res.arrival_ms // (res.window_s * 1000.0)).astype(np.int64)
    n_w = int(win.max()) + 1 if len(win) else 0
    code = res.light_model.astype(np.int64) * k + res.heavy_model.astype(np.int64)
    fid_sum, count = np.zeros(n_w), np.zeros(n_w)
    for c in np.unique(code[served]).tolist():
        pair = (names[c // k], names[c % k])
        sel = served & (code == c)
        n = np.bincount(win[sel], minlength=n_w)
        routed = np.bincount(win[sel & res.routed], minlength=n_w)
        deferred = np.bincount(win[sel & ~res.routed & (res.outcome == SERVED_HEAVY)], minlength=n_w)
        for w in np.flatnonzero(n):
            rest = n[w] - routed[w]
            fid_sum[w] += n[w] * surfaces[pair].fid_at(routed[w] / n[w], deferred[w] / rest if rest else 0.0)
        count += n
    with np.errstate(invalid="ignore", divide="ignore"):
        per_window = np.where(count > 0, fid_sum / np.maximum(count, 1), np.nan)
    return (float(fid_sum.sum() / count.sum()) if count.sum() else float("nan")), per_window


def model_share(res: SimResult) -> dict[str, float]:
    """Share of the responses each model served."""
    served = (res.outcome == SERVED_LIGHT) | (res.outcome == SERVED_HEAVY)
    by = np.where(res.outcome == SERVED_HEAVY, res.heavy_model, res.light_model)[served]
    return {name: round(float(np.mean(by == m)), 4) for m, name in enumerate(res.model_names) if np.any(by == m)}


def run_one(cfg: HybridConfig, h: HadisData, trace: Trace, models: tuple, policy: Any, router: bool) -> dict[str, Any]:
    """Simulate one policy on ``models`` (2: a fixed pair, 4: every variant); the summary's FID is the surface's."""
    names = tuple(m.name for m in models)
    f, q = h.pair_curves[(names[0], names[-1])]
    pairs = {p: c for p, c in h.pair_curves.items() if p[0] in names and p[1] in names}
    cc = ControlConfig(models=models, slo_ms=h.slo_ms, num_workers=cfg.num_workers, deferral=f, quality=q,
                       window_s=cfg.window_s, pair_curves=pairs,
                       hybrid_surfaces={p: s for p, s in h.surfaces.items() if p in pairs} if router else {})
    prior = float(np.count_nonzero(trace.arrival_ms < cfg.window_s * 1000.0)) / cfg.window_s
    loop = ControlLoop(cc, policy, DemandEstimator(alpha=cfg.ewma_alpha, overprovision=cfg.overprovision,
                                                   initial_qps=prior))
    confidence = np.stack([h.confidence[n][trace.prompt_id] for n in names])
    res = simulate(trace, confidence, loop, SimConfig(drop_factor=cfg.drop_factor, model_load_s=cfg.model_load_s,
                                                      seed=cfg.seed),
                   router_score=h.router_score[trace.prompt_id] if router else None, router=h.router if router else None)
    summary = summarize(res, q, names[0], names[-1]).as_dict()
    summary["mean_fid"], fid_w = surface_fid(res, h.surfaces)
    served = int(summary["served_light"] + summary["served_heavy"])
    summary["routed_share"] = routed_share(res)
    summary["heavy_share"] = float(summary["served_heavy"] / max(served, 1))
    summary["model_share"] = model_share(res)
    planner_ms = np.array([w.planner_cpu_ms for w in res.windows])
    return {"summary": summary, "models": list(names), "fid_per_window": fid_w,
            "planner_cpu_ms": {"mean": float(planner_ms.mean()), "p95": float(np.percentile(planner_ms, 95)),
                               "max": float(planner_ms.max())},
            "plan_status": {s: sum(w.status == s for w in res.windows) for s in {w.status for w in res.windows}},
            "windows": [{"t_s": w.time_ms / 1000.0, "demand_qps": w.demand_qps, "router_share": w.router_share,
                         "threshold": w.threshold, "light_model": w.light_model, "heavy_model": w.heavy_model,
                         "workers": w.workers} for w in res.windows]}


def best_pair(by_pair: Mapping[str, dict], max_violations: float) -> str:
    """The key of DiffServe's best fixed pair (see the module docstring)."""
    ok = [k for k, r in by_pair.items() if r["summary"]["violation_ratio"] <= max_violations]
    if ok:
        return min(ok, key=lambda k: (round(by_pair[k]["summary"]["mean_fid"], 2), by_pair[k]["summary"]["violation_ratio"]))
    return min(by_pair, key=lambda k: (by_pair[k]["summary"]["violation_ratio"], by_pair[k]["summary"]["mean_fid"]))


def static_policy(h: HadisData, models: tuple, trace: Trace, cfg: HybridConfig):
    """DiffServe's plan for the trace's peak 5-s arrival rate on ``models``, as a static configuration."""
    peak = float(np.bincount((trace.arrival_ms // (cfg.window_s * 1000.0)).astype(np.int64)).max()) / cfg.window_s
    f, q = h.pair_curves[(models[0].name, models[1].name)]
    p = make_policy("diffserve").plan(Instance(models=models, demand_qps=peak, slo_ms=h.slo_ms,
                                               num_workers=cfg.num_workers, deferral=f, quality=q))
    light, heavy = models[0].name, models[1].name
    kw = {"threshold": p.threshold, "light_workers": max(1, int(p.workers.get(light, 0))),
          "heavy_workers": int(p.workers.get(heavy, 0)), "light_batch": int(p.batch_size.get(light, 1)),
          "heavy_batch": int(p.batch_size.get(heavy, 1))}
    return make_policy("static", **kw), {"peak_qps": peak, **kw}


def run_trace(cfg: HybridConfig, h: HadisData, name: str) -> dict[str, Any]:
    """Every policy on one trace; returns the case (JSON-ready but for the per-window arrays)."""
    trace = load_trace(h.traces_dir / f"{name}.txt")
    by_name = {m.name: m for m in h.models}
    runs: dict[str, dict] = {"hybrid": run_one(cfg, h, trace, h.models, make_policy("hybrid", **OURS), True),
                             "quality": run_one(cfg, h, trace, h.models, make_policy("quality", **OURS), False)}
    by_pair = {"->".join(p): run_one(cfg, h, trace, (by_name[p[0]], by_name[p[1]]), make_policy("diffserve"), False)
               for p in h.surfaces}
    best = best_pair(by_pair, cfg.best_pair_max_violations)
    models = tuple(by_name[n] for n in best.split("->"))
    runs["diffserve-best"] = by_pair[best]
    runs["clipper-light"] = run_one(cfg, h, trace, models, make_policy("clipper-light"), False)
    runs["clipper-heavy"] = run_one(cfg, h, trace, models, make_policy("clipper-heavy"), False)
    static, static_cfg = static_policy(h, models, trace, cfg)
    runs["static"] = run_one(cfg, h, trace, models, static, False)
    for key, r in runs.items():
        s = r["summary"]
        print(f"  {name} {key:15s} violations {s['violation_ratio']:.4f}  FID {s['mean_fid']:.2f}  "
              f"routed {s['routed_share']:.3f}", file=sys.stderr)
    return {"trace": name, "queries": len(trace), "best_pair": best, "static": static_cfg, "policies": runs,
            "diffserve_by_pair": {k: r["summary"] for k, r in by_pair.items()}, "checks": checks(runs)}


def checks(runs: Mapping[str, dict]) -> dict[str, Any]:
    """Hybrid against DiffServe on its best fixed pair, on the numbers as printed (FID 2 decimals,
    violation ratio 4)."""
    hy, ds = runs["hybrid"]["summary"], runs["diffserve-best"]["summary"]
    fid_h, fid_d = round(hy["mean_fid"], 2), round(ds["mean_fid"], 2)
    vio_h, vio_d = round(hy["violation_ratio"], 4), round(ds["violation_ratio"], 4)
    return {"hybrid FID <= diffserve best pair": fid_h <= fid_d, "hybrid FID < diffserve best pair": fid_h < fid_d,
            "hybrid violations <= diffserve best pair": vio_h <= vio_d,
            "FID reduction (%)": round(100.0 * (fid_d - fid_h) / fid_d, 2)}
