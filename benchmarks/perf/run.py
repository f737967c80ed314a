"""Run perf_analyzer against the ``cascade`` model: concurrency and request-rate modes.

    python -m benchmarks.perf.run                         # starts a server on model_repository
    python -m benchmarks.perf.run --url 127.0.0.1:8001    # uses a running server (make serve)

Against a running server the admin key (``$DIFFSERVE_ADMIN_KEY``, else ``runs/server/admin_key``)
is sent with every call (``-H``): perf_analyzer reads the model config and the statistics, which
``make serve`` restricts to the key holder.

Each mode writes, under ``runs/perf/<UTC time>/``: perf_analyzer's CSV (``-f``), its JSON
profile export (``--profile-export-file``) and its console output; ``summary.json`` holds the
parsed CSV rows. By default every load level measures exactly ``--request-count`` (20)
requests: the cascade's latency is bimodal (light-served ms, heavy-served ~1 s on CPU), so
perf_analyzer's window-stability search rarely converges with short windows.
``--request-count 0`` uses that search instead (``--measurement-interval-ms`` windows, at most
``--max-trials`` per level, accepted within 100 % of each other). A run takes a minute or two
on 2 CPU cores: smoke-level numbers, not a tuned benchmark.
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

from orchestrator.server import (
    PROJECT_ROOT,
    TritonServer,
    TritonServerConfig,
    admin_headers,
    read_admin_key,
    server_env,
)

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
                 stability_percent: float = 100.0, request_count: int = 0,
                 admin_key: str | None = None) -> list[str]:
    """The perf_analyzer command line for ``mode`` ``concurrency`` or ``request-rate``.

    ``load_range`` is perf_analyzer's ``start:end:step`` (concurrent requests, or requests/s).
    ``request_count`` > 0: measure exactly that many requests per load level (one window, no
    stability search), for models whose latency mix (light ms vs heavy s) never stabilises.
    ``admin_key`` (``header:value``): sent as gRPC metadata with every call perf_analyzer makes.
    """
    if mode not in ("concurrency", "request-rate"):
        raise ValueError(f"mode={mode!r}; expected 'concurrency' or 'request-rate'")
    return [
        str(perf_analyzer_bin()), "-m", model, "-u", url, "-i", "grpc", "-b", "1",
        "--input-data", str(input_data), f"--{mode}-range", load_range,
        "--measurement-interval", str(measurement_interval_ms), "--max-trials", str(max_trials),
        "--stability-percentage", str(stability_percent),
        "-f", str(out_prefix.with_suffix(".csv")), "--profile-export-file", str(out_prefix.with_suffix(".json")),
    ] + (["--request-count", str(request_count)] if request_count > 0 else []) + [
        arg for name, value in admin_headers(admin_key).items() for arg in ("-H", f"{name}:{value}")]


def read_csv(path: Path) -> list[dict[str, str]]:
    """perf_analyzer's CSV as rows of column -> value."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_levels(load_range: str) -> list[str]:
    """The values of a perf_analyzer ``start:end:step`` range, e.g. ``"1:3:1"`` -> ``["1", "2", "3"]``."""
    parts = [float(x) for x in load_range.split(":")]
    start = parts[0]
    end = parts[1] if len(parts) > 1 else start
    step = parts[2] if len(parts) > 2 else 1.0
    if step <= 0 or end < start:
        raise ValueError(f"load range {load_range!r}; expected start:end:step with step > 0 and end >= start")
    out, v = [], start
    while v <= end + 1e-9:
        out.append(f"{v:g}")
        v += step
    return out


def redacted(cmd: list[str], admin_key: str | None) -> list[str]:
    """``cmd`` with the admin key's value replaced, for the files a run leaves behind."""
    if not admin_key:
        return list(cmd)
    value = admin_key.partition(":")[2]
    return [arg.replace(value, "<admin-key>") for arg in cmd]


def _run_one(cmd: list[str], prefix: Path, timeout_s: float, admin_key: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=server_env(), capture_output=True, text=True, timeout=timeout_s)
    prefix.with_suffix(".txt").write_text(f"$ {' '.join(redacted(cmd, admin_key))}\n\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"perf_analyzer exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def run_mode(url: str, mode: str, load_range: str, out_dir: Path, timeout_s: float = 300.0,
             request_count: int = 0, **kw) -> dict:
    """Run one perf_analyzer mode; returns {mode, range, commands, rows, unstable}. Raises on failure.

    With ``request_count`` > 0 each load level is its own perf_analyzer run of exactly that many
    requests (perf_analyzer allows a request count with one level per run only), files
    ``<mode>-<level>.csv/.json/.txt``; otherwise one run searches every level for stability.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = ([(f"{v}:{v}:1", out_dir / f"{mode}-{v}") for v in load_levels(load_range)] if request_count > 0
            else [(load_range, out_dir / mode)])
    rows: list[dict[str, str]] = []
    commands, unstable = [], []
    for rng, prefix in runs:
        cmd = perf_command(url, mode, rng, prefix, request_count=request_count, **kw)
        proc = _run_one(cmd, prefix, timeout_s, kw.get("admin_key"))
        commands.append(redacted(cmd, kw.get("admin_key")))
        rows += read_csv(prefix.with_suffix(".csv"))
        # perf_analyzer exits 0 even when the last load level never stabilised; it then has no row.
        unstable += re.findall(r"Failed to obtain stable measurement within \d+ measurement windows for (.+?)\.",
                               proc.stdout)
    return {"mode": mode, "range": load_range, "request_count": request_count, "commands": commands,
            "wall_s": round(time.perf_counter() - t0, 1), "rows": rows, "unstable": unstable}


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
    ap.add_argument("--concurrency-range", default="1:3:1")
    ap.add_argument("--request-rate-range", default="1:3:1", help="requests per second start:end:step")
    ap.add_argument("--request-count", type=int, default=20,
                    help="requests measured per load level (0: perf_analyzer's stability search over windows)")
    ap.add_argument("--measurement-interval-ms", type=int, default=5000)
    ap.add_argument("--max-trials", type=int, default=4)
    ap.add_argument("--admin-key", default=None,
                    help="'header:value' for a --url server (default: $DIFFSERVE_ADMIN_KEY, else runs/server/admin_key)")
    args = ap.parse_args(argv)
    out = Path(args.out or PROJECT_ROOT / "runs" / "perf" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    kw = {"measurement_interval_ms": args.measurement_interval_ms, "max_trials": args.max_trials,
          "request_count": args.request_count}
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            server = stack.enter_context(TritonServer(TritonServerConfig(
                model_repository=args.model_repository, load_models=CASCADE_MODELS, log_path=out / "tritonserver.log")))
            url = server.grpc_url
            print(f"started tritonserver ({url}), log {out / 'tritonserver.log'}")
        else:
            kw["admin_key"] = args.admin_key or read_admin_key()
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
