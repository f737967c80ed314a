"""``make bench-live``: replay a shared trace against a real Triton + the live orchestrator,
once per policy (ours: quality, and hybrid with the prompt router; DiffServe; Clipper-light,
Clipper-heavy, static), and measure the
SLO violation ratio and the quality of the images actually served (the tiny judge's fidelity
and in-domain FID).

Load: the MAF trace's shape, time-compressed to ``--duration-s`` and min-max rescaled to
``--load`` x the cascade's capacity at full quality on ``--slots``: the highest demand the
``--capacity-policy`` (default clipper-heavy: every query on heavy) plans for without falling
back, from the exported cascade's profile. So the run goes from under to over what the
cascade serves at full quality, the regime where a cascade trades quality for throughput (the
light-only capacity of the tiny cascade is ~20x higher and would only measure overload). Every policy gets the same
arrivals (same seed) and a fresh server. Outputs under ``--out``: ``results.json``,
``table.md``, ``live.png``, the orchestrator logs.

    python -m benchmarks.live.run --cascade configs/tiny.yaml --duration-s 75 --slots cpu:2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.live.replay import Outcome, replay
from benchmarks.live.workload import TRACE_DIR, build_workload
from orchestrator.__main__ import hybrid_calibration
from orchestrator.devices import parse_slots, resolve_device
from orchestrator.control import ControlConfig, DemandEstimator
from orchestrator.loop import LoopConfig, Orchestrator
from orchestrator.node import TritonNode
from orchestrator.placement import NodeSpec
from orchestrator.server import PROJECT_ROOT, TritonServer, TritonServerConfig
from planner import data, make_policy
from planner.types import Instance
from serving.model_config import available_cores, cpu_slot_threads

ADMIN_KEY = "x-diffserve-admin:bench-live"
POLICIES = (  # one per line: policies are added by separate changes
    "quality",
    "hybrid",
    "diffserve",
    "clipper-light",
    "clipper-heavy",
    "static",
)


def capacity_qps(config: ControlConfig, policy: str = "diffserve") -> float:
    """Highest demand (qps) ``policy`` plans for without falling back, on ``config.num_workers``."""
    pol = make_policy(policy)

    def ok(q: float) -> bool:
        return pol.plan(Instance(models=config.models, demand_qps=q, slo_ms=config.slo_ms,
                                 num_workers=config.num_workers, deferral=config.deferral,
                                 quality=config.quality)).status != "FALLBACK"
    lo, hi = 0.0, 1.0
    while ok(hi) and hi < 1e6:
        lo, hi = hi, hi * 2
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def copy_repository(src: Path, dest: Path, control_file: Path) -> Path:
    """The exported repository with every ``control_file`` parameter pointed at ``control_file``."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    for cfg in dest.glob("*/config.pbtxt"):
        cfg.write_text(re.sub(r'(key: "control_file" value: \{ string_value: )"[^"]*"', rf'\1"{control_file}"',
                              cfg.read_text()))
    return dest


@dataclasses.dataclass(frozen=True)
class PolicyRun:
    policy: str
    outcomes: tuple[Outcome, ...]
    prompts: tuple[str, ...]
    windows: int
    placement_changes: int
    wall_s: float


def run_policy(policy: str, policy_kw: dict, repo: Path, control: ControlConfig, slots: tuple[str, tuple[int, ...]],
               workload, window_s: float, out: Path, timeout_s: float, cpu_threads: int | None = None) -> PolicyRun:
    """Fresh server, orchestrator thread with ``policy``, replay ``workload``; server always stopped.
    ``cpu_threads``: threads per stage instance on CPU slots (None: the node's default share)."""
    out.mkdir(parents=True, exist_ok=True)
    ctl_file = out / "control.json"
    ctl_file.unlink(missing_ok=True)
    run_repo = copy_repository(repo, out / "repo", ctl_file)
    server = TritonServer(TritonServerConfig(model_repository=run_repo, restricted_key=ADMIN_KEY,
                                             log_path=out / "tritonserver.log", startup_timeout_s=300))
    t0 = time.monotonic()
    with server:
        node = TritonNode(NodeSpec(server.grpc_url, slots[0], slots[1]), server.metrics_url, admin_key=ADMIN_KEY,
                          timeout_s=120, model_repository=run_repo, cpu_threads=cpu_threads)
        orch = Orchestrator([node], control, make_policy(policy, **policy_kw),
                            LoopConfig(window_s=window_s, slo_ms=control.slo_ms, log_path=out / "orchestrator.jsonl",
                                       weights_path=out / "routing_weights.json"),
                            estimator=DemandEstimator(alpha=0.5, overprovision=1.2,
                                                      initial_qps=workload.rate_qps[0]))
        orch.adopt()
        orch.step(force_plan=True)  # the initial plan: loads light/heavy as planned before traffic starts
        warm = replay(server.grpc_url, workload.arrivals[:2], timeout_s=timeout_s)  # first-call costs
        if not any(o.ok for o in warm):
            raise RuntimeError(f"{policy}: warm-up requests failed: {[o.error for o in warm]}")
        orch.restart_window()  # the loading and warm-up time is not demand
        stop = threading.Event()
        loop = threading.Thread(target=orch.run, args=(stop,), kwargs={"step_first": False}, daemon=True)
        loop.start()
        bar = tqdm(total=len(workload.arrivals), desc=f"{policy:>13}", unit="req", leave=False)
        try:
            outcomes = replay(server.grpc_url, workload.arrivals, timeout_s=timeout_s, keep_images=True,
                              on_done=lambda _: bar.update())
        finally:
            bar.close()
            stop.set()
            loop.join(timeout=60)
        node.close()
    shutil.rmtree(run_repo, ignore_errors=True)  # a copy of the exported models: not a result
    records = [json.loads(x) for x in (out / "orchestrator.jsonl").read_text().splitlines()]
    changes = sum(1 for r in records for a in r.get("actions", []) if a.get("result") == "ok")
    return PolicyRun(policy, tuple(outcomes), tuple(a.prompt for a in workload.arrivals),
                     sum(r["event"] == "window" for r in records), changes, time.monotonic() - t0)


def summarize(run: PolicyRun, slo_ms: float, judge, seed: int) -> dict:
    """Violation ratio (error, drop, or latency > SLO), latency, light share, and quality of the
    served images: judge fidelity (share faithful to the prompt) and FID vs the domain's
    rendering of the same prompts (judge features)."""
    from zoo import domain, metrics  # noqa: PLC0415

    o = run.outcomes
    n = len(o)
    ok = [x for x in o if x.ok]
    lat = np.array([x.latency_ms for x in ok]) if ok else np.array([np.nan])
    violations = sum(1 for x in o if not x.ok or x.latency_ms > slo_ms)
    row = {"policy": run.policy, "requests": n, "served": len(ok),
           "dropped": sum(x.error_kind == "RequestDropped" for x in o),
           "errors": sum(not x.ok and x.error_kind != "RequestDropped" for x in o),
           "violation_ratio": violations / n if n else float("nan"),
           "p50_ms": float(np.nanpercentile(lat, 50)), "p95_ms": float(np.nanpercentile(lat, 95)),
           "light_share": (sum(x.served_by == "light" for x in ok) / len(ok)) if ok else float("nan"),
           # served by heavy with no light image scored: the prompt router's (or routing=heavy's) queries
           "routed_share": (sum(x.served_by == "heavy" and np.isnan(x.confidence) for x in ok) / len(ok))
           if ok else float("nan"),
           "windows": run.windows, "placement_changes": run.placement_changes, "wall_s": round(run.wall_s, 1)}
    if judge is not None and len(ok) >= 2:
        images = np.stack([x.image for x in ok])
        prompts = [run.prompts[x.index] for x in ok]
        row["fidelity"] = float(np.mean(judge.fidelity(images, prompts)))
        rng = np.random.default_rng(seed + 1)
        real = np.stack([domain.render(domain.parse_caption(p), rng) for p in prompts])
        row["fid"] = float(metrics.fid(judge.features(images), judge.features(real)))
        row["fidelity_all_requests"] = row["fidelity"] * len(ok) / n
    return row


def write_report(rows: list[dict], workload, meta: dict, out: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cols = ["policy", "requests", "served", "dropped", "errors", "violation_ratio", "p50_ms", "p95_ms", "light_share",
            "routed_share", "fidelity", "fid", "placement_changes"]
    fmt = {"violation_ratio": "{:.3f}", "p50_ms": "{:.0f}", "p95_ms": "{:.0f}", "light_share": "{:.2f}",
           "routed_share": "{:.2f}",
           "fidelity": "{:.3f}", "fid": "{:.2f}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) if c in r else "-" for c in cols) + " |")
    (out / "table.md").write_text(
        f"Live replay: {meta['trace']} compressed to {meta['duration_s']} s, {meta['requests']} requests, "
        f"rate {meta['lo_qps']:.2f}..{meta['hi_qps']:.2f} qps = {meta['load'][0]}..{meta['load'][1]} x the capacity "
        f"{meta['capacity_qps']:.2f} qps on {meta['slots']} ({meta['capacity_source']}); planner profile latencies "
        f"x {meta['profile_latency_factor']:.2f}; SLO {meta['slo_ms']:.0f} ms; window "
        f"{meta['window_s']} s; device {meta['device']}; threads per CPU instance {meta['cpu_threads_per_instance']} "
        f"(profiled at {meta['profile_ort_threads']}).\n\nCommand: `{meta['command']}`\n\n" + "\n".join(lines) + "\n")
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(np.arange(len(workload.rate_qps)), workload.rate_qps, label="offered rate")
    ax[0].axhline(meta["capacity_qps"], color="k", ls="--", label="capacity at full quality")
    ax[0].set(xlabel="replay time (s)", ylabel="qps", title="workload")
    ax[0].legend()
    names = [r["policy"] for r in rows]
    ax[1].bar(names, [r["violation_ratio"] for r in rows], color="tab:red")
    ax[1].set(ylabel="SLO violation ratio", title="violations (errors, drops, late)")
    ax[2].bar(names, [r.get("fid", np.nan) for r in rows], color="tab:blue")
    ax[2].set(ylabel="FID (judge features, lower is better)", title="quality of served images", yscale="log")
    for i, r in enumerate(rows):
        if "fidelity" in r:
            ax[2].annotate(f"fid.={r['fidelity']:.2f}", (i, r.get("fid", 0)), ha="center", va="bottom")
    for a in ax[1:]:
        a.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(out / "live.png", dpi=110)


def live_threads(cpu_threads: int | None, slots: tuple[str, tuple[int, ...]]) -> int | None:
    """Threads per stage instance the run's CPU node uses (None on GPU slots), as TritonNode sets them."""
    if slots[0] != "cpu":
        return None
    return cpu_slot_threads(available_cores(), len(slots[1])) if cpu_threads is None else cpu_threads


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.live.run", description=__doc__.split("\n")[0])
    ap.add_argument("--cascade", default="configs/tiny.yaml")
    ap.add_argument("--repository", default=str(PROJECT_ROOT / "model_repository"))
    ap.add_argument("--profiles", default="", help="default profiles/<cascade name>/")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--trace", default=str(TRACE_DIR / "maf_2to16qps.txt"))
    ap.add_argument("--duration-s", type=int, default=75)
    # 0.5-2.5 x clipper-heavy's capacity reaches ~3x static's (static serves ~0.8x of it on the
    # tiny cascade: one heavy slot at batch 4 for the ~61 % its t = 0.02 defers), where static breaks.
    ap.add_argument("--load", type=float, nargs=2, default=(0.5, 2.5), metavar=("LO", "HI"),
                    help="rate range as multiples of the capacity (see --capacity-policy; default 0.5 2.5)")
    ap.add_argument("--capacity-policy", default="clipper-heavy",
                    help="capacity = highest demand this policy plans for without falling back")
    ap.add_argument("--capacity-qps", type=float, default=0.0, help="use this capacity instead")
    ap.add_argument("--derate-profiles", action=argparse.BooleanOptionalAction, default=True,
                    help="plan with profile latencies x (planned / measured capacity), for every policy")
    ap.add_argument("--measure-capacity-s", type=int, default=25,
                    help="measure the capacity policy's real throughput in a saturated run this long (0: use the plan's)")
    ap.add_argument("--capacity-overload", type=float, default=1.25,
                    help="the capacity run offers this x the planned capacity (default 1.25)")
    ap.add_argument("--slots", default="cpu:2")
    ap.add_argument("--cpu-threads", type=int, default=None,
                    help="threads per stage instance on CPU slots (default: cores // slots, as the orchestrator)")
    ap.add_argument("--window-s", type=float, default=4.0)
    ap.add_argument("--slo-ms", type=float, default=0.0, help="default: the cascade's slo_ms")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge", default=str(PROJECT_ROOT / "zoo" / "weights" / "judge"))
    ap.add_argument("--out", default=str(PROJECT_ROOT / "benchmarks" / "results" / "live"))
    return ap.parse_args(argv)


def _capacity(args: argparse.Namespace, control: ControlConfig, slots, slo_ms: float, out: Path) -> tuple[float, float, str]:
    """(capacity qps, planned capacity qps, where the capacity comes from) for the load range."""
    planned = capacity_qps(control, args.capacity_policy)
    capacity_note = f"{args.capacity_policy} plan's"
    if args.capacity_qps:
        cap, capacity_note = args.capacity_qps, "given (--capacity-qps)"
    elif args.measure_capacity_s > 0:
        if not args.capacity_overload > 1.0:
            raise SystemExit(f"--capacity-overload {args.capacity_overload}; expected > 1 (the capacity run must saturate)")
        # Saturate the full-quality policy at --capacity-overload x its planned capacity: its
        # measured throughput (served / time to the last answer) is what this machine sustains.
        # A mild overload: at 2x the cascade admits more than it drains and the late answers'
        # work is wasted, so served / time measured the collapse, not the capacity (docs/orchestrator.md).
        offered = args.capacity_overload * planned
        sat = build_workload(args.trace, args.measure_capacity_s, offered, offered, seed=args.seed + 1)
        run = run_policy(args.capacity_policy, {}, Path(args.repository), control, slots, sat, args.window_s,
                         out / f"capacity-{args.capacity_policy}", timeout_s=max(60.0, 3 * slo_ms / 1000),
                         cpu_threads=args.cpu_threads)
        served = [o for o in run.outcomes if o.ok]
        span_s = max(o.t_send_s + o.latency_ms / 1000.0 for o in served) if served else float("inf")
        cap = len(served) / span_s
        capacity_note = (f"measured {args.capacity_policy} throughput ({len(served)} served in {span_s:.1f} s at "
                         f"{offered:.2f} qps offered; planned {planned:.2f})")
    else:
        cap = planned
    return cap, planned, capacity_note


def _hybrid_calibration(args: argparse.Namespace, prof_dir: Path) -> dict:
    """ControlConfig fields of the ``hybrid`` run (its surface and router curve: orchestrator's
    :func:`~orchestrator.__main__.hybrid_calibration`). Without them, the default policy list
    drops hybrid with a warning (a cascade without a router); an explicit ``--policies hybrid``
    stops with the orchestrator's message."""
    if "hybrid" not in args.policies:
        return {}
    try:
        return hybrid_calibration("hybrid", prof_dir, "light", "heavy")
    except SystemExit as exc:
        if args.policies != list(POLICIES):
            raise
        print(f"WARNING: hybrid left out: {exc}")
        args.policies = [p for p in args.policies if p != "hybrid"]
        return {}


def main(argv: list[str] | None = None) -> int:
    from serving.config import load_cascade  # noqa: PLC0415

    args = _parse_args(argv)

    cascade = load_cascade(args.cascade)
    slo_ms = args.slo_ms or cascade.slo_ms
    prof_dir = Path(args.profiles or PROJECT_ROOT / "profiles" / cascade.name)
    device = resolve_device(prof_dir, args.device)
    profiles, deferral, quality = data.load_calibration(prof_dir, device)
    models = (dataclasses.replace(profiles[0], name="light"), dataclasses.replace(profiles[-1], name="heavy"))
    slots = parse_slots(args.slots)
    hybrid = _hybrid_calibration(args, prof_dir)
    control = ControlConfig(models=models, slo_ms=slo_ms, num_workers=len(slots[1]), deferral=deferral,
                            quality=quality, window_s=args.window_s)
    judge = None
    if Path(args.judge).exists():
        from zoo.judge import load_judge  # noqa: PLC0415
        judge = load_judge(args.judge)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) / stamp
    out.mkdir(parents=True, exist_ok=True)
    cap, planned, capacity_note = _capacity(args, control, slots, slo_ms, out)
    slowdown = planned / cap
    if args.derate_profiles and slowdown > 1.0:
        # The profile times each stage alone; live, light, heavy, discriminator, cascade and the
        # client share the cores. Every policy plans with latencies x the measured slowdown.
        control = dataclasses.replace(control, models=tuple(
            dataclasses.replace(m, batch_latency_ms={b: ms * slowdown for b, ms in m.batch_latency_ms.items()})
            for m in control.models))
    lo, hi = args.load[0] * cap, args.load[1] * cap
    workload = build_workload(args.trace, args.duration_s, lo, hi, seed=args.seed)
    print(f"capacity ({capacity_note}, {args.slots}): {cap:.2f} qps; replay {len(workload.arrivals)} requests over "
          f"{args.duration_s} s at {lo:.2f}..{hi:.2f} qps; out {out}")
    light_bs, heavy_bs = models[0].batch_sizes, models[1].batch_sizes
    static_kw = dict(threshold=0.02, light_workers=4, heavy_workers=12,  # the paper's static config, scaled down
                     light_batch=max(b for b in light_bs if b <= 16), heavy_batch=max(b for b in heavy_bs if b <= 4))
    rows = []
    for policy in tqdm(args.policies, desc="policies", unit="policy"):
        # Only the hybrid run plans with the router: the others keep router_threshold unset.
        run = run_policy(policy, static_kw if policy == "static" else {}, Path(args.repository),
                         dataclasses.replace(control, **hybrid) if policy == "hybrid" else control, slots,
                         workload, args.window_s, out / policy, timeout_s=max(60.0, 3 * slo_ms / 1000),
                         cpu_threads=args.cpu_threads)
        rows.append(summarize(run, slo_ms, judge, args.seed))
        print(json.dumps(rows[-1]))
    meta = {"trace": Path(args.trace).name, "duration_s": args.duration_s, "requests": len(workload.arrivals),
            "lo_qps": lo, "hi_qps": hi, "load": list(args.load), "capacity_qps": cap,
            "capacity_policy": args.capacity_policy,
            "capacity_source": capacity_note, "planned_capacity_qps": planned,
            "profile_latency_factor": slowdown if args.derate_profiles and slowdown > 1.0 else 1.0, "slots": args.slots,
            "slo_ms": slo_ms, "window_s": args.window_s, "device": device,
            "cpu_threads_per_instance": live_threads(args.cpu_threads, slots),
            "profile_ort_threads": json.loads((prof_dir / f"{device}.json").read_text()).get("ort_threads"),
            "command": "python -m benchmarks.live.run " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_report(rows, workload, meta, out)
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
