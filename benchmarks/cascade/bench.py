"""``make bench-cascade``: how much heavy capacity the cascade model can use, old design vs new.

    python -m benchmarks.cascade                       # old and new cascade, ~2 minutes
    python -m benchmarks.cascade --variants old,new,new-mbs32,old-x8   # ~3.5 minutes

One real tritonserver serves stand-in stages of FIXED latency per batch (benchmarks/cascade/
standin.py: light 20 ms, discriminator 5 ms, heavy 1,000 ms per batch of 4 queries, 8 heavy
instances) and, side by side, the cascade models to compare:

* ``new``: serving/triton/cascade_model.py (response sender, requests answered on their own
  path), over ``heavy`` (max_batch_size = the heavy batch, 4);
* ``old``: the cascade before that change (benchmarks/cascade/old_cascade_model.py), 2 instances,
  each running one gathered batch from start to end, over ``heavy_mbs32`` (max_batch_size 32:
  the old design sends all deferred queries of a batch in one call, which a max_batch_size of 4
  would refuse);
* ``new-mbs32`` (optional): the new cascade over ``heavy_mbs32`` (exported stages have
  max_batch_size 32: Triton then merges waiting heavy calls into one execution);
* ``old-x8`` (optional): the old cascade with 8 instances ("more instances" as the remedy).

Per variant, in the same run: (1) the light path alone: one client, easy prompts one after the
other; (2) 64 closed-loop clients (each sends its next request when the previous one is
answered), half of the prompts "hard" (deferred by the stand-in discriminator), for a warm-up
and a measurement window. Results (JSON + PNG) go to benchmarks/results/cascade/:

* ``throughput_ratio`` = heavy-served throughput (queries answered by heavy per second in the
  window) / heavy capacity (8 instances x 4 queries / 1 s = 32 queries/s): how much of the heavy
  stage the cascade keeps busy (target >= 0.8);
* ``light_p95_ratio`` = p95 latency of light-served requests under this load / p95 of the light
  path alone (target <= 3): whether light-served queries wait for heavy ones.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from orchestrator.server import PROJECT_ROOT, TritonServer, TritonServerConfig
from serving.control import write_control

OUT = PROJECT_ROOT / "benchmarks" / "results" / "cascade"
RUNS = PROJECT_ROOT / "runs" / "bench_cascade"
# name -> (Triton model name, module with TritonPythonModel, cascade instances, heavy stage model)
VARIANTS = {
    "new": ("cascade", "serving.triton.cascade_model", 2, "heavy"),
    "old": ("cascade_old", "benchmarks.cascade.old_cascade_model", 2, "heavy_mbs32"),
    "old-x8": ("cascade_old_x8", "benchmarks.cascade.old_cascade_model", 8, "heavy_mbs32"),
    "new-mbs32": ("cascade_mbs32", "serving.triton.cascade_model", 2, "heavy_mbs32"),
}
# The two heavy stand-ins differ only in max_batch_size. ``heavy`` (max_batch_size = the heavy
# batch) lets Triton hand each instance one batch; the old cascade sends a whole gathered batch's
# deferred queries in ONE call (up to 32), which only ``heavy_mbs32`` (max_batch_size 32, like the
# exported stages) accepts. Triton's dynamic batcher merges waiting calls up to max_batch_size
# (preferred_batch_size does not stop it: measured), so on ``heavy_mbs32`` one instance may run
# several batches in a row while others idle; ``new-mbs32`` measures the new cascade there.
EASY, HARD = "an easy red circle", "a hard scene with four objects"
_THIN_MODEL = ('import os, sys\nsys.path.insert(0, os.environ["PROJECT_ROOT"])\n'
               "from {module} import TritonPythonModel  # noqa: E402,F401\n")


def stage_config(name: str, stage: str, delay_ms: float, instances: int, max_batch: int, control: Path) -> str:
    """config.pbtxt of one stand-in stage."""
    if stage == "discriminator":
        io = ('input [ { name: "IMAGE" data_type: TYPE_UINT8 dims: [ 8, 8, 3 ] } ]\n'
              'output [ { name: "CONFIDENCE" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    else:
        io = ('input [ { name: "PROMPT" data_type: TYPE_STRING dims: [ 1 ] },\n'
              '        { name: "SEED" data_type: TYPE_INT64 dims: [ 1 ] optional: true } ]\n'
              'output [ { name: "IMAGE" data_type: TYPE_UINT8 dims: [ 8, 8, 3 ] } ]\n')
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n{io}'
            f"dynamic_batching {{ max_queue_delay_microseconds: 1000 }}\n"
            f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]\n"
            f'parameters [ {{ key: "stage" value: {{ string_value: "{stage}" }} }},\n'
            f'  {{ key: "delay_ms" value: {{ string_value: "{delay_ms:g}" }} }},\n'
            f'  {{ key: "control_file" value: {{ string_value: "{control}" }} }} ]\n')


def build_repository(dest: Path, args: argparse.Namespace, control: Path) -> Path:
    """Stand-in stages + one cascade model per variant under ``dest`` (replaced)."""
    shutil.rmtree(dest, ignore_errors=True)
    heavy_models = {VARIANTS[v][3] for v in args.variants}
    stages = {"light": ("light", args.light_ms, 1, 32), "discriminator": ("discriminator", args.disc_ms, 1, 32),
              "heavy": ("heavy", args.heavy_ms, args.heavy_instances, args.heavy_batch),
              "heavy_mbs32": ("heavy", args.heavy_ms, args.heavy_instances, 32)}
    for name, (stage, delay_ms, instances, max_batch) in stages.items():
        if stage == "heavy" and name not in heavy_models:
            continue
        (dest / name / "1").mkdir(parents=True)
        (dest / name / "config.pbtxt").write_text(stage_config(name, stage, delay_ms, instances, max_batch, control))
        (dest / name / "1" / "model.py").write_text(_THIN_MODEL.format(module="benchmarks.cascade.standin"))
    base = (PROJECT_ROOT / "model_repository" / "cascade" / "config.pbtxt").read_text()
    for variant in args.variants:
        model, module, instances, heavy = VARIANTS[variant]
        text = base.replace('name: "cascade"', f'name: "{model}"')
        text = text.replace("parameters [\n", f'parameters [\n  {{ key: "heavy_model" value: {{ string_value: "{heavy}" }} }},\n', 1)
        text = re.sub(r"instance_group \[ \{ kind: KIND_CPU count: \d+ \} \]",
                      f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]", text)
        text = re.sub(r'(key: "control_file" value: \{ string_value: )"[^"]*"', rf'\1"{control}"', text)
        if module == VARIANTS["old"][1]:  # parameters the old cascade did not have (it refuses unknown ones)
            text = re.sub(r',\s*(#[^\n]*\n\s*)*\{ key: "max_stage_calls" value: \{ string_value: "[^"]*" \} \}', "", text)
        if args.slo_ms:
            text = re.sub(r'(key: "slo_ms" value: \{ string_value: )"[^"]*"', rf'\1"{args.slo_ms:g}"', text)
        (dest / model / "1").mkdir(parents=True)
        (dest / model / "config.pbtxt").write_text(text)
        (dest / model / "1" / "model.py").write_text(_THIN_MODEL.format(module=module))
    return dest


def infer_once(client, grpc, model: str, prompt: str, seed: int, timeout_s: float) -> str:
    """One unary gRPC infer; returns SERVED_BY (``error: ...`` when it failed)."""
    p = grpc.InferInput("PROMPT", [1, 1], "BYTES")
    p.set_data_from_numpy(np.array([[prompt.encode()]], dtype=object))
    s = grpc.InferInput("SEED", [1, 1], "INT64")
    s.set_data_from_numpy(np.array([[seed]], dtype=np.int64))
    try:
        r = client.infer(model, [p, s], outputs=[grpc.InferRequestedOutput("SERVED_BY")], client_timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - counted, reported
        return f"error: {str(exc)[:200]}"
    return r.as_numpy("SERVED_BY")[0, 0].decode()


def light_alone(url: str, model: str, n: int) -> list[float]:
    """Latency (ms) of ``n`` easy prompts sent one after the other (after 5 warm-up requests)."""
    import tritonclient.grpc as grpc  # noqa: PLC0415

    client = grpc.InferenceServerClient(url)
    out = []
    for i in tqdm(range(n + 5), desc=f"{model}: light path alone", unit="req", leave=False):
        t0 = time.perf_counter()
        served = infer_once(client, grpc, model, f"{EASY} {i}", i, 60.0)
        if served != "light":
            raise RuntimeError(f"{model}: an easy prompt was answered {served!r}; expected light")
        if i >= 5:
            out.append(1000.0 * (time.perf_counter() - t0))
    client.close()
    return out


def closed_loop(url: str, model: str, clients: int, duration_s: float, seed: int) -> tuple[float, list[tuple]]:
    """``clients`` threads, each sending its next request when the previous one is answered, for
    ``duration_s``; half the prompts hard. Returns (start time, [(end time, ms, served_by)])."""
    import tritonclient.grpc as grpc  # noqa: PLC0415

    records: list[tuple] = []
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + duration_s

    def client_loop(k: int) -> None:
        rng, client, i = random.Random(seed * 1000 + k), grpc.InferenceServerClient(url), 0
        while time.perf_counter() < stop_at:
            prompt = f"{HARD if rng.random() < 0.5 else EASY} {k}-{i}"
            t0 = time.perf_counter()
            served = infer_once(client, grpc, model, prompt, i, 300.0)
            t1 = time.perf_counter()
            with lock:
                records.append((t1, 1000.0 * (t1 - t0), served))
            i += 1
        client.close()

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    with tqdm(total=int(duration_s), desc=f"{model}: {clients} closed-loop clients", unit="s", leave=False) as bar:
        while time.perf_counter() < stop_at:
            time.sleep(1.0)
            bar.update(1)
    for t in threads:
        t.join(600)
    return start, records


def heavy_stats(server, heavy: str) -> tuple[int, int, float]:
    """The heavy stage's (execution_count, inference_count, seconds spent executing over all
    instances) so far (Triton statistics: batch_stats hold one compute_infer per execution)."""
    st = server.grpc_client().get_inference_statistics(heavy, as_json=True)["model_stats"][0]
    busy_s = sum(int(b.get("compute_infer", {}).get("ns", 0)) for b in st.get("batch_stats", [])) / 1e9
    return int(st.get("execution_count", 0)), int(st.get("inference_count", 0)), busy_s


def p95(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 95)), 1) if values else None


def measure(server, variant: str, args: argparse.Namespace) -> dict:
    """Both phases for one variant; the figures of concurrency.json."""
    model = VARIANTS[variant][0]
    alone = light_alone(server.grpc_url, model, args.alone_requests)
    ex0, inf0, busy0 = heavy_stats(server, VARIANTS[variant][3])
    t_load = time.perf_counter()
    start, records = closed_loop(server.grpc_url, model, args.clients, args.warmup_s + args.measure_s, args.seed)
    load_s = time.perf_counter() - t_load
    ex1, inf1, busy1 = heavy_stats(server, VARIANTS[variant][3])
    lo, hi = start + args.warmup_s, start + args.warmup_s + args.measure_s
    window = [r for r in records if lo <= r[0] < hi]
    by = {s: [ms for _, ms, served in window if served == s] for s in ("light", "heavy")}
    errors = [served for _, _, served in window if served not in ("light", "heavy")]
    capacity_qps = args.heavy_instances * args.heavy_batch / (args.heavy_ms / 1000.0)
    heavy_qps = len(by["heavy"]) / args.measure_s
    return {
        "model": model, "cascade_instances": VARIANTS[variant][2], "heavy_model": VARIANTS[variant][3],
        "throughput_ratio": round(heavy_qps / capacity_qps, 3),
        "light_p95_ratio": round(p95(by["light"]) / p95(alone), 2) if by["light"] else None,
        "heavy_served_qps": round(heavy_qps, 2), "light_served_qps": round(len(by["light"]) / args.measure_s, 2),
        "light_p95_ms_under_load": p95(by["light"]), "light_p95_ms_alone": p95(alone),
        "light_p50_ms_under_load": round(float(np.median(by["light"])), 1) if by["light"] else None,
        "heavy_p50_ms_under_load": round(float(np.median(by["heavy"])), 1) if by["heavy"] else None,
        "errors_in_window": len(errors), "first_errors": sorted(set(errors))[:3],
        "heavy_busy_fraction": round((busy1 - busy0) / (args.heavy_instances * load_s), 3),
        "heavy_mean_batch": round((inf1 - inf0) / max(1, ex1 - ex0), 2),
        "light_ms_under_load": sorted(round(x, 1) for x in by["light"]),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(results)
    x = np.arange(len(names))
    left.bar(x - 0.2, [results[n]["throughput_ratio"] for n in names], 0.4, label="throughput_ratio (target >= 0.8)")
    left.bar(x + 0.2, [results[n]["light_p95_ratio"] or 0 for n in names], 0.4, label="light_p95_ratio (target <= 3)")
    left.axhline(0.8, color="C0", ls=":")
    left.axhline(3.0, color="C1", ls=":")
    left.set_xticks(x, names)
    left.set_yscale("log")
    left.set_title("heavy capacity used / light-served p95 vs alone")
    left.legend(fontsize=8)
    for n in names:
        ms = results[n]["light_ms_under_load"]
        if ms:
            right.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=n)
    right.set_xscale("log")
    right.set_xlabel("light-served latency under load, ms (client)")
    right.set_ylabel("fraction of requests")
    right.set_title("64 closed-loop clients, half deferred")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cascade", description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="old,new", help=f"comma-separated, from {list(VARIANTS)}")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--measure-s", type=float, default=25.0)
    ap.add_argument("--alone-requests", type=int, default=100)
    ap.add_argument("--light-ms", type=float, default=20.0)
    ap.add_argument("--disc-ms", type=float, default=5.0)
    ap.add_argument("--heavy-ms", type=float, default=1000.0)
    ap.add_argument("--heavy-instances", type=int, default=8)
    ap.add_argument("--heavy-batch", type=int, default=4)
    ap.add_argument("--slo-ms", type=float, default=0.0, help="cascade slo_ms (0: none, no shedding: pure concurrency)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        ap.error(f"--variants {unknown or args.variants}; expected names from {list(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    control = write_control(RUNS / "control.json", {"threshold": 0.5, "routing": "cascade", "batch_size": {
        "light": 32, "discriminator": 32, "heavy": args.heavy_batch}})
    repo = build_repository(RUNS / "repository", args, control)
    models = ("light", "discriminator") + tuple(sorted({VARIANTS[v][3] for v in args.variants})) + tuple(
        VARIANTS[v][0] for v in args.variants)
    load_before = os.getloadavg()
    results = {}
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=models, log_path=RUNS / "tritonserver.log")) as server:
        for variant in args.variants:
            results[variant] = measure(server, variant, args)
            r = results[variant]
            print(f"{variant:>7}: throughput_ratio {r['throughput_ratio']:.3f} ({r['heavy_served_qps']} heavy-served q/s), "
                  f"light_p95_ratio {r['light_p95_ratio']} ({r['light_p95_ms_under_load']} / {r['light_p95_ms_alone']} ms), "
                  f"heavy busy {r['heavy_busy_fraction']:.0%}, errors {r['errors_in_window']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "concurrency.png")
    summary = {
        "throughput_ratio": results.get("new", {}).get("throughput_ratio"),
        "light_p95_ratio": results.get("new", {}).get("light_p95_ratio"),
        "old_throughput_ratio": results.get("old", {}).get("throughput_ratio"),
        "old_light_p95_ratio": results.get("old", {}).get("light_p95_ratio"),
        "targets": {"throughput_ratio": ">= 0.8", "light_p95_ratio": "<= 3"},
        "definitions": {
            "throughput_ratio": "heavy-served throughput / heavy capacity: queries answered with SERVED_BY=heavy per "
                                "second of the measurement window, over heavy_instances x heavy_batch / (heavy_ms / 1000) "
                                f"= {args.heavy_instances} x {args.heavy_batch} / {args.heavy_ms / 1000:g} s",
            "light_p95_ratio": "p95 client latency of light-served requests under the closed-loop load / p95 of the light "
                               "path alone (one client, easy prompts, one after the other), same variant, same run",
            "heavy_busy_fraction": "time the heavy instances spent in execute (Triton batch statistics) / (heavy "
                                   "instances x load phase, warm-up and the drain of the last requests included)",
        },
        "setup": {k: getattr(args, k) for k in ("clients", "warmup_s", "measure_s", "alone_requests", "light_ms", "disc_ms",
                                                "heavy_ms", "heavy_instances", "heavy_batch", "slo_ms", "seed")},
        "variants": {v: {k: x for k, x in r.items() if k != "light_ms_under_load"} for v, r in results.items()},
        "load_average_before_after": [round(x, 2) for x in load_before] + [round(x, 2) for x in os.getloadavg()],
        "command": "python -m benchmarks.cascade " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "concurrency.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"new: throughput_ratio {summary['throughput_ratio']} (target >= 0.8), light_p95_ratio "
          f"{summary['light_p95_ratio']} (target <= 3); old: {summary['old_throughput_ratio']}, "
          f"{summary['old_light_p95_ratio']}; written {out / 'concurrency.json'}, {out / 'concurrency.png'}")
    return 0
