"""Metrics of a simulation: violation ratio, FID of the responses, throughput, time series.

FID is not simulated per image: as in the DiffServe paper, each window's FID is read from the
quality curve at the share of that window's responses served by the light model (windows by
arrival time), and the run's mean FID weights every window by its number of responses.

Query-agnostic routing (Proteus-like, ``routing == "random"``) has no published curve. We model
a random mix as the linear blend of the all-heavy and all-light FIDs (``random_routing_fid``):
a random subset of light images is as good as the average light image, unlike the cascade that
sends its *best* light images. This is an assumption, stated next to every result that uses it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from planner.types import ModelProfile, QualityCurve

from .engine import DROPPED, SERVED_HEAVY, SERVED_LIGHT, SimResult


def random_routing_fid(quality: QualityCurve, light_share: float) -> float:
    """FID of a query-agnostic mix with ``light_share`` in [0, 1] served by the light model."""
    lo, hi = quality.fid_at(0.0), quality.fid_at(1.0)
    return float(lo + (hi - lo) * light_share)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Whole-run metrics. Rates are per second of trace time (``duration_s``)."""

    queries: int
    served_light: int
    served_heavy: int
    drops: int
    timeouts: int
    violation_ratio: float
    mean_fid: float
    light_share: float
    throughput_qps: float
    goodput_qps: float
    p99_latency_ms: float
    duration_s: float
    p50_latency_ms: float = float("nan")
    p95_latency_ms: float = float("nan")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, eq=False)
class Series:
    """Per control window (index k covers arrivals in [k, k+1) x window_s)."""

    t_s: np.ndarray
    arrivals: np.ndarray
    violation_ratio: np.ndarray  # NaN for windows without arrivals
    light_share: np.ndarray  # NaN for windows without responses
    fid: np.ndarray  # NaN for windows without responses
    threshold: np.ndarray
    workers_light: np.ndarray
    workers_heavy: np.ndarray
    demand_qps: np.ndarray


def _window_routing(result: SimResult, n_windows: int) -> list[str]:
    """Routing of the plan in force at the start of each window."""
    out, j = [], 0
    recs = result.windows
    for k in range(n_windows):
        t = k * result.window_s * 1000.0
        while j + 1 < len(recs) and recs[j + 1].time_ms <= t:
            j += 1
        out.append(recs[j].routing if recs else "cascade")
    return out


def series(result: SimResult, quality: QualityCurve, light_name: str, heavy_name: str) -> Series:
    """Per-window time series of a run (see :class:`Series`)."""
    w_ms = result.window_s * 1000.0
    win = (result.arrival_ms // w_ms).astype(np.int64)
    n_w = int(win.max()) + 1 if len(win) else 0
    arrivals = np.bincount(win, minlength=n_w)
    late = (result.outcome == DROPPED) | (
        (result.outcome != DROPPED) & (result.finish_ms - result.arrival_ms > result.slo_ms))
    viol = np.bincount(win, weights=late.astype(float), minlength=n_w)
    light = np.bincount(win, weights=(result.outcome == SERVED_LIGHT).astype(float), minlength=n_w)
    heavy = np.bincount(win, weights=(result.outcome == SERVED_HEAVY).astype(float), minlength=n_w)
    served = light + heavy
    with np.errstate(invalid="ignore", divide="ignore"):
        vr = np.where(arrivals > 0, viol / np.maximum(arrivals, 1), np.nan)
        share = np.where(served > 0, light / np.maximum(served, 1), np.nan)
    routing = _window_routing(result, n_w)
    fid = np.array([
        np.nan if np.isnan(s) else (random_routing_fid(quality, s) if r == "random" else quality.fid_at(s))
        for s, r in zip(share, routing)])
    # Control records at each tick; the record at k*window applies to window k.
    rec_at = {int(round(r.time_ms / w_ms)): r for r in result.windows}
    thr, wl, wh, dem = (np.full(n_w, np.nan) for _ in range(4))
    last = None
    for k in range(n_w):
        last = rec_at.get(k, last)
        if last is not None:
            thr[k] = last.threshold
            wl[k] = last.workers.get(light_name, 0)
            wh[k] = last.workers.get(heavy_name, 0)
            dem[k] = last.demand_qps
    return Series(t_s=np.arange(n_w) * result.window_s, arrivals=arrivals, violation_ratio=vr, light_share=share,
                  fid=fid, threshold=thr, workers_light=wl, workers_heavy=wh, demand_qps=dem)


def summarize(result: SimResult, quality: QualityCurve, light_name: str = "", heavy_name: str = "") -> Summary:
    """Whole-run metrics: SLO violation ratio = (timeouts + drops) / queries, response-weighted
    mean FID, throughput (responses/s) and goodput (responses within the SLO/s)."""
    out = result.outcome
    n = len(out)
    served_mask = (out == SERVED_LIGHT) | (out == SERVED_HEAVY)
    lat = result.finish_ms - result.arrival_ms
    timeouts = int(np.count_nonzero(served_mask & (lat > result.slo_ms)))
    drops = int(np.count_nonzero(out == DROPPED))
    n_light = int(np.count_nonzero(out == SERVED_LIGHT))
    n_heavy = int(np.count_nonzero(out == SERVED_HEAVY))
    s = series(result, quality, light_name, heavy_name)
    w_ms = result.window_s * 1000.0
    win = (result.arrival_ms // w_ms).astype(np.int64)
    served_w = np.bincount(win, weights=served_mask.astype(float), minlength=len(s.fid))
    ok = served_w > 0
    mean_fid = float(np.sum(s.fid[ok] * served_w[ok]) / np.sum(served_w[ok])) if ok.any() else float("nan")
    duration_s = max(float(result.arrival_ms[-1]) / 1000.0, 1e-9) if n else 1e-9
    n_served = n_light + n_heavy
    return Summary(
        queries=n, served_light=n_light, served_heavy=n_heavy, drops=drops, timeouts=timeouts,
        violation_ratio=(drops + timeouts) / n if n else 0.0, mean_fid=mean_fid,
        light_share=n_light / n_served if n_served else float("nan"),
        throughput_qps=n_served / duration_s, goodput_qps=(n_served - timeouts) / duration_s,
        p99_latency_ms=float(np.percentile(lat[served_mask], 99)) if n_served else float("nan"),
        duration_s=duration_s,
        p50_latency_ms=float(np.percentile(lat[served_mask], 50)) if n_served else float("nan"),
        p95_latency_ms=float(np.percentile(lat[served_mask], 95)) if n_served else float("nan"))


def routed_share(result: SimResult) -> float:
    """Share of the responses sent straight to heavy (the prompt router's, or ``routing`` heavy):
    served without a light image, as the live benchmark's ``routed_share``."""
    served = (result.outcome == SERVED_LIGHT) | (result.outcome == SERVED_HEAVY)
    routed = result.routed if result.routed is not None else np.zeros(len(served), bool)
    return float(np.count_nonzero(routed & served) / max(int(np.count_nonzero(served)), 1))


def fluid_fid_bound(arrival_ms: np.ndarray, window_s: float, light: ModelProfile, heavy: ModelProfile,
                    num_workers: int, slo_ms: float, quality: QualityCurve) -> float:
    """Best mean FID any policy could reach while serving every query (a fluid bound).

    Per window, with the window's true arrival rate known in advance, no queueing and no GPU
    moves: the fewest light GPUs that keep up leave the rest to the heavy model, which caps the
    heavy share; the window's best FID is the curve's minimum over the light shares that cap
    allows. Batch pairs must fit the SLO back to back (light then heavy). Windows are weighted by
    arrivals. Returns the FID (lower is better).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers = {num_workers}; expected >= 1")
    w_ms = window_s * 1000.0
    counts = np.bincount((np.asarray(arrival_ms) // w_ms).astype(np.int64))
    pairs = [(light.throughput_qps(bl), heavy.throughput_qps(bh)) for bl in light.batch_sizes
             for bh in heavy.batch_sizes if light.latency_ms(bl) + heavy.latency_ms(bh) <= slo_ms]
    heavy_only = [heavy.throughput_qps(b) for b in heavy.batch_sizes if heavy.latency_ms(b) <= slo_ms]
    shares = np.linspace(0.0, 1.0, 1001)
    fids = np.array([quality.fid_at(s) for s in shares])
    best = []
    for c in counts:
        lam = c / window_s
        if lam <= 0:
            best.append(0.0)
            continue
        f_max = 0.0
        if heavy_only and num_workers * max(heavy_only) >= lam:
            f_max = 1.0
        for mu_l, mu_h in pairs:
            n_l = max(1, int(np.ceil(lam / mu_l - 1e-9)))
            if n_l <= num_workers:
                f_max = max(f_max, min(1.0, (num_workers - n_l) * mu_h / lam))
        best.append(float(fids[shares >= 1.0 - f_max - 1e-12].min()))
    w = counts.astype(float)
    return float(np.sum(np.array(best) * w) / np.sum(w)) if w.sum() else float("nan")
