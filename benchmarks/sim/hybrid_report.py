"""The HADIS experiment's files (:mod:`.hybrid`): results.json, table.md, hybrid.png, timeseries.png."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from planner.hadis import load_hadis

from . import report
from .hybrid import LABEL, OURS, HybridConfig, run_trace

COLUMNS = ("hybrid", "quality", "diffserve-best", "clipper-light", "clipper-heavy", "static")
SERIES_POLICIES = ("hybrid", "quality", "diffserve-best")  # per-window plans and FIDs kept in results.json


def _without_series(case: dict[str, Any], keep: bool) -> dict[str, Any]:
    """The case for results.json: per-window series only where ``keep`` and for :data:`SERIES_POLICIES`."""
    series = ("windows", "fid_per_window")
    return {**case, "policies": {n: {k: v for k, v in r.items() if k not in series or (keep and n in SERIES_POLICIES)}
                                 for n, r in case["policies"].items()}}


def _cell(case: dict[str, Any], name: str) -> str:
    s = case["policies"][name]["summary"]
    return f"{s['mean_fid']:.2f} ({s['violation_ratio']:.4f})"


def hybrid_experiment(out: Path, cfg: HybridConfig, command: str) -> dict[str, Any]:
    """Every policy on every trace of ``cfg``; writes the files under ``out`` and returns the JSON document."""
    h = load_hadis(latency_factor=cfg.latency_factor)
    cases = {name: run_trace(cfg, h, name) for name in cfg.traces}
    doc = report.provenance(command, {**dataclasses.asdict(cfg), "ours": OURS})
    doc["cases"] = {name: _without_series(case, keep=name == cfg.traces[-1]) for name, case in cases.items()}
    doc["series_kept_for"] = f"{cfg.traces[-1]}: {', '.join(SERIES_POLICIES)} (timeseries.png)"
    report.write_json(out / "results.json", doc)
    rows, pair_rows = [], []
    for name, case in cases.items():
        ch = case["checks"]
        rows.append([name, str(case["queries"])] + [_cell(case, n) for n in COLUMNS]
                    + [case["best_pair"].replace("->", " -> "), f"{ch['FID reduction (%)']:.2f}",
                       "yes" if ch["hybrid FID <= diffserve best pair"] and ch["hybrid violations <= diffserve best pair"]
                       else "**no**", "yes" if ch["hybrid FID < diffserve best pair"] else "no"])
        pair_rows.append([name] + [f"{s['mean_fid']:.2f} ({s['violation_ratio']:.4f})"
                                   for s in case["diffserve_by_pair"].values()])
    pairs = [p.replace("->", " -> ") for p in next(iter(cases.values()))["diffserve_by_pair"]]
    met = sum(c["checks"]["hybrid FID <= diffserve best pair"] and c["checks"]["hybrid violations <= diffserve best pair"]
              for c in cases.values())
    strict = sum(c["checks"]["hybrid FID < diffserve best pair"] for c in cases.values())
    table = report.markdown_table(["trace", "queries"] + [LABEL[n] for n in COLUMNS]
                                  + ["best fixed pair", "hybrid FID vs best pair (% lower)",
                                     "hybrid FID <= and violations <= best pair", "hybrid FID strictly lower"], rows)
    by_pair = report.markdown_table(["trace"] + [f"diffserve {p}" for p in pairs], pair_rows)
    (out / "table.md").write_text(
        report.md_provenance(doc)
        + f"HADIS setting: 4 variants, artifact batch rule x{cfg.latency_factor:g} latency, SLO 6 s, "
        f"{cfg.num_workers} GPUs, seed {cfg.seed}. Mean FID from the measured 11 x 11 surfaces (violation ratio); "
        "comparisons on the printed numbers. Best fixed pair: chosen per trace with hindsight, the lowest FID among "
        f"the pairs at violation ratio <= {cfg.best_pair_max_violations:g} (see benchmarks/sim/hybrid.py).\n\n"
        + table + f"\nHybrid has lower-or-equal FID at no more violations than DiffServe on its best fixed pair on "
        f"{met} of {len(cases)} traces, strictly lower FID on {strict}.\n\nDiffServe on every fixed pair:\n\n" + by_pair)
    plot_bars(out / "hybrid.png", cases, cfg)
    plot_timeseries(out / "timeseries.png", cases[cfg.traces[-1]], cfg)
    return doc


def plot_bars(path: Path, cases: dict[str, Any], cfg: HybridConfig) -> Path:
    """FID and violation ratio per trace, one bar per policy."""
    plt = report._pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(COLUMNS)
    x = np.arange(len(cases))
    for i, name in enumerate(COLUMNS):
        s = [c["policies"][name]["summary"] for c in cases.values()]
        a.bar(x + i * width, [v["mean_fid"] for v in s], width, label=LABEL[name])
        b.bar(x + i * width, [v["violation_ratio"] for v in s], width, label=LABEL[name])
    fids = [c["policies"][n]["summary"]["mean_fid"] for c in cases.values() for n in COLUMNS]
    a.set_ylim(min(fids) - 0.5, max(fids) + 0.5)
    a.set_ylabel("mean FID (lower is better)")
    b.set_ylabel("SLO violation ratio")
    b.set_yscale("symlog", linthresh=1e-3)
    for ax in (a, b):
        ax.set_xticks(x + 0.4 - width / 2, list(cases), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(f"HADIS setting: 16 GPUs, SLO 6 s, latency x{cfg.latency_factor:g}")
    return report._save(plt, fig, path)


def plot_timeseries(path: Path, case: dict[str, Any], cfg: HybridConfig) -> Path:
    """Hybrid against DiffServe on its best pair over one trace: demand, router share, FID."""
    plt = report._pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for name in ("hybrid", "quality", "diffserve-best"):
        r = case["policies"][name]
        t = [w["t_s"] for w in r["windows"]]
        axes[1].step(t, [w["router_share"] for w in r["windows"]], where="post", label=LABEL[name])
        fid = np.asarray(r["fid_per_window"], dtype=float)
        axes[2].plot(np.arange(len(fid)) * cfg.window_s, fid, lw=1.2, label=LABEL[name])
    hy = case["policies"]["hybrid"]["windows"]
    axes[0].step([w["t_s"] for w in hy], [w["demand_qps"] for w in hy], where="post", color="black")
    axes[0].set_ylabel("planned demand (qps)")
    axes[1].set_ylabel("planned router share")
    axes[2].set_ylabel("FID of the window (lower is better)")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{case['trace']}: hybrid vs DiffServe on {case['best_pair']}")
    return report._save(plt, fig, path)


def run_hybrid(out: Path, seed: int, window_s: float, model_load_s: float, overprovision: float, latency_factor: float,
               command: str, traces: Sequence[str] | None = None) -> dict[str, Any]:
    """The CLI's part ``hybrid`` (``python -m benchmarks.sim --only hybrid``)."""
    cfg = HybridConfig(traces=tuple(traces) if traces else HybridConfig.traces, seed=seed, window_s=window_s,
                       model_load_s=model_load_s, overprovision=overprovision, latency_factor=latency_factor)
    sub = "hybrid" if latency_factor == 1.0 else f"hybrid_x{latency_factor:g}"
    doc = hybrid_experiment(out / sub, cfg, command)
    print((out / sub / "table.md").read_text())
    return doc
