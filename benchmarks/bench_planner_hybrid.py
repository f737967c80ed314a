"""Planner solve time with the prompt router (``benchmarks/bench_planner.py --hybrid``).

The HADIS setting (``benchmarks/data/hadis``, :mod:`planner.hadis`): 4 variants (6 pairs), each
pair with its measured 11 x 11 hybrid surface and its f(t); the artifact's batch rule (batches
1..32), SLO 6 s. Two latency settings: the artifact's (x1: only SDXL-Lightning and
SD3.5-Large-Turbo can meet 6 s, so 4 of the 6 pairs can only serve everything on light) and
its 10x-faster ablation (x0.1: every pair can run its cascade), the harder one for the solver.
Each cell replays the windows of :func:`bench_planner.window_draws` (demand 0.25-2 qps per GPU,
a bounded random walk; the previous plan is the current allocation) for ``hybrid`` and, on the
same windows in the same run, for ``quality`` (ours without the router: the reference for the
ratio). Timed: wall clock and the thread's CPU time of ``policy.plan``.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from tqdm import tqdm

import planner
from planner.hadis import load_hadis

LATENCY_FACTORS = (1.0, 0.1)
POLICIES = ("quality", "hybrid")


def hadis_instances(latency_factor: float, gpus: int, draws: list[tuple[float, float, float]]):
    """A function of (draw, current allocation) -> the window's Instance, on the HADIS cascade."""
    h = load_hadis(latency_factor=latency_factor)
    base = (h.models[0].name, h.models[-1].name)
    f, q = h.pair_curves[base]

    def instance(draw, current):
        return planner.Instance(models=h.models, demand_qps=draw[0], slo_ms=h.slo_ms, num_workers=gpus, deferral=f,
                                quality=q, current=current, pair_curves=h.pair_curves, hybrid_surfaces=h.surfaces,
                                queue_delay_ms={base[0]: draw[1], base[1]: draw[2]})
    return instance


def run_cells(gpus_list: list[int], windows: int, seed: int, window_draws, pct, out: Path) -> list[dict]:
    """Every (latency factor, GPUs) cell with both policies, interleaved window by window."""
    rows = []
    for lf, gpus in tqdm([(lf, g) for lf in LATENCY_FACTORS for g in gpus_list], desc="hybrid cells", unit="cell"):
        draws = window_draws(4, gpus, windows, seed)
        make = hadis_instances(lf, gpus, draws)
        policies = {name: planner.make_policy(name) for name in POLICIES}
        current = {name: None for name in POLICIES}
        wall = {name: [] for name in POLICIES}
        cpu = {name: [] for name in POLICIES}
        status = {name: {} for name in POLICIES}
        fid, routed = {name: [] for name in POLICIES}, []
        for i, draw in enumerate(draws):
            for name in (POLICIES if i % 2 == 0 else POLICIES[::-1]):  # alternate the order
                inst = make(draw, current[name])
                c0, w0 = time.thread_time(), time.perf_counter()
                plan = policies[name].plan(inst)
                cpu[name].append((time.thread_time() - c0) * 1000.0)
                wall[name].append((time.perf_counter() - w0) * 1000.0)
                status[name][plan.status] = status[name].get(plan.status, 0) + 1
                fid[name].append(plan.expected_fid)
                if name == "hybrid":
                    routed.append(plan.router_share)
                current[name] = plan.as_allocation()
        for name in POLICIES:
            rows.append({"policy": name, "latency_factor": lf, "gpus": gpus, "windows": windows,
                         "wall_ms_p50": statistics.median(wall[name]), "wall_ms_p95": pct(wall[name], 95),
                         "wall_ms_max": max(wall[name]), "cpu_ms_p50": statistics.median(cpu[name]),
                         "cpu_ms_p95": pct(cpu[name], 95), "status": status[name],
                         "mean_expected_fid": statistics.fmean(fid[name]),
                         "cpu_p50_ratio_vs_quality": statistics.median(cpu[name]) / statistics.median(cpu["quality"]),
                         "windows_routing": sum(r > 0 for r in routed) if name == "hybrid" else None})
    doc = {"meta": {"command": "benchmarks/bench_planner.py --hybrid", "cpus": os.cpu_count(),
                    "loadavg_after": os.getloadavg(), "windows_per_cell": windows, "seed": seed,
                    "cascade": "HADIS (benchmarks/data/hadis): 4 variants, 6 pairs, 11 x 11 surfaces, SLO 6 s"},
           "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    return rows


def table(rows: list[dict]) -> str:
    out = ["| policy | latency | GPUs | wall p50 ms | wall p95 ms | wall max ms | CPU p50 ms | CPU p95 ms | "
           "CPU p50 / quality's | mean planned FID | windows routing | statuses |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        st = ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items()))
        routing = "-" if r["windows_routing"] is None else f"{r['windows_routing']} / {r['windows']}"
        out.append(f"| {r['policy']} | x{r['latency_factor']:g} | {r['gpus']:,} | {r['wall_ms_p50']:.1f} | "
                   f"{r['wall_ms_p95']:.1f} | {r['wall_ms_max']:.1f} | {r['cpu_ms_p50']:.1f} | {r['cpu_ms_p95']:.1f} | "
                   f"{r['cpu_p50_ratio_vs_quality']:.2f} | {r['mean_expected_fid']:.2f} | {routing} | {st} |")
    return "\n".join(out)


def main(args, window_draws, pct, out: Path) -> int:
    """``bench_planner.py --hybrid``: the table on stdout, the JSON at ``out``."""
    print(table(run_cells(args.gpus, args.windows, args.seed, window_draws, pct, out)))
    print(f"\nload average (1/5/15 min) after {os.getloadavg()}; {os.cpu_count()} CPUs; JSON: {out}")
    return 0
