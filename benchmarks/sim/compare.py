"""Comparing policies on (mean FID, SLO violation ratio), at the precision the tables print.

Every comparison rounds first (FID to 2 decimals, violation ratio to 4, as printed), so a
difference nobody can see in the table is a tie, never a win. A policy *dominates* another
when it is at least as good on both and strictly better on one; the Pareto front is the set of
policies no other policy dominates.
"""
from __future__ import annotations

from typing import Any, Mapping

FID_DECIMALS, VIOLATION_DECIMALS = 2, 4


def point(summary: Mapping[str, Any]) -> tuple[float, float]:
    """(FID, violation ratio) of a run summary, rounded as printed."""
    return round(float(summary["mean_fid"]), FID_DECIMALS), round(float(summary["violation_ratio"]), VIOLATION_DECIMALS)


def dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when run ``a`` is at least as good as ``b`` on FID and violations and strictly better on one."""
    (fa, va), (fb, vb) = point(a), point(b)
    return fa <= fb and va <= vb and (fa < fb or va < vb)


def pareto_front(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    """Per policy: whether no other policy dominates it."""
    return {n: not any(dominates(o, s) for m, o in summaries.items() if m != n) for n, s in summaries.items()}


def dominating(summaries: Mapping[str, Mapping[str, Any]], name: str) -> list[str]:
    """The policies that dominate ``name`` (empty when it is on the front or was not run)."""
    if name not in summaries:
        return []
    return [m for m, o in summaries.items() if m != name and dominates(o, summaries[name])]


def order(a: float | None, b: float | None, decimals: int) -> str | None:
    """``"lower"``, ``"tie"`` or ``"higher"``: ``a`` against ``b`` after rounding (None if one is missing)."""
    if a is None or b is None:
        return None
    ra, rb = round(a, decimals), round(b, decimals)
    return "tie" if ra == rb else ("lower" if ra < rb else "higher")


def paper_checks(summaries: Mapping[str, Mapping[str, Any]], fid_bound: float | None = None) -> dict[str, Any]:
    """The orderings the paper reports and our claims, on measured numbers (``lower`` / ``tie`` /
    ``higher``, None when a policy needed was not run), the FID reductions, the distance of ours
    to the fluid bound, and which policies dominate ours."""
    def get(name: str, key: str) -> float | None:
        return float(summaries[name][key]) if name in summaries else None

    def fid(name: str) -> float | None:
        return get(name, "mean_fid")

    def vio(name: str) -> float | None:
        return get(name, "violation_ratio")

    def reduction(base: float | None, new: float | None) -> float | None:
        return None if base is None or new is None else round(100.0 * (base - new) / base, 2)

    q = fid("quality")
    return {
        "diffserve FID vs clipper-light FID": order(fid("diffserve"), fid("clipper-light"), FID_DECIMALS),
        "diffserve FID vs proteus-like FID": order(fid("diffserve"), fid("proteus"), FID_DECIMALS),
        "diffserve violations vs clipper-heavy violations": order(vio("diffserve"), vio("clipper-heavy"), VIOLATION_DECIMALS),
        "diffserve violations vs static violations": order(vio("diffserve"), vio("static"), VIOLATION_DECIMALS),
        "ours violations vs diffserve violations": order(vio("quality"), vio("diffserve"), VIOLATION_DECIMALS),
        "ours violations vs diffserve (0.01 grid) violations": order(vio("quality"), vio("diffserve-fine"), VIOLATION_DECIMALS),
        "ours FID reduction vs diffserve (%)": reduction(fid("diffserve"), q),
        "ours FID reduction vs diffserve on the 0.01 grid (%)": reduction(fid("diffserve-fine"), q),
        "fluid FID bound": None if fid_bound is None else round(fid_bound, 3),
        "ours FID above the fluid bound": None if fid_bound is None or q is None else round(q - fid_bound, 3),
        "largest possible FID reduction vs diffserve (%)": reduction(fid("diffserve"), fid_bound),
        "policies dominating ours": dominating(summaries, "quality"),
    }


def static_utilization(inputs: Any, num_workers: int, window_s: float, static_policy: Any) -> dict[str, Any]:
    """What DiffServe-Static provisions on this cluster and how loaded it is at the trace's peak
    arrival rate over ``window_s``: planned utilization = peak rate at the model / the model's
    capacity (> 1: the fixed config cannot keep up there). Returns workers, threshold, heavy
    share, peak_qps and utilization per stage."""
    import numpy as np  # noqa: PLC0415
    from planner import Instance  # noqa: PLC0415

    w_ms = window_s * 1000.0
    peak = float(np.bincount((inputs.trace.arrival_ms // w_ms).astype(np.int64)).max()) / window_s
    inst = Instance(models=(inputs.light, inputs.heavy), demand_qps=peak, slo_ms=inputs.slo_ms,
                    num_workers=num_workers, deferral=inputs.deferral, quality=inputs.quality)
    p = static_policy.plan(inst)
    lname, hname = inputs.light.name, inputs.heavy.name
    return {"workers": dict(p.workers), "threshold": p.threshold, "heavy_share": p.heavy_share, "peak_qps": peak,
            "light_utilization": peak / p.capacity_qps[lname],
            "heavy_utilization": peak * p.heavy_share / p.capacity_qps[hname] if p.capacity_qps.get(hname) else None}


def static_cell(u: Mapping[str, Any], light: str, heavy: str) -> str:
    """Markdown cell: static's GPUs (light+heavy) and its utilization at the peak rate."""
    hu = "-" if u["heavy_utilization"] is None else f"{u['heavy_utilization']:.2f}"
    return (f"{u['workers'].get(light, 0)}+{u['workers'].get(heavy, 0)} @ {u['peak_qps']:.0f} qps: "
            f"{u['light_utilization']:.2f} / {hu}")
