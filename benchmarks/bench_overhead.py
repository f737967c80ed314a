"""Serving overhead: the cascade through Triton vs the same pipeline called in-process.

    python -m benchmarks.bench_overhead                  # the exported cascade in model_repository/
    python -m benchmarks.bench_overhead --tiny-random    # a tiny random-weight cascade exported here

Batch 1, CPU. For each prompt (interleaved, order alternating, so that background load on the
shared cores hits both sides alike) it times:

* ``triton``: one gRPC request to ``cascade`` (client round trip: gRPC, the cascade BLS, the
  light / discriminator / heavy stage models);
* ``in_process``: ``serving`` called directly: ``light.generate`` ->
  ``discriminator.confidence`` -> ``heavy.generate`` when confidence < threshold.

Both sides make the same routing decisions (checked). It prints the median latencies and the
overhead ratio median(triton) / median(in_process) (target <= 1.05), and writes
``runs/bench_overhead/result.json``. The model repository is copied under
``runs/bench_overhead/`` so that the benchmark's control file (threshold) is its own.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from orchestrator.server import PROJECT_ROOT, TritonServer, TritonServerConfig

OUT = PROJECT_ROOT / "runs" / "bench_overhead"
MODELS = ("light", "heavy", "discriminator", "cascade")


def prepare_repository(source: Path | None, dest: Path, control_file: Path, ort_threads: int = 0,
                       stage_queue_delay_us: int | None = None) -> Path:
    """Copy an exported repository (or export a tiny random cascade when ``source`` is None) to
    ``dest``, add the cascade model, point every model's control file at ``control_file``, set
    the stages' ONNX Runtime thread count (0 = ORT's default) and, when given, the stages'
    dynamic-batching window ``max_queue_delay_microseconds``."""
    import re  # noqa: PLC0415

    if dest.exists():
        shutil.rmtree(dest)
    if source is None:
        from export.testing import export_tiny_cascade  # noqa: PLC0415 - imports torch/diffusers

        _, source = export_tiny_cascade(dest.parent / "tiny-random")
    missing = [m for m in MODELS[:3] if not (source / m / "1" / "artifacts" / "stage.json").exists()]
    if missing:
        raise SystemExit(f"{source}: {missing} not exported; run `make export` first (or use --tiny-random)")
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.tmp", "*.old"))
    shutil.copytree(PROJECT_ROOT / "model_repository" / "cascade", dest / "cascade", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for stage in MODELS[:3]:  # `python -m export export --repo elsewhere` writes no thin model.py files
        if not (dest / stage / "1" / "model.py").exists():
            shutil.copy(PROJECT_ROOT / "model_repository" / stage / "1" / "model.py", dest / stage / "1" / "model.py")
    for cfg in dest.glob("*/config.pbtxt"):
        text = re.sub(r'(key: "control_file" value: \{ string_value: )"[^"]*"', rf'\1"{control_file}"', cfg.read_text())
        text = re.sub(r'(key: "ort_threads" value: \{ string_value: )"[^"]*"', rf'\1"{ort_threads}"', text)
        if stage_queue_delay_us is not None and cfg.parent.name != "cascade":
            text = re.sub(r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {stage_queue_delay_us}", text)
        cfg.write_text(text)
    return dest


def scrape(metrics_url: str) -> dict[tuple[str, str], float]:
    """Triton's per-model counters: {(metric, model): value} for request/queue/compute durations."""
    import urllib.request  # noqa: PLC0415

    wanted = ("nv_inference_request_success", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
              "nv_inference_compute_infer_duration_us")
    out: dict[tuple[str, str], float] = {}
    with urllib.request.urlopen(metrics_url, timeout=10) as r:  # noqa: S310 - local URL
        for line in r.read().decode().splitlines():
            name = line.split("{", 1)[0]
            if name in wanted and 'model="' in line:
                model = line.split('model="', 1)[1].split('"', 1)[0]
                out[(name, model)] = float(line.rsplit(" ", 1)[1])
    return out


def breakdown_ms(before: dict, after: dict, n_requests: int) -> dict[str, dict[str, float]]:
    """Per model, ms per cascade request spent queued / computing / in total (Triton's own counters)."""
    res: dict[str, dict[str, float]] = {}
    for model in MODELS:
        d = {k: after.get((k, model), 0.0) - before.get((k, model), 0.0) for k in
             ("nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us")}
        res[model] = {"queue_ms": round(d["nv_inference_queue_duration_us"] / 1000 / n_requests, 2),
                      "compute_ms": round(d["nv_inference_compute_infer_duration_us"] / 1000 / n_requests, 2),
                      "request_ms": round(d["nv_inference_request_duration_us"] / 1000 / n_requests, 2)}
    return res


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_overhead", description=__doc__.split("\n")[0])
    ap.add_argument("--model-repository", default=str(PROJECT_ROOT / "model_repository"))
    ap.add_argument("--tiny-random", action="store_true", help="export a tiny random-weight cascade instead")
    ap.add_argument("--requests", type=int, default=24, help="timed requests per side")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=1.0,
                    help="cascade threshold: 1.0 defers every prompt to heavy, 0.0 serves every prompt with light")
    ap.add_argument("--ort-threads", type=int, default=0,
                    help="ONNX Runtime intra-op threads, both sides (0 = ORT default; 1 = no thread pool, no spinning)")
    ap.add_argument("--stage-queue-delay-us", type=int, default=None,
                    help="override the stages' dynamic-batching window (default: as exported)")
    ap.add_argument("--out", default=str(OUT))
    return ap.parse_args(argv)


def _timed_pairs(args: argparse.Namespace, repo: Path, out: Path, prompts: list[str], in_process):
    """Alternating Triton / in-process requests, batch 1: (times per side, routing agreements, routes served,
    Triton's per-model ms per request)."""
    from client import CascadeClient  # noqa: PLC0415

    times: dict[str, list[float]] = {"triton": [], "in_process": []}
    routes_agree, served_log = 0, []
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=MODELS, log_path=out / "tritonserver.log")) as server, \
            CascadeClient(server.grpc_url, timeout_s=300) as client:
        n_total = args.warmup + args.requests
        for i in tqdm(range(n_total), desc="overhead (triton vs in-process)", unit="pair"):
            if i == args.warmup:
                before = scrape(server.metrics_url)
            prompt, seed = prompts[i % len(prompts)], i
            sides = ("triton", "in_process") if i % 2 == 0 else ("in_process", "triton")
            got = {}
            for side in sides:
                t0 = time.perf_counter()
                if side == "triton":
                    r = client.generate(prompt, seed=seed)
                    got[side] = r.served_by
                else:
                    got[side] = in_process(prompt, seed)[0]
                ms = 1000.0 * (time.perf_counter() - t0)
                if i >= args.warmup:
                    times[side].append(ms)
            if i >= args.warmup:
                routes_agree += got["triton"] == got["in_process"]
                served_log.append(got["triton"])
        per_model = breakdown_ms(before, scrape(server.metrics_url), args.requests)
    return times, routes_agree, served_log, per_model


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    import numpy as np  # noqa: PLC0415

    from serving import load_discriminator, load_stage  # noqa: PLC0415
    from serving.control import write_control  # noqa: PLC0415
    from zoo.domain import eval_prompts  # noqa: PLC0415

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    control = write_control(out / "control.json", {"threshold": args.threshold, "routing": "cascade"})
    repo = prepare_repository(None if args.tiny_random else Path(args.model_repository), out / "repository", control,
                              args.ort_threads, args.stage_queue_delay_us)
    art = {m: repo / m / "1" / "artifacts" for m in MODELS[:3]}
    light, heavy = load_stage(art["light"], threads=args.ort_threads), load_stage(art["heavy"], threads=args.ort_threads)
    disc = load_discriminator(art["discriminator"], threads=args.ort_threads)
    prompts = eval_prompts(seed=7, n_per_difficulty=(args.requests + args.warmup + 1) // 2)
    prompts = [prompts[i // 2 + (i % 2) * (len(prompts) // 2)] for i in range(len(prompts))]  # easy/hard alternate

    def in_process(prompt: str, seed: int) -> tuple[str, float]:
        img = light.generate([prompt], [seed])
        conf = float(disc.confidence(img)[0])
        if conf < args.threshold:
            heavy.generate([prompt], [seed])
            return "heavy", conf
        return "light", conf

    times, routes_agree, served_log, per_model = _timed_pairs(args, repo, out, prompts, in_process)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["triton"] / med["in_process"]
    result = {
        "requests_per_side": args.requests, "threshold": args.threshold, "batch_size": 1,
        "ort_threads": args.ort_threads, "stage_queue_delay_us": args.stage_queue_delay_us, "deferred": sum(v == "heavy" for v in served_log),
        "repository": "tiny-random export" if args.tiny_random else str(args.model_repository),
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "mean_ms": {k: round(statistics.fmean(v), 2) for k, v in times.items()},
        "p90_ms": {k: round(float(np.percentile(v, 90)), 2) for k, v in times.items()},
        "overhead_ratio_median": round(ratio, 4), "routing_decisions_agree": f"{routes_agree}/{args.requests}",
        "triton_per_model_ms_per_request": per_model,
        "command": "python -m benchmarks.bench_overhead " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{'side':<11} {'median ms':>10} {'mean ms':>10} {'p90 ms':>10}")
    for k in times:
        print(f"{k:<11} {result['median_ms'][k]:>10.1f} {result['mean_ms'][k]:>10.1f} {result['p90_ms'][k]:>10.1f}")
    print("inside Triton, ms per cascade request (Triton's counters): " + ", ".join(
        f"{m} queue {v['queue_ms']:.1f} compute {v['compute_ms']:.1f}" for m, v in per_model.items()))
    print(f"overhead ratio (median triton / median in-process, batch 1): {ratio:.3f}  (target <= 1.05); "
          f"routing decisions agree on {routes_agree}/{args.requests}; written {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
