"""Load experiment: the paper's setup (15 model workers, SLO 5 s, ``maf_4to32qps``) with the
trace's arrival rate multiplied by a load factor (``trace.rate_scale_trace``, seeded), for every
policy. It shows where a fixed provisioning (DiffServe-Static) breaks and how the planned
policies trade FID for keeping up.

    .venv/bin/python -m benchmarks.sim --only load --out benchmarks/results/sim
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import report
from .experiment import LABEL, VARIANTS, RunConfig, bound_for, load_inputs, paper_checks, run_policy, static_cell, static_utilization

LOAD_FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0)


def load_sweep(out: Path, base: RunConfig, policies: Sequence[str], factors: Sequence[float], command: str) -> dict[str, Any]:
    """Every policy at every load factor: results.json, table.md and load.png under ``out``.

    Returns the JSON document (per factor: trace size, peak 5-s rate in qps, fluid FID bound,
    each policy's summary without its series, and the paper's orderings as True/False)."""
    per_factor: dict[str, Any] = {}
    rows, check_rows = [], []
    for lf in factors:
        cfg = dataclasses.replace(base, load_factor=float(lf))
        inputs = load_inputs(cfg)
        w_ms = cfg.window_s * 1000.0
        peak_qps = float(np.bincount((inputs.trace.arrival_ms // w_ms).astype(np.int64)).max()) / cfg.window_s
        res = {}
        for name in policies:
            r = run_policy(cfg, name, inputs)
            res[name] = {k: v for k, v in r.items() if k != "series"}
            s = r["summary"]
            print(f"  load x{lf:g} {name:14s} violations {s['violation_ratio']:.4f}  FID {s['mean_fid']:.2f}", file=sys.stderr)
        bound = bound_for(cfg, inputs)
        checks = paper_checks({n: r["summary"] for n, r in res.items()}, bound)
        su = static_utilization(cfg, inputs)
        per_factor[f"{lf:g}"] = {"load_factor": lf, "queries": len(inputs.trace), "peak_5s_qps": peak_qps,
                                 "fluid_fid_bound": bound, "policies": res, "checks": checks, "static_provisioning": su}
        rows.append([f"{lf:g}", str(len(inputs.trace)), f"{peak_qps:.0f}"]
                    + [f"{res[n]['summary']['mean_fid']:.2f} ({res[n]['summary']['violation_ratio']:.4f})" for n in policies]
                    + [f"{bound:.2f}"])
        check_rows.append([f"{lf:g}", str(checks["diffserve FID < clipper-light FID"]),
                           str(checks["diffserve FID < proteus-like FID"]),
                           str(checks["diffserve violations < clipper-heavy violations"]),
                           str(checks["diffserve violations < static violations"]),
                           str(checks["ours violations <= diffserve violations"]),
                           str(checks["ours FID reduction vs diffserve (%)"]),
                           str(checks["largest possible FID reduction vs diffserve (%)"]),
                           static_cell(su, inputs.light.name, inputs.heavy.name)])
    doc = report.provenance(command, {**dataclasses.asdict(base), "load_factors": list(factors), "variants": VARIANTS})
    doc["factors"] = per_factor
    report.write_json(out / "results.json", doc)
    table = report.markdown_table(["load factor", "queries", "peak 5-s rate (qps)"] + [LABEL.get(n, n) for n in policies]
                                  + ["fluid FID bound"], rows)
    checks_md = report.markdown_table(
        ["load factor", "diffserve FID < clipper-light", "diffserve FID < proteus-like",
         "diffserve violations < clipper-heavy", "diffserve violations < static", "ours violations <= diffserve",
         "ours FID vs diffserve (% lower)", "fluid bound vs diffserve (% lower)",
         "static GPUs light+heavy @ peak 5-s rate: utilization light / heavy"], check_rows)
    (out / "table.md").write_text(
        report.md_provenance(doc)
        + f"Trace `{base.trace}` with its arrival rate x load factor (seed {base.seed}), {base.num_workers} model "
        f"workers, SLO {base.slo_ms / 1000:g} s. Mean FID (SLO violation ratio) per policy.\n\n"
        + table + "\nThe paper's orderings at each load (True/False on the numbers above):\n\n" + checks_md)
    report.plot_vs_load(out / "load.png", [float(f) for f in factors],
                        {LABEL.get(n, n): [per_factor[f"{f:g}"]["policies"][n]["summary"] for f in factors] for n in policies},
                        [per_factor[f"{f:g}"]["fluid_fid_bound"] for f in factors],
                        f"{base.trace} x load factor, {base.num_workers} workers, SLO {base.slo_ms / 1000:g} s")
    return doc
