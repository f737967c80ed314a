"""Command line of the export tool (``python -m export ...``; ``make export|profile|calibrate``).

    python -m export export    --cascade configs/tiny.yaml [--repo model_repository] [--force] [--no-verify]
                               [--gpu-engines auto|on|off] [--cpu-aot]
    python -m export status    --cascade configs/tiny.yaml
    python -m export profile   --cascade configs/tiny.yaml [--batch-sizes 1,2,4,8,16,32]
    python -m export calibrate --cascade configs/tiny.yaml [--count 256]

Exit status: 0 on success, 1 on a verification failure or refused (stale) repository, 2 on a
bad config or missing weights (the message names the file and what to do).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from serving.config import PROJECT_ROOT, ConfigError, load_cascade

DEFAULT_REPO = PROJECT_ROOT / "model_repository"


def _quiet_libraries() -> None:
    """Silence diffusers/transformers chatter (truncation warnings of the verification prompts, ...)."""
    try:
        import diffusers  # noqa: PLC0415
        import transformers  # noqa: PLC0415

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def cmd_export(args) -> int:
    from export.build import STAGES, ExportOptions, VerificationFailed, export_cascade  # noqa: PLC0415
    from export.verify import format_table  # noqa: PLC0415

    _quiet_libraries()
    cascade = load_cascade(args.cascade)
    stages = tuple(args.stage) if args.stage else STAGES
    opts = ExportOptions(verify=not args.no_verify, force=args.force, gpu_engines=args.gpu_engines,
                         cpu_aot=args.cpu_aot, stages=stages)
    print(f"exporting cascade {cascade.name!r} from {cascade.source} (hash {cascade.config_hash}) into {args.repo}")
    try:
        results = export_cascade(cascade, args.repo, opts)
    except VerificationFailed as exc:
        print(f"VERIFICATION FAILED: {exc}", file=sys.stderr)
        return 1
    summary = Path(args.repo) / "verification.json"
    summary.write_text(json.dumps({"cascade": cascade.name, "config_hash": cascade.config_hash, "stages": results},
                                  indent=2))
    print(format_table(results))
    print(f"verification written to {summary} and <stage>/1/artifacts/verification.json")
    return 0


def cmd_status(args) -> int:
    from export.build import repository_status  # noqa: PLC0415

    cascade = load_cascade(args.cascade)
    status = repository_status(cascade, args.repo)
    for stage, s in status.items():
        print(f"{stage:14s} {s}")
    return 0 if all(s == "up-to-date" for s in status.values()) else 1


def _require_fresh(cascade, repo) -> None:
    from export.build import repository_status  # noqa: PLC0415

    bad = {k: v for k, v in repository_status(cascade, repo).items() if v != "up-to-date"}
    if bad:
        raise ConfigError(f"repository {repo} is not exported from {cascade.source} (hash {cascade.config_hash}): "
                          f"{bad}; run `make export CASCADE={cascade.source}` first")


def cmd_profile(args) -> int:
    from export.profile import profile_cascade  # noqa: PLC0415

    cascade = load_cascade(args.cascade)
    _require_fresh(cascade, args.repo)
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    try:
        path = profile_cascade(cascade, args.repo, batch_sizes=sizes, repeats=args.repeats, out_dir=args.out_dir,
                               threads=args.threads, cpu_slots=args.cpu_slots)
    except ValueError as exc:  # a bad --threads / --cpu-slots / $DIFFSERVE_ORT_THREADS
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = json.loads(path.read_text())
    print(f"device {doc['device']}, {doc['ort_threads']} intra-op threads per stage, median of {doc['repeats']} runs, "
          f"ms per batch:")
    print(f"{'batch':>5}  {'light stage':>11}  {'discriminator':>13}  {'heavy stage':>11}  {'light model':>11}")
    for b in map(str, sizes):
        cell = lambda s: f"{doc['stages'][s]['latency_ms'][b]['median']:.1f}" if b in doc['stages'][s]['latency_ms'] else "-"  # noqa: E731
        light = doc["batch_latency_ms"]["light"].get(b)
        print(f"{b:>5}  {cell('light'):>11}  {cell('discriminator'):>13}  {cell('heavy'):>11}  "
              f"{(f'{light:.1f}' if light else '-'):>11}")
    print(f"profile written to {path}")
    return 0


def cmd_calibrate(args) -> int:
    from export.calibrate import calibrate_cascade  # noqa: PLC0415

    cascade = load_cascade(args.cascade)
    _require_fresh(cascade, args.repo)
    paths = calibrate_cascade(cascade, args.repo, count=args.count, out_dir=args.out_dir)
    for p in paths:
        print(f"written {p}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cascade", default="configs/tiny.yaml", help="cascade config YAML")
    common.add_argument("--repo", default=str(DEFAULT_REPO), help="Triton model repository to fill")
    e = sub.add_parser("export", parents=[common], help="export, verify and render the model repository")
    e.add_argument("--force", action="store_true", help="re-export stages that are up to date")
    e.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    e.add_argument("--stage", action="append", choices=("discriminator", "light", "heavy"), help="only these stages")
    e.add_argument("--gpu-engines", choices=("auto", "on", "off"), default="auto",
                   help="build fp16 TensorRT/AOT engines ahead of time (auto: when a CUDA GPU is visible)")
    e.add_argument("--cpu-aot", action="store_true",
                   help="also build float32 AOTInductor packages for the CPU (g++; ~20 s per graph), which "
                        "`backend: auto` then serves on machines without a GPU (default: ONNX Runtime only)")
    sub.add_parser("status", parents=[common], help="is the repository exported from this config?")
    p = sub.add_parser("profile", parents=[common], help="latency per batch size of every stage on this device")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out-dir", default=None, help="default: profiles/<cascade>")
    p.add_argument("--cpu-slots", type=int, default=int(os.environ.get("CPU_SLOTS", "2")),
                   help="on a CPU: time each stage at one slot's share of the cores, cores // this "
                        "(the orchestrator's rule; default $CPU_SLOTS or 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads instead (default: $DIFFSERVE_ORT_THREADS, else the CPU-slot share; "
                        "0 on a GPU)")
    c = sub.add_parser("calibrate", parents=[common], help="deferral curve f(t) and quality curve")
    c.add_argument("--count", type=int, default=None, help="held-apart prompts (default: the config's)")
    c.add_argument("--out-dir", default=None, help="default: profiles/<cascade>")
    args = ap.parse_args(argv)
    try:
        return {"export": cmd_export, "status": cmd_status, "profile": cmd_profile, "calibrate": cmd_calibrate}[args.cmd](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
