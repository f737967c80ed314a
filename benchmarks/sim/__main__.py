"""``python -m benchmarks.sim``: the simulator's experiments on any cascade (paper comparison,
trace sweep, scale run, load sweep, overload, and the simulator against the committed live run).

    .venv/bin/python -m benchmarks.sim --out benchmarks/results/sim               # everything (make bench-sim)
    .venv/bin/python -m benchmarks.sim --only paper --trace maf_4to32qps          # one part
    .venv/bin/python -m benchmarks.sim --only paper --cascade profiles/tiny --workers 2 --trace maf_2to16qps
    .venv/bin/python -m benchmarks.sim --only hybrid                              # HADIS data, 4 variants, router
    .venv/bin/python -m benchmarks.sim --only overload                            # x12-x16 load, 5 seeds

``--cascade`` takes a directory with a ``cascade.json`` manifest or a ``profiles/<cascade>/``
directory (docs/simulator.md says how to describe a new cascade).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from benchmarks.sim import report
from benchmarks.sim.experiment import DEFAULT_CASCADE, PAPER_POLICIES, STATIC_KEYS, RunConfig
from benchmarks.sim.load import LOAD_FACTORS, load_sweep
from benchmarks.sim.overload import OVERLOAD_FACTORS, OVERLOAD_SEEDS, overload_experiment
from benchmarks.sim.paper import PAPER_WORKERS, paper_comparison, scale_run, trace_sweep
from benchmarks.sim.trace import PROMPT_ID_MODES

PARTS = ("paper", "sweep", "scale", "load", "overload", "live", "hybrid")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=report.REPO / "benchmarks" / "results" / "sim")
    ap.add_argument("--only", choices=PARTS, action="append", help="run only these parts (repeatable); default: all")
    ap.add_argument("--cascade", default=str(DEFAULT_CASCADE),
                    help="cascade directory: a cascade.json manifest, or profiles/<cascade>/ (default: the paper's data)")
    ap.add_argument("--device", default=None, help="which <device>.json of a profiles directory (default: the only one)")
    ap.add_argument("--slo-ms", type=float, default=None, help="default: the cascade's (configs/<name>.yaml for profiles/)")
    ap.add_argument("--workers", type=int, default=PAPER_WORKERS, help="GPUs holding models (paper: 15 of 16)")
    ap.add_argument("--trace", default="maf_4to32qps", help="trace file (arrival_ms,prompt_id lines) or a trace name")
    ap.add_argument("--prompt-ids", choices=PROMPT_ID_MODES, default="auto",
                    help="trace prompt ids without a confidence: wrap onto the known prompts (auto: only then)")
    ap.add_argument("--policies", default=",".join(PAPER_POLICIES))
    ap.add_argument("--scale-policies", default="diffserve,quality")
    ap.add_argument("--load-factors", default=",".join(f"{f:g}" for f in LOAD_FACTORS),
                    help="arrival-rate factors of the load experiment")
    ap.add_argument("--overload-factors", default=",".join(f"{f:g}" for f in OVERLOAD_FACTORS),
                    help="arrival-rate factors of the overload experiment")
    ap.add_argument("--overload-seeds", default=",".join(map(str, OVERLOAD_SEEDS)),
                    help="seeds of the overload experiment (each places the trace copies anew)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-load-s", type=float, default=RunConfig.model_load_s)
    ap.add_argument("--window-s", type=float, default=RunConfig.window_s)
    ap.add_argument("--overprovision", type=float, default=RunConfig.overprovision,
                    help="demand estimate = EWMA x this, for every policy (the paper's 1.2)")
    ap.add_argument("--latency-factor", type=float, default=1.0, help="every profiled latency x this")
    for key in STATIC_KEYS:
        ap.add_argument(f"--static-{key.replace('_', '-')}", type=float if key == "threshold" else int, default=None,
                        help=f"DiffServe-Static's {key} (default: the paper's; GPUs scaled to the cluster keeping the ratio)")
    ap.add_argument("--live-run", type=Path, default=None, help="the live run to compare with (part 'live'; default: "
                    "the newest under benchmarks/results/live with every policy)")
    return ap


def config_from(args: argparse.Namespace) -> RunConfig:
    static = tuple((k, getattr(args, f"static_{k}")) for k in STATIC_KEYS if getattr(args, f"static_{k}") is not None)
    return RunConfig(cascade=args.cascade, device=args.device, trace=args.trace, num_workers=args.workers,
                     slo_ms=args.slo_ms, seed=args.seed, model_load_s=args.model_load_s, window_s=args.window_s,
                     overprovision=args.overprovision, prompt_ids=args.prompt_ids, static=static,
                     latency_factor=args.latency_factor)


def run_parts(args: argparse.Namespace, base: RunConfig, command: str) -> None:
    policies = [p for p in args.policies.split(",") if p]
    parts = args.only or [p for p in PARTS if p != "hybrid"]  # hybrid: its own data and setting, asked by name
    if "paper" in parts:
        paper_comparison(args.out / "paper", base, policies, command)
        print((args.out / "paper" / "table.md").read_text())
    if "sweep" in parts:
        trace_sweep(args.out / "sweep", base, policies, command)
        print((args.out / "sweep" / "table.md").read_text())
    if "scale" in parts:
        scale_run(args.out / "scale", base, [p for p in args.scale_policies.split(",") if p], command)
        print((args.out / "scale" / "table.md").read_text())
    if "load" in parts:
        load_sweep(args.out / "load", base, policies, [float(x) for x in args.load_factors.split(",") if x], command)
        print((args.out / "load" / "table.md").read_text())
    if "overload" in parts:
        overload_experiment(args.out / "overload", base, [float(x) for x in args.overload_factors.split(",") if x],
                            [int(x) for x in args.overload_seeds.split(",") if x], command)
        print((args.out / "overload" / "table.md").read_text())
    if "live" in parts:
        from benchmarks.sim.live import live_vs_sim  # noqa: PLC0415

        live_vs_sim(args.out, args.live_run, base, command)
        print((args.out / "live_vs_sim.md").read_text())
    if "hybrid" in parts:
        from benchmarks.sim.hybrid_report import run_hybrid  # noqa: PLC0415

        run_hybrid(args.out, args.seed, args.window_s, args.model_load_s, args.overprovision, args.latency_factor, command)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = "python -m benchmarks.sim " + " ".join(argv if argv is not None else sys.argv[1:])
    try:  # bad input (a cascade folder, a trace, a flag) is one line naming it, not a traceback
        run_parts(args, config_from(args), command)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"python -m benchmarks.sim: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
