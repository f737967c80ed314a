"""``python -m benchmarks.sim``: the simulator's experiments (paper comparison, trace sweep, scale run, load sweep).

    .venv/bin/python -m benchmarks.sim --out benchmarks/results/sim          # all four
    .venv/bin/python -m benchmarks.sim --only paper --trace maf_4to32qps     # one part
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from benchmarks.sim import report
from benchmarks.sim.experiment import PAPER_POLICIES, RunConfig, paper_comparison, scale_run, trace_sweep
from benchmarks.sim.load import load_sweep


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=report.REPO / "benchmarks" / "results" / "sim")
    ap.add_argument("--only", choices=("paper", "sweep", "scale", "load"), action="append",
                    help="run only these parts (repeatable); default: all")
    ap.add_argument("--trace", default="maf_4to32qps", help="trace of the paper comparison")
    ap.add_argument("--policies", default=",".join(PAPER_POLICIES))
    ap.add_argument("--scale-policies", default="diffserve,quality")
    ap.add_argument("--load-factors", default="1,1.5,2,3,4", help="arrival-rate factors of the load experiment")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-load-s", type=float, default=RunConfig.model_load_s)
    ap.add_argument("--overprovision", type=float, default=RunConfig.overprovision,
                    help="demand estimate = EWMA x this, for every policy (the paper's 1.2)")
    args = ap.parse_args(argv)
    command = "python -m benchmarks.sim " + " ".join(argv if argv is not None else sys.argv[1:])
    policies = [p for p in args.policies.split(",") if p]
    base = RunConfig(trace=args.trace, seed=args.seed, model_load_s=args.model_load_s, overprovision=args.overprovision)
    parts = args.only or ["paper", "sweep", "scale", "load"]
    if "paper" in parts:
        doc = paper_comparison(args.out / "paper", base, policies, command)
        print((args.out / "paper" / "table.md").read_text())
        del doc
    if "sweep" in parts:
        trace_sweep(args.out / "sweep", base, policies, command)
        print((args.out / "sweep" / "table.md").read_text())
    if "scale" in parts:
        scale_run(args.out / "scale", base, [p for p in args.scale_policies.split(",") if p], command)
        print((args.out / "scale" / "table.md").read_text())
    if "load" in parts:
        load_sweep(args.out / "load", base, policies, [float(x) for x in args.load_factors.split(",") if x], command)
        print((args.out / "load" / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
