"""Load experiment: the paper's setup (15 model workers, SLO 5 s, ``maf_4to32qps``) with the
trace's arrival rate multiplied by a load factor (``trace.rate_scale_trace``, seeded), for every
policy. It shows where a fixed provisioning (DiffServe-Static) breaks and how the planned
policies trade FID for keeping up.

    .venv/bin/python -m benchmarks.sim --only load --out benchmarks/results/sim
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from . import report
from .compare import static_cell
from .experiment import LABEL, VARIANTS, RunConfig
from .paper import cell, run_case

LOAD_FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0)


def load_sweep(out: Path, base: RunConfig, policies: Sequence[str], factors: Sequence[float], command: str) -> dict[str, Any]:
    """Every policy at every load factor: results.json, table.md and load.png under ``out``.

    Returns the JSON document (per factor: trace size, peak 5-s rate in qps, fluid FID bound,
    each policy's summary without its series, the Pareto front and the orderings)."""
    per_factor: dict[str, Any] = {}
    rows, check_rows = [], []
    for lf in factors:
        cfg = dataclasses.replace(base, load_factor=float(lf))
        case = run_case(cfg, policies, f"load x{lf:g}")
        su = case["static_provisioning"]
        case["load_factor"] = lf
        case["peak_5s_qps"] = su["peak_qps"]
        per_factor[f"{lf:g}"] = case
        ch, models = case["checks"], case["inputs"]["models"]
        rows.append([f"{lf:g}", str(case["queries"]), f"{su['peak_qps']:.0f}"] + [cell(case, n) for n in policies]
                    + [f"{case['fluid_fid_bound']:.2f}",
                       ", ".join(LABEL.get(n, n) for n in ch["policies dominating ours"]) or "none"])
        check_rows.append([f"{lf:g}", str(ch["diffserve FID vs clipper-light FID"]),
                           str(ch["diffserve FID vs proteus-like FID"]),
                           str(ch["diffserve violations vs clipper-heavy violations"]),
                           str(ch["diffserve violations vs static violations"]),
                           str(ch["ours violations vs diffserve violations"]),
                           str(ch["ours FID reduction vs diffserve (%)"]),
                           str(ch["largest possible FID reduction vs diffserve (%)"]),
                           static_cell(su, models[0], models[-1])])
    doc = report.provenance(command, {**dataclasses.asdict(base), "load_factors": list(factors), "variants": VARIANTS})
    doc["factors"] = per_factor
    report.write_json(out / "results.json", doc)
    table = report.markdown_table(["load factor", "queries", "peak 5-s rate (qps)"] + [LABEL.get(n, n) for n in policies]
                                  + ["fluid FID bound", "policies dominating ours"], rows)
    checks_md = report.markdown_table(
        ["load factor", "diffserve FID vs clipper-light", "diffserve FID vs proteus-like",
         "diffserve violations vs clipper-heavy", "diffserve violations vs static", "ours violations vs diffserve",
         "ours FID vs diffserve (% lower)", "fluid bound vs diffserve (% lower)",
         "static GPUs light+heavy @ peak 5-s rate: utilization light / heavy"], check_rows)
    (out / "table.md").write_text(
        report.md_provenance(doc)
        + f"Trace `{base.trace}` with its arrival rate x load factor (seed {base.seed}), {base.num_workers} model "
        "workers. Mean FID (SLO violation ratio) per policy; `*` = on the Pareto front of that row.\n\n"
        + table + "\nOrderings on the rounded numbers (lower / tie / higher):\n\n" + checks_md)
    report.plot_vs_load(out / "load.png", [float(f) for f in factors],
                        {LABEL.get(n, n): [per_factor[f"{f:g}"]["policies"][n]["summary"] for f in factors] for n in policies},
                        [per_factor[f"{f:g}"]["fluid_fid_bound"] for f in factors],
                        f"{base.trace} x load factor, {base.num_workers} workers")
    return doc
