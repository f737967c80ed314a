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
    .venv/bin/python benchmarks/bench_planner.py --baseline DIR  # same decisions as DIR's planner? ratio
    .venv/bin/python benchmarks/bench_planner.py --hybrid --gpus 16 1024  # with the router (HADIS data)

``--baseline DIR`` imports the ``planner`` package of another checkout (``DIR/planner``, e.g.
``git worktree add /tmp/base <commit>``) beside this one and solves the same instances with
both: the windows of the timing cells and seeded random instances (2-4 variants, queueing,
backlog, move costs, every policy and the quality policy's options). It reports every plan that
differs (all fields but the solve time) and the time ratio this / baseline, both timed in the
same run, interleaved, in alternating order.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib
import itertools
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

import planner  # noqa: E402
from planner import make_policy  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results" / "planner"
SOLO_FID = {"sdturbo": 22.77, "sdturbo-2step": 21.5, "sdv15-25step": 19.3, "sdv15": 18.55}
def pct(xs: list[float], p: float) -> float:
    """The ``p``-th percentile of ``xs`` (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


SWEEP = {
    "default (no presolve, no LP, fixed search)": (),
    "presolve on": (("presolve", True),),
    "LP relaxation on": (("linearization_level", 1),),
    "automatic search": (("fixed_search", False),),
}


def _scaled(pkg, p, name: str, factor: float, rank: int):
    return pkg.ModelProfile(name=name, batch_latency_ms={b: v * factor for b, v in p.batch_latency_ms.items()}, quality_rank=rank)


def cascade(variants: int, pkg=planner):
    """(models, f(t), quality curve, pair curves) for 2 (paper) or 4 (synthetic, see above) variants,
    built with the types of the planner package ``pkg`` (this checkout's, or ``--baseline``'s)."""
    (light, heavy), f, q = pkg.data.load_paper()
    if variants == 2:
        return (light, heavy), f, q, {}
    if variants != 4:
        raise ValueError(f"variants = {variants}; expected 2 or 4")
    models = (light, _scaled(pkg, light, "sdturbo-2step", 1.8, 1), _scaled(pkg, heavy, "sdv15-25step", 0.55, 2), heavy)
    pairs = {}
    for i in range(4):
        for j in range(i + 1, 4):
            a, b = models[i].name, models[j].name
            shift = [(SOLO_FID[a] - q.fid_at(1.0)) * x + (SOLO_FID[b] - q.fid_at(0.0)) * (1 - x) for x in q.light_fraction]
            pairs[(a, b)] = (f, pkg.QualityCurve(q.light_fraction, tuple(v + d for v, d in zip(q.fid, shift))))
    return models, f, q, pairs


def window_draws(variants: int, gpus: int, windows: int, seed: int) -> list[tuple[float, float, float]]:
    """Per window of a cell: (demand qps, light queueing ms, heavy queueing ms), a bounded random walk."""
    rng = random.Random(seed * 1_000_003 + gpus * 31 + variants)
    per_gpu, out = rng.uniform(0.25, 2.0), []
    for _ in range(windows):
        per_gpu = min(2.0, max(0.25, per_gpu * rng.uniform(0.8, 1.25)))
        out.append((per_gpu * gpus, rng.uniform(0, 300), rng.uniform(0, 1000)))
    return out


def cell_instance(pkg, cascade_data, gpus: int, draw: tuple[float, float, float], current):
    """One window's :class:`Instance` of a timing cell (types of ``pkg``)."""
    models, f, q, pairs = cascade_data
    return pkg.Instance(
        models=models, demand_qps=draw[0], slo_ms=5000.0, num_workers=gpus, deferral=f, quality=q,
        current=current, pair_curves=pairs, queue_delay_ms={models[0].name: draw[1], models[-1].name: draw[2]},
    )


def run_cell(policy_name: str, variants: int, gpus: int, windows: int, seed: int, overrides=()) -> dict:
    """Time ``windows`` consecutive plans; returns the timing summary of the cell."""
    data_ = cascade(variants)
    kw = {"solver_overrides": tuple(overrides)} if overrides else {}
    policy = make_policy(policy_name, **kw)
    current = None
    wall, cpu, status, fids, reasons = [], [], {}, [], set()
    for draw in window_draws(variants, gpus, windows, seed):
        inst = cell_instance(planner, data_, gpus, draw, current)
        w0, c0 = time.perf_counter(), time.thread_time()
        plan = policy.plan(inst)
        cpu.append((time.thread_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - w0) * 1000.0)
        status[plan.status] = status.get(plan.status, 0) + 1
        fids.append(plan.expected_fid)
        reasons |= {f"{plan.status}: {plan.reason}"} if plan.status not in ("OPTIMAL", "STATIC") else set()
        current = plan.as_allocation()

    return {
        "policy": policy_name, "variants": variants, "gpus": gpus, "windows": windows,
        "wall_ms_p50": statistics.median(wall), "wall_ms_p95": pct(wall, 95), "wall_ms_max": max(wall),
        "cpu_ms_p50": statistics.median(cpu), "cpu_ms_p95": pct(cpu, 95),
        "status": status, "mean_expected_fid": statistics.fmean(fids), "not_optimal_reasons": sorted(reasons)[:5],
    }


def decisions(gpus: int = 15, demands=(4, 8, 12, 16, 20, 24, 30, 40)) -> list[dict]:
    """Every policy's plan on the paper's cascade (A100 profiles, 5 s SLO) across demands."""
    from planner import POLICY_NAMES

    models, f, q, _ = cascade(2)
    rows = []
    for d in demands:
        inst = planner.Instance(models=models, demand_qps=float(d), slo_ms=5000.0, num_workers=gpus, deferral=f, quality=q)
        for name in POLICY_NAMES:
            p = make_policy(name).plan(inst)
            rows.append({
                "demand_qps": d, "policy": name, "status": p.status, "threshold": p.threshold,
                "heavy_share": p.heavy_share, "workers": dict(p.workers), "batch_size": dict(p.batch_size),
                "expected_fid": p.expected_fid, "slack_ms": p.slack_ms, "reason": p.reason,
            })
    return rows


# (policy, keyword arguments) solved on every random instance of ``--baseline``; a callable
# builds the keywords from the instance (the static baseline needs profiled batch sizes).
COMPARE_CASES = (
    ("diffserve", {}), ("diffserve", {"threshold_step": 0.05}), ("quality", {}),
    ("quality", {"utilization_levels": (0.6, 0.9), "switch_cost_fid": 2.0}),
    ("quality", {"threshold_step": 0.01, "max_batch_wait_ms": 0.0, "spread_spare_workers": True}),
    ("quality", {"drain_queues": True, "arrival_scv": 0.5}),
    ("quality", {"solver_overrides": (("decompose_pairs", False),)}),
    ("clipper-light", {}), ("clipper-heavy", {}), ("proteus", {}),
    ("static", lambda d: {"light_batch": min(d["models"][0][1]), "heavy_batch": min(d["models"][-1][1]),
                          "light_workers": 1, "heavy_workers": 2, "threshold": 0.4}),
)


def load_baseline_planner(root: Path):
    """The ``planner`` package of the checkout at ``root``, imported beside ours: our modules leave
    ``sys.modules`` while it imports and come back after; each package keeps its own submodules."""
    def take() -> dict:
        return {k: sys.modules.pop(k) for k in list(sys.modules) if k == "planner" or k.startswith("planner.")}
    if not (root / "planner" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {root}: no planner/__init__.py there; expected a checkout's root")
    ours = take()
    sys.path.insert(0, str(root))
    try:
        base = importlib.import_module("planner")
    finally:
        take()
        sys.path.remove(str(root))
        sys.modules.update(ours)
    return base


def random_description(rng: random.Random) -> dict:
    """A random planning problem as plain data (2-4 variants, curves, queueing, current allocation)."""
    n_models = rng.choice((2, 2, 3, 4))
    models = []
    for i in range(n_models):
        base_ms = rng.uniform(50, 400) * (1 + rng.uniform(0.5, 4.0) * i)
        sizes = sorted(rng.sample([1, 2, 4, 8, 16], rng.randint(1, 4)))
        models.append((f"m{i}", {b: base_ms * (0.5 + 0.5 * b ** 0.8) for b in sizes}, i))

    def curves():  # f(t) on 6 thresholds, FID on 4 light shares (U-shaped more often than not)
        fs = (0.0, *sorted(rng.uniform(0.0, 1.0) for _ in range(5)))
        fids = (rng.uniform(15, 20), rng.uniform(12, 22), rng.uniform(14, 24), rng.uniform(22, 30))
        return ((0.0, 0.2, 0.4, 0.6, 0.8, 1.0), fs), ((0.0, 0.3, 0.6, 1.0), fids)
    names = [m[0] for m in models]
    pair_curves = {(a, b): curves() for i, a in enumerate(names) for b in names[i + 1:]
                   if (a, b) != (names[0], names[-1]) and rng.random() < 0.7}
    gpus = rng.choice((1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
    light_cap = gpus * max(1000.0 * b / ms for b, ms in models[0][1].items())
    slo_ms = rng.uniform(1500, 8000)
    light, heavy = names[0], names[-1]
    desc = {
        "models": models, "demand_qps": rng.uniform(0.05, 1.5) * light_cap, "slo_ms": slo_ms, "gpus": gpus,
        "curves": curves(), "pair_curves": pair_curves,
        "queue_delay_ms": {light: rng.uniform(0, 0.3) * slo_ms, heavy: rng.uniform(0, 1.2) * slo_ms},
        "queue_length": {}, "model_arrival_qps": {}, "current": None,
    }
    if rng.random() < 0.5:  # Little's law inputs, sometimes a backlog beyond the SLO
        desc["queue_length"] = {light: rng.uniform(0, 40), heavy: rng.uniform(0, 40)}
        desc["model_arrival_qps"] = {light: rng.uniform(0.1, 10), heavy: rng.uniform(0.1, 5)}
    if rng.random() < 0.6:
        desc["current"] = ({n: rng.randint(0, max(1, gpus // 2)) for n in names},
                           {m[0]: rng.choice(sorted(m[1])) for m in models})
    return desc


def build_instance(pkg, desc: dict):
    """The :class:`Instance` of a :func:`random_description` with the types of ``pkg``."""
    def curve_pair(c):
        return pkg.DeferralCurve(*c[0]), pkg.QualityCurve(*c[1])
    f, q = curve_pair(desc["curves"])
    current = None if desc["current"] is None else pkg.Allocation(workers=desc["current"][0], batch_size=desc["current"][1])
    return pkg.Instance(
        models=tuple(pkg.ModelProfile(n, lat, r) for n, lat, r in desc["models"]), demand_qps=desc["demand_qps"],
        slo_ms=desc["slo_ms"], num_workers=desc["gpus"], deferral=f, quality=q, current=current,
        queue_delay_ms=desc["queue_delay_ms"], queue_length=desc["queue_length"],
        model_arrival_qps=desc["model_arrival_qps"], pair_curves={p: curve_pair(c) for p, c in desc["pair_curves"].items()},
    )


def _timed_plan(policy, inst):
    c0, w0 = time.thread_time(), time.perf_counter()
    plan = policy.plan(inst)
    return plan, (time.thread_time() - c0) * 1000.0, (time.perf_counter() - w0) * 1000.0


class Comparison:
    """Plans of this checkout and the baseline side by side: differences and CPU/wall times."""

    def __init__(self) -> None:
        self.count, self.differences = 0, []
        self.times: dict[str, dict[str, list[float]]] = {}
        self.statuses: dict[str, dict[str, int]] = {}  # per case, this checkout's plan statuses

    def solve(self, key: str, label: str, ours_policy, base_policy, ours_inst, base_inst):
        """Both plans (timed, in alternating order); records any difference but the solve time."""
        runs = [("ours", ours_policy, ours_inst), ("base", base_policy, base_inst)]
        if self.count % 2:
            runs.reverse()
        plans = {}
        for side, policy, inst in runs:
            plans[side], cpu_ms, wall_ms = _timed_plan(policy, inst)
            t = self.times.setdefault(key, {})
            t.setdefault(f"{side}_cpu", []).append(cpu_ms)
            t.setdefault(f"{side}_wall", []).append(wall_ms)
        self.count += 1
        st = self.statuses.setdefault(key, {})
        st[plans["ours"].status] = st.get(plans["ours"].status, 0) + 1
        ours, base = (dataclasses.asdict(plans[s]) for s in ("ours", "base"))
        # A field the baseline's Plan lacks (e.g. router_share) is compared with its default.
        defaults = {f.name: f.default for f in dataclasses.fields(planner.Plan) if f.default is not dataclasses.MISSING}
        diff = {k: [base.get(k), ours[k]] for k in ours if k != "solve_time_ms" and ours[k] != base.get(k, defaults.get(k))}
        if diff:
            self.differences.append({"case": label, "status (baseline, this)": [plans["base"].status, plans["ours"].status],
                                     "fields (baseline, this)": diff})
        return plans["ours"], plans["base"]

    def summary(self) -> list[dict]:
        rows = []
        for key, t in self.times.items():
            row = {"case": key, "plans": len(t["ours_cpu"]), "statuses": self.statuses[key]}
            for clock, (q, p) in itertools.product(("cpu", "wall"), (("p50", 50), ("p95", 95))):
                base_ms, ours_ms = (pct(t[f"{side}_{clock}"], p) for side in ("base", "ours"))
                row.update({f"base_{clock}_ms_{q}": base_ms, f"ours_{clock}_ms_{q}": ours_ms,
                            f"ratio_{clock}_{q}": ours_ms / max(base_ms, 1e-9)})
            rows.append(row)
        return rows


def compare_with_baseline(base, gpus_list: list[int], windows: int, seed: int, n_random: int) -> Comparison:
    """Solve the timing cells' windows and ``n_random`` random instances with both packages."""
    cmp = Comparison()
    for pkg, pol in itertools.product((planner, base), ("diffserve", "quality")):  # warm-up, not timed
        pkg.make_policy(pol).plan(cell_instance(pkg, cascade(2, pkg), 16, (8.0, 0.0, 0.0), None))
    cells = [(p, v, g) for p, v in (("diffserve", 2), ("quality", 2), ("quality", 4)) for g in gpus_list]
    for pol, v, g in tqdm(cells, desc="timing cells, both", unit="cell"):
        data_o, data_b = cascade(v, planner), cascade(v, base)
        pol_o, pol_b = make_policy(pol), base.make_policy(pol)
        cur_o = cur_b = None
        for i, draw in enumerate(window_draws(v, g, windows, seed)):
            po, pb = cmp.solve(f"{pol}, {v} variants, {g} GPUs", f"{pol} {v}v {g} GPUs window {i}", pol_o, pol_b,
                               cell_instance(planner, data_o, g, draw, cur_o), cell_instance(base, data_b, g, draw, cur_b))
            cur_o, cur_b = po.as_allocation(), pb.as_allocation()
    for i in tqdm(range(n_random), desc="random instances, both", unit="instance"):
        desc = random_description(random.Random(seed * 7919 + i))
        for pol, kw in COMPARE_CASES:
            kw = kw(desc) if callable(kw) else kw
            cmp.solve("random instances, every policy", f"{pol} random {i} {kw}", make_policy(pol, **kw),
                      base.make_policy(pol, **kw), build_instance(planner, desc), build_instance(base, desc))
    return cmp


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


def run_baseline(args, argv) -> int:
    """``--baseline``: same plans as the baseline checkout? Time ratio this / baseline."""
    if any(g < 1 for g in args.gpus) or args.windows < 2 or args.random < 0:
        raise SystemExit(f"--gpus {args.gpus}, --windows {args.windows}, --random {args.random}: "
                         "expected GPUs >= 1, windows >= 2, random >= 0")
    base = load_baseline_planner(args.baseline.resolve())
    load_before, cmp = os.getloadavg(), compare_with_baseline(base, args.gpus, args.windows, args.seed, args.random)
    load_after = os.getloadavg()
    rows, out = cmp.summary(), args.out or OUT_DIR / "baseline_compare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "benchmarks/bench_planner.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "baseline": str(args.baseline), "plans_compared": cmp.count, "plans_differing": len(cmp.differences),
        "differing_by_policy_and_status": dict(collections.Counter(
            f"{d['case'].split()[0]}: {'/'.join(d['status (baseline, this)'])}" for d in cmp.differences)),
        "loadavg_before": load_before, "loadavg_after": load_after, "cpus": os.cpu_count(),
    }
    doc = {"meta": meta, "rows": rows, "differences (first 40)": cmp.differences[:40]}
    out.write_text(json.dumps(doc, indent=2, default=str))
    print("| case | plans | CPU p50 base / this ms | ratio | CPU p95 base / this ms | ratio | wall p95 ratio | statuses (this) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        st = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
        print(f"| {r['case']} | {r['plans']} | {r['base_cpu_ms_p50']:.1f} / {r['ours_cpu_ms_p50']:.1f} | "
              f"{r['ratio_cpu_p50']:.2f} | {r['base_cpu_ms_p95']:.1f} / {r['ours_cpu_ms_p95']:.1f} | "
              f"{r['ratio_cpu_p95']:.2f} | {r['ratio_wall_p95']:.2f} | {st} |")
    print(f"\n{cmp.count} plan pairs compared, {len(cmp.differences)} differ (all fields but solve_time_ms): "
          f"{meta['differing_by_policy_and_status']}")
    for d in cmp.differences[:10]:
        print(f"  {d['case']}: {d['fields (baseline, this)']}")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}; {os.cpu_count()} CPUs; JSON: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--windows", type=int, default=40, help="plans per cell (consecutive windows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solver-sweep", action="store_true", help="compare CP-SAT settings (quality, 4 variants)")
    ap.add_argument("--decisions", action="store_true", help="print every policy's plan on the paper's cascade (15 GPUs)")
    ap.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                    help="compare plans and solve time with the planner package of the checkout at DIR")
    ap.add_argument("--random", type=int, default=300, help="--baseline: random instances (every policy on each)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default under benchmarks/results/planner/)")
    ap.add_argument("--hybrid", action="store_true", help="hybrid vs quality on the HADIS cascade (bench_planner_hybrid.py)")
    args = ap.parse_args(argv)
    if args.baseline is not None:
        return run_baseline(args, argv)
    if args.hybrid:
        from benchmarks.bench_planner_hybrid import main as hybrid_main  # noqa: PLC0415
        return hybrid_main(args, window_draws, pct, args.out or OUT_DIR / "hybrid_solve_time.json")
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
