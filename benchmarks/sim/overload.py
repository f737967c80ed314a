"""Overload experiment: the paper's setup (15 model workers, SLO 5 s, ``maf_4to32qps``) with the
trace's arrival rate x 12, 14, 16 (``trace.rate_scale_trace``), so that demand exceeds the
cluster's all-light capacity for a minute or more; five seeds (the seed places the superimposed
trace copies). Question: do the planned policies (diffserve on both grids, ours) violate no more
than clipper-light, which serves everything on light at its largest batch once backlogged?

In overload all of them plan the same (every GPU on light at the highest-throughput batch); what
differs is the shedding. The planner's overload fallback (:func:`planner.baselines.fallback_plan`)
asks the cascade to shed at the SLO (the control state's ``admit_factor`` 1.0) where Clipper
keeps the cascade's default 1.5 x SLO. Two in-run references measure that rule in the same run:
the planned policies with the fallback's ``admit_factor`` removed (the rule before), and
clipper-light shedding at the SLO throughout (``drop_factor`` 1.0: what the baseline would get
with the same rule everywhere).

    .venv/bin/python -m benchmarks.sim --only overload --out benchmarks/results/sim
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import report
from .experiment import LABEL, VARIANTS, RunConfig, load_inputs, make_policy, run_policy

OVERLOAD_FACTORS = (12.0, 14.0, 16.0)
OVERLOAD_SEEDS = (0, 1, 2, 3, 4)
BASELINE = "clipper-light"
PLANNED = ("diffserve", "diffserve-fine", "quality")
# In-run references: run name -> (policy, how it differs from the default run).
REFERENCES = {
    "diffserve@1.5": ("diffserve", "the fallback keeps the cascade's 1.5 x SLO admission limit"),
    "quality@1.5": ("quality", "the fallback keeps the cascade's 1.5 x SLO admission limit"),
    "clipper-light@slo": (BASELINE, "sheds at the SLO in every window (drop_factor 1.0)"),
}
RUNS = (BASELINE, *PLANNED, *REFERENCES)
RUN_LABEL = {**LABEL, "diffserve@1.5": "diffserve (0.05), fallback at 1.5 x SLO",
             "quality@1.5": "ours, fallback at 1.5 x SLO", "clipper-light@slo": "clipper-light shedding at the SLO"}


@dataclasses.dataclass(frozen=True)
class KeepDefaultShedding:
    """A planner policy whose plans never ask for a tighter admission limit (the rule before)."""

    inner: Any

    @property
    def name(self) -> str:
        return self.inner.name

    def plan(self, instance: Any) -> Any:
        return dataclasses.replace(self.inner.plan(instance), admit_factor=None)


def overload_span(arrival_ms: np.ndarray, window_s: float, capacity_qps: float) -> tuple[float, float]:
    """(longest run of consecutive ``window_s`` windows whose arrival rate exceeds ``capacity_qps``,
    in s; the peak window rate in qps)."""
    edges = np.arange(0.0, float(arrival_ms[-1]) + window_s * 1000.0, window_s * 1000.0)
    rate = np.histogram(arrival_ms, bins=edges)[0] / window_s
    longest = run = 0
    for over in rate > capacity_qps:
        run = run + 1 if over else 0
        longest = max(longest, run)
    return longest * window_s, float(rate.max())


def _run(cfg: RunConfig, name: str, inputs: Any) -> dict[str, Any]:
    if name == "clipper-light@slo":
        return run_policy(dataclasses.replace(cfg, drop_factor=1.0), BASELINE, inputs)
    if name in REFERENCES:
        return run_policy(cfg, name, inputs, policy=KeepDefaultShedding(make_policy(REFERENCES[name][0], cfg)))
    return run_policy(cfg, name, inputs)


def run_seed(cfg: RunConfig) -> dict[str, Any]:
    """Every run of :data:`RUNS` at one load factor and seed: the overload span and each summary."""
    inputs = load_inputs(cfg)
    light = inputs.light
    capacity = cfg.num_workers * max(light.throughput_qps(b) for b in light.batch_sizes)
    span_s, peak = overload_span(inputs.trace.arrival_ms, cfg.window_s, capacity)
    runs = {}
    for name in RUNS:
        r = _run(cfg, name, inputs)
        runs[name] = {"summary": r["summary"], "plan_status": r["plan_status"]}
    return {"queries": len(inputs.trace), "all_light_capacity_qps": capacity, "overload_s": span_s,
            "peak_5s_qps" if cfg.window_s == 5.0 else "peak_window_qps": peak, "runs": runs}


def excess(per_seed: Sequence[dict[str, Any]], name: str) -> dict[str, float]:
    """Violation ratio of ``name`` minus clipper-light's in the same seed: mean, min, max."""
    d = np.array([s["runs"][name]["summary"]["violation_ratio"] - s["runs"][BASELINE]["summary"]["violation_ratio"]
                  for s in per_seed])
    return {"mean": float(d.mean()), "min": float(d.min()), "max": float(d.max())}


def _table(factors: Sequence[float], per_factor: dict[str, Any]) -> str:
    rows = []
    for lf in factors:
        seeds = per_factor[f"{lf:g}"]["seeds"]
        span = [s["overload_s"] for s in seeds]
        base = [s["runs"][BASELINE]["summary"]["violation_ratio"] for s in seeds]
        cells = [f"{e['mean']:+.4f} ({e['min']:+.4f} / {e['max']:+.4f})"
                 for e in (excess(seeds, n) for n in RUNS[1:])]
        rows.append([f"x{lf:g}", f"{min(span):.0f}-{max(span):.0f}", f"{min(base):.4f}-{max(base):.4f}"] + cells)
    return report.markdown_table(["load", "overload (s)", "clipper-light"] + [RUN_LABEL.get(n, n) for n in RUNS[1:]], rows)


def overload_experiment(out: Path, base: RunConfig, factors: Sequence[float], seeds: Sequence[int],
                        command: str) -> dict[str, Any]:
    """:data:`RUNS` at every load factor and seed: results.json, table.md, overload.png under ``out``."""
    per_factor: dict[str, Any] = {}
    for lf in factors:
        per_seed = []
        for seed in seeds:
            t0 = time.perf_counter()
            per_seed.append(run_seed(dataclasses.replace(base, load_factor=float(lf), seed=int(seed))))
            print(f"  overload x{lf:g} seed {seed}: " + "  ".join(
                f"{n} {r['summary']['violation_ratio']:.4f}" for n, r in per_seed[-1]["runs"].items())
                + f"  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        per_factor[f"{lf:g}"] = {"seeds": per_seed, "excess_over_clipper_light": {n: excess(per_seed, n) for n in RUNS[1:]}}
    never_higher = {n: all(excess(per_factor[f"{lf:g}"]["seeds"], n)["max"] <= 0 for lf in factors) for n in PLANNED}
    doc = report.provenance(command, {**dataclasses.asdict(base), "load_factors": list(factors), "seeds": list(seeds),
                                      "variants": VARIANTS, "references": REFERENCES})
    doc["factors"] = per_factor
    doc["never_above_clipper_light"] = never_higher
    report.write_json(out / "results.json", doc)
    fids = report.markdown_table(["load"] + [RUN_LABEL.get(n, n) for n in RUNS], [
        [f"x{lf:g}"] + [f"{np.mean([s['runs'][n]['summary']['mean_fid'] for s in per_factor[f'{lf:g}']['seeds']]):.2f}"
                        for n in RUNS] for lf in factors])
    (out / "table.md").write_text(
        report.md_provenance(doc)
        + f"Trace `{base.trace}` with its arrival rate x load factor, {base.num_workers} model workers, seeds "
        f"{', '.join(map(str, seeds))}. Overload: the longest run of {base.window_s:g}-s windows whose arrival rate is "
        "above every GPU on light at its highest-throughput batch (min-max over the seeds). Per policy: its SLO "
        "violation ratio minus clipper-light's in the same seed, mean (min / max) over the seeds.\n\n"
        + _table(factors, per_factor)
        + "\nNo higher than clipper-light in every seed and load: "
        + ", ".join(f"{RUN_LABEL.get(n, n)} {'yes' if v else 'no'}" for n, v in never_higher.items())
        + ".\n\nMean FID over the seeds (FID of the responses given):\n\n" + fids)
    report.plot_seed_spread(out / "overload.png", [float(f) for f in factors],
                            {RUN_LABEL.get(n, n): [[s["runs"][n]["summary"]["violation_ratio"]
                                                    for s in per_factor[f"{f:g}"]["seeds"]] for f in factors]
                             for n in RUNS},
                            f"{base.trace} x load factor, {base.num_workers} workers, {len(seeds)} seeds")
    return doc
