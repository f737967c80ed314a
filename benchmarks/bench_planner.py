"""Planner solve time: p50/p95 of ``policy.plan`` at 16, 64, 256 and 1,024 GPUs, 2 and 4 variants.

Each cell replays a sequence of control windows: demand follows a bounded random walk between
0.25 and 2.0 qps per GPU (the paper's testbed: 16 GPUs for its 4-32 qps traces), observed
queueing delays are drawn per window (light 0-300 ms, heavy 0-1000 ms), and each window's
current allocation is the previous plan (so the quality policy's move cost is exercised).
Timed: wall clock of the whole ``plan`` call (model build + CP-SAT + decode), and that
thread's CPU time (less sensitive to other load on a shared machine; the load average is
recorded too).

2 variants: the paper's A100 profiles (SD-Turbo -> SD v1.5) and curves.
4 variants: SYNTHETIC, for scaling only. Two extra variants are built by scaling the paper's
profiles (``sdturbo-2step`` = SD-Turbo latency x 1.8, ``sdv15-25step`` = SD v1.5 latency x
0.55); every pair gets the paper's f(t) and the paper's FID curve shifted linearly so that its
end points are the variants' assumed stand-alone FIDs (22.77, 21.5, 19.3, 18.55). These
numbers are made up to give the planner a non-trivial pair choice; they are not measurements.

    .venv/bin/python benchmarks/bench_planner.py                 # the table + JSON + PNG
    .venv/bin/python benchmarks/bench_planner.py --solver-sweep  # CP-SAT settings compared
    .venv/bin/python benchmarks/bench_planner.py --decisions     # every policy's plan, paper cascade
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import Instance, ModelProfile, QualityCurve, data, make_policy  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results" / "planner"
SOLO_FID = {"sdturbo": 22.77, "sdturbo-2step": 21.5, "sdv15-25step": 19.3, "sdv15": 18.55}
SWEEP = {
    "default (no presolve, no LP, fixed search)": (),
    "presolve on": (("presolve", True),),
    "LP relaxation on": (("linearization_level", 1),),
    "automatic search": (("fixed_search", False),),
}


def _scaled(p: ModelProfile, name: str, factor: float, rank: int) -> ModelProfile:
    return ModelProfile(name=name, batch_latency_ms={b: v * factor for b, v in p.batch_latency_ms.items()}, quality_rank=rank)


def cascade(variants: int):
    """(models, f(t), quality curve, pair curves) for 2 (paper) or 4 (synthetic, see above) variants."""
    (light, heavy), f, q = data.load_paper()
    if variants == 2:
        return (light, heavy), f, q, {}
    if variants != 4:
        raise ValueError(f"variants = {variants}; expected 2 or 4")
    models = (light, _scaled(light, "sdturbo-2step", 1.8, 1), _scaled(heavy, "sdv15-25step", 0.55, 2), heavy)
    pairs = {}
    for i in range(4):
        for j in range(i + 1, 4):
            a, b = models[i].name, models[j].name
            shift = [(SOLO_FID[a] - q.fid_at(1.0)) * x + (SOLO_FID[b] - q.fid_at(0.0)) * (1 - x) for x in q.light_fraction]
            pairs[(a, b)] = (f, QualityCurve(q.light_fraction, tuple(v + d for v, d in zip(q.fid, shift))))
    return models, f, q, pairs


def run_cell(policy_name: str, variants: int, gpus: int, windows: int, seed: int, overrides=()) -> dict:
    """Time ``windows`` consecutive plans; returns the timing summary of the cell."""
    models, f, q, pairs = cascade(variants)
    kw = {"solver_overrides": tuple(overrides)} if overrides else {}
    policy = make_policy(policy_name, **kw)
    rng = random.Random(seed * 1_000_003 + gpus * 31 + variants)
    per_gpu, current = rng.uniform(0.25, 2.0), None
    wall, cpu, status, fids = [], [], {}, []
    for _ in range(windows):
        per_gpu = min(2.0, max(0.25, per_gpu * rng.uniform(0.8, 1.25)))
        inst = Instance(
            models=models, demand_qps=per_gpu * gpus, slo_ms=5000.0, num_workers=gpus, deferral=f, quality=q,
            current=current, pair_curves=pairs,
            queue_delay_ms={models[0].name: rng.uniform(0, 300), models[-1].name: rng.uniform(0, 1000)},
        )
        w0, c0 = time.perf_counter(), time.thread_time()
        plan = policy.plan(inst)
        cpu.append((time.thread_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - w0) * 1000.0)
        status[plan.status] = status.get(plan.status, 0) + 1
        fids.append(plan.expected_fid)
        current = plan.as_allocation()

    def pct(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]  # nearest rank

    return {
        "policy": policy_name, "variants": variants, "gpus": gpus, "windows": windows,
        "wall_ms_p50": statistics.median(wall), "wall_ms_p95": pct(wall, 95), "wall_ms_max": max(wall),
        "cpu_ms_p50": statistics.median(cpu), "cpu_ms_p95": pct(cpu, 95),
        "status": status, "mean_expected_fid": statistics.fmean(fids),
    }


def decisions(gpus: int = 15, demands=(4, 8, 12, 16, 20, 24, 30, 40)) -> list[dict]:
    """Every policy's plan on the paper's cascade (A100 profiles, 5 s SLO) across demands."""
    from planner import POLICY_NAMES

    models, f, q, _ = cascade(2)
    rows = []
    for d in demands:
        inst = Instance(models=models, demand_qps=float(d), slo_ms=5000.0, num_workers=gpus, deferral=f, quality=q)
        for name in POLICY_NAMES:
            p = make_policy(name).plan(inst)
            rows.append({
                "demand_qps": d, "policy": name, "status": p.status, "threshold": p.threshold,
                "heavy_share": p.heavy_share, "workers": dict(p.workers), "batch_size": dict(p.batch_size),
                "expected_fid": p.expected_fid, "slack_ms": p.slack_ms, "reason": p.reason,
            })
    return rows


def decisions_table(rows: list[dict]) -> str:
    out = ["| qps | policy | status | t | heavy share | GPUs (light/heavy) | batch (light/heavy) | expected FID |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        w, b = r["workers"], r["batch_size"]
        out.append(
            f"| {r['demand_qps']} | {r['policy']} | {r['status']} | {r['threshold']:.2f} | {r['heavy_share']:.2f} | "
            f"{w.get('sdturbo', 0)}/{w.get('sdv15', 0)} | {b.get('sdturbo', '-')}/{b.get('sdv15', '-')} | {r['expected_fid']:.2f} |"
        )
    return "\n".join(out)


def table(rows: list[dict]) -> str:
    out = [
        "| policy | variants | GPUs | wall p50 ms | wall p95 ms | wall max ms | CPU p50 ms | CPU p95 ms | statuses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        st = ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items()))
        out.append(
            f"| {r['policy']} | {r['variants']} | {r['gpus']:,} | {r['wall_ms_p50']:.1f} | {r['wall_ms_p95']:.1f} | "
            f"{r['wall_ms_max']:.1f} | {r['cpu_ms_p50']:.1f} | {r['cpu_ms_p95']:.1f} | {st} |"
        )
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for key in sorted({(r["policy"], r["variants"]) for r in rows}):
        sel = sorted((r for r in rows if (r["policy"], r["variants"]) == key), key=lambda r: r["gpus"])
        xs = [r["gpus"] for r in sel]
        line = ax.plot(xs, [r["wall_ms_p95"] for r in sel], marker="o", label=f"{key[0]}, {key[1]} variants: p95")
        ax.plot(xs, [r["wall_ms_p50"] for r in sel], ls="--", color=line[0].get_color(), label=f"{key[0]}, {key[1]} variants: p50")
    ax.axhline(50, color="grey", lw=0.8)
    ax.axhline(1000, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("GPUs")
    ax.set_ylabel("plan() wall time, ms")
    ax.set_title("Planner solve time (targets: 50 ms at 16 GPUs, 1 s at 1,024)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--windows", type=int, default=40, help="plans per cell (consecutive windows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solver-sweep", action="store_true", help="compare CP-SAT settings (quality, 4 variants)")
    ap.add_argument("--decisions", action="store_true", help="print every policy's plan on the paper's cascade (15 GPUs)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default under benchmarks/results/planner/)")
    args = ap.parse_args(argv)
    if args.decisions:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        rows = decisions()
        out = args.out or OUT_DIR / "decisions.json"
        out.write_text(json.dumps(rows, indent=2))
        print(decisions_table(rows))
        print(f"\nJSON: {out}")
        return 0
    if any(g < 1 for g in args.gpus) or args.windows < 2:
        ap.error(f"--gpus {args.gpus} and --windows {args.windows}: expected GPUs >= 1 and windows >= 2")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    if args.solver_sweep:
        cells = [(name, "quality", 4, g, ov) for name, ov in SWEEP.items() for g in args.gpus]
        cells += [(name, "diffserve", 2, g, ov) for name, ov in SWEEP.items() for g in args.gpus]
    else:
        cells = [("default", p, v, g, ()) for p, v in (("diffserve", 2), ("quality", 2), ("quality", 4)) for g in args.gpus]
    rows = []
    for setting, pol, v, g, ov in tqdm(cells, desc="planner cells", unit="cell"):
        row = run_cell(pol, v, g, args.windows, args.seed, ov)
        row["setting"] = setting
        rows.append(row)
    load_after = os.getloadavg()
    stem = "solver_sweep" if args.solver_sweep else "solve_time"
    out = args.out or OUT_DIR / f"{stem}.json"
    meta = {
        "command": "benchmarks/bench_planner.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": load_after, "windows_per_cell": args.windows,
        "note": "4-variant cascades are synthetic (scaled paper profiles, shifted paper FID curve); see the module docstring",
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.solver_sweep:
        for setting in SWEEP:
            print(f"\n{setting}\n")
            print(table([r for r in rows if r["setting"] == setting]))
    else:
        print(table(rows))
        plot(rows, out.with_suffix(".png"))
    print(f"\nload average (1/5/15 min) before {load_before}, after {load_after}; {os.cpu_count()} CPUs; JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
