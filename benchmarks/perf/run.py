"""Run perf_analyzer against the ``cascade`` model: concurrency and request-rate modes.

    python -m benchmarks.perf.run                         # starts a server on model_repository
    python -m benchmarks.perf.run --url 127.0.0.1:8001    # uses a running server (make serve)

Each mode writes, under ``runs/perf/<UTC time>/``: perf_analyzer's CSV (``-f``), its JSON
profile export (``--profile-export-file``) and its console output; ``summary.json`` holds the
parsed CSV rows. Measurement windows are short (``--measurement-interval-ms``, default 3000 ms,
at most ``--max-trials`` windows per load level, windows accepted as stable within 100 % of each
other because the CPU is shared) so a run takes a minute or two on 2 CPU cores: these are
smoke-level numbers, not a tuned benchmark.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.server import PROJECT_ROOT, TritonServer, TritonServerConfig, server_env

INPUT_DATA = Path(__file__).with_name("prompts.json")
CASCADE_MODELS = ("light", "heavy", "discriminator", "cascade")


def perf_analyzer_bin() -> Path:
    """perf_analyzer from the tritonclient wheel in this venv."""
    path = Path(sys.executable).parent / "perf_analyzer"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; run `make setup` (tritonclient[all] ships it)")
    return path


def perf_command(url: str, mode: str, load_range: str, out_prefix: Path, input_data: Path = INPUT_DATA,
                 model: str = "cascade", measurement_interval_ms: int = 3000, max_trials: int = 3,
                 stability_percent: float = 100.0) -> list[str]:
    """The perf_analyzer command line for ``mode`` ``concurrency`` or ``request-rate``.

    ``load_range`` is perf_analyzer's ``start:end:step`` (concurrent requests, or requests/s).
    """
    if mode not in ("concurrency", "request-rate"):
        raise ValueError(f"mode={mode!r}; expected 'concurrency' or 'request-rate'")
    return [
        str(perf_analyzer_bin()), "-m", model, "-u", url, "-i", "grpc", "-b", "1",
        "--input-data", str(input_data), f"--{mode}-range", load_range,
        "--measurement-interval", str(measurement_interval_ms), "--max-trials", str(max_trials),
        "--stability-percentage", str(stability_percent),
        "-f", str(out_prefix.with_suffix(".csv")), "--profile-export-file", str(out_prefix.with_suffix(".json")),
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    """perf_analyzer's CSV as rows of column -> value."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_mode(url: str, mode: str, load_range: str, out_dir: Path, timeout_s: float = 300.0, **kw) -> dict:
    """Run one perf_analyzer mode; returns {mode, command, returncode, rows}. Raises on failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / mode
    cmd = perf_command(url, mode, load_range, prefix, **kw)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=server_env(), capture_output=True, text=True, timeout=timeout_s)
    (out_dir / f"{mode}.txt").write_text(f"$ {' '.join(cmd)}\n\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"perf_analyzer {mode} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    # perf_analyzer exits 0 even when the last load level never stabilised; it then has no row.
    unstable = re.findall(r"Failed to obtain stable measurement within \d+ measurement windows for (.+?)\.", proc.stdout)
    return {"mode": mode, "range": load_range, "command": cmd, "wall_s": round(time.perf_counter() - t0, 1),
            "rows": read_csv(prefix.with_suffix(".csv")), "unstable": unstable}


def print_summary(results: list[dict]) -> None:
    """One line per load level: throughput and latency percentiles (perf_analyzer reports us)."""
    print(f"{'mode':<13} {'load':>7} {'infer/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for res in results:
        key = "Concurrency" if res["mode"] == "concurrency" else "Request Rate"
        for row in sorted(res["rows"], key=lambda r: float(r.get(key, 0) or 0)):  # perf_analyzer sorts by throughput
            ms = {p: float(row.get(f"p{p} latency", "nan")) / 1000.0 for p in (50, 90, 99)}
            print(f"{res['mode']:<13} {row.get(key, '?'):>7} {float(row['Inferences/Second']):>8.2f} "
                  f"{ms[50]:>8.1f} {ms[90]:>8.1f} {ms[99]:>8.1f}")
        for level in res.get("unstable", []):
            print(f"{res['mode']:<13} {level}: no stable measurement (not reported; longer windows needed)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.perf.run", description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=None, help="gRPC host:port of a running server (default: start one)")
    ap.add_argument("--model-repository", default=str(PROJECT_ROOT / "model_repository"))
    ap.add_argument("--out", default=None, help="output folder (default runs/perf/<UTC time>)")
    ap.add_argument("--concurrency-range", default="1:4:1")
    ap.add_argument("--request-rate-range", default="1:4:1.5", help="requests per second start:end:step")
    ap.add_argument("--measurement-interval-ms", type=int, default=3000)
    ap.add_argument("--max-trials", type=int, default=4)
    args = ap.parse_args(argv)
    out = Path(args.out or PROJECT_ROOT / "runs" / "perf" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    kw = {"measurement_interval_ms": args.measurement_interval_ms, "max_trials": args.max_trials}
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            server = stack.enter_context(TritonServer(TritonServerConfig(
                model_repository=args.model_repository, load_models=CASCADE_MODELS, log_path=out / "tritonserver.log")))
            url = server.grpc_url
            print(f"started tritonserver ({url}), log {out / 'tritonserver.log'}")
        results = []
        for mode, rng in (("concurrency", args.concurrency_range), ("request-rate", args.request_rate_range)):
            print(f"perf_analyzer {mode} {rng} ...", flush=True)
            results.append(run_mode(url, mode, rng, out, **kw))
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    print_summary(results)
    print(f"perf_analyzer output in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
