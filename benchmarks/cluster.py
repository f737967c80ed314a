"""``make bench-cluster``: a compressed MAF trace through HAProxy onto a 3-node cluster, one node's
tritonserver killed mid-trace, the node restarted by the supervisor and adopted again.

Per run it measures, from the client, the balancer (runtime API, polled every 0.2 s) and the
orchestrator's log: requests answered / failed (and how), requests per node (HAProxy's counters),
when the balancer took the node out, when the orchestrator re-planned without it, when the node
served again (positive weight, UP in HAProxy), and whether HAProxy's weights equal the plan's.
The worst of ``--runs`` runs is reported. Outputs under ``--out``: ``results.json`` and
``cluster.png`` (weights per node, outcomes, the kill and the recovery, for the worst run).

    python -m benchmarks.cluster --runs 3 --duration-s 60
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.live.replay import Outcome, replay
from benchmarks.live.workload import TRACE_DIR, build_workload
from deploy.cluster import Cluster, ClusterConfig
from orchestrator.balancer import HAProxyRuntime, server_name
from orchestrator.server import PROJECT_ROOT

STATIC_3X3 = ("--policy-arg", "light_workers=3", "--policy-arg", "heavy_workers=3", "--policy-arg", "light_batch=4",
              "--policy-arg", "heavy_batch=2", "--policy-arg", "threshold=0.5")


@dataclasses.dataclass(frozen=True)
class FaultRun:
    """What one run measured. Times are seconds after the kill (None: never seen)."""

    outcomes: tuple[Outcome, ...]
    per_node_requests: dict[str, int]  # HAProxy's count of requests each node answered (2xx)
    balancer_out_s: float | None  # HAProxy marked the node DOWN
    replanned_s: float | None  # first orchestrator window with the node down (plan over the rest)
    recovered_s: float | None  # node UP in HAProxy with a positive weight again
    served_after_recovery: int  # requests the node answered after it came back
    balancer_retries: dict[str, int]  # HAProxy's retries / redispatches (requests sent again elsewhere)
    plans: dict[str, Any]  # workers planned before / while down / after
    weights_match_plan: bool  # HAProxy's weights == the orchestrator's last published weights
    timeline: tuple[dict, ...]
    windows: tuple[dict, ...]
    t_start_unix_s: float = 0.0
    t_kill_unix_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(not o.ok for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for o in self.outcomes:
            if not o.ok:
                kinds[o.error_kind] = kinds.get(o.error_kind, 0) + 1
        return {"requests": len(self.outcomes), "ok": len(self.outcomes) - self.errors, "errors": self.errors,
                "error_kinds": kinds, "per_node_requests": self.per_node_requests,
                "balancer_out_s": _r(self.balancer_out_s), "replanned_s": _r(self.replanned_s),
                "recovered_s": _r(self.recovered_s), "served_after_recovery": self.served_after_recovery,
                "balancer_retries": self.balancer_retries,
                "plans": self.plans, "weights_match_plan": self.weights_match_plan}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _poll_balancer(runtime: HAProxyRuntime, stop: threading.Event, out: list[dict]) -> None:
    while not stop.wait(0.2):
        try:
            servers = runtime.servers()
        except (OSError, ValueError):
            continue
        out.append({"t_unix_s": time.time(), "servers": {
            name: {"status": row["status"], "weight": int(row["weight"] or 0), "ok": int(row.get("hrsp_2xx") or 0),
                   "retries": int(row.get("wretr") or 0), "redispatched": int(row.get("wredis") or 0)}
            for name, row in servers.items()}})


def orchestrator_windows(log_path: Path, since_unix_s: float = 0.0) -> list[dict]:
    """The orchestrator's window records (JSON lines) since ``since_unix_s``."""
    out = []
    for line in Path(log_path).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "window" and rec.get("t_unix_s", 0) >= since_unix_s:
            out.append(rec)
    return out


def fault_run(cluster: Cluster, arrivals, kill_at_s: float, node_index: int = 1, recover_timeout_s: float = 120.0,
              on_done: Callable[[Outcome], None] | None = None) -> FaultRun:
    """Replay ``arrivals`` through the balancer; SIGKILL node ``node_index``'s tritonserver at
    ``kill_at_s``; after the replay wait (at most ``recover_timeout_s``) until it serves again."""
    node = cluster.nodes[node_index]
    name = server_name(node.url)
    runtime = HAProxyRuntime(cluster.runtime_socket)
    stop, timeline = threading.Event(), []
    poller = threading.Thread(target=_poll_balancer, args=(runtime, stop, timeline), daemon=True)
    poller.start()
    t_start = time.time()
    killed: dict[str, float] = {}

    def kill() -> None:
        killed["t"] = time.time()
        os.kill(node.server.process.pid, signal.SIGKILL)

    timer = threading.Timer(kill_at_s, kill)
    timer.start()
    try:
        outcomes = replay(cluster.balancer_url, arrivals, timeout_s=60.0, on_done=on_done)
        timer.join()
        deadline = time.monotonic() + recover_timeout_s
        while time.monotonic() < deadline and _recovered_at(timeline, name, killed["t"]) is None:
            time.sleep(0.5)
        time.sleep(1.0)  # one more balancer sample after recovery
    finally:
        timer.cancel()
        stop.set()
        poller.join()
    return _measure(cluster, outcomes, timeline, name, node.url, killed["t"], t_start, runtime)


def _recovered_at(timeline: list[dict], name: str, t_kill: float) -> float | None:
    down_seen = False
    for s in timeline:
        srv = s["servers"].get(name)
        if srv is None or s["t_unix_s"] < t_kill:
            continue
        if srv["status"] != "UP" or srv["weight"] == 0:
            down_seen = True
        elif down_seen:
            return s["t_unix_s"]
    return None


def _measure(cluster: Cluster, outcomes, timeline, name, url, t_kill, t_start, runtime) -> FaultRun:
    out_at = next((s["t_unix_s"] for s in timeline if s["t_unix_s"] >= t_kill
                   and s["servers"].get(name, {}).get("status", "UP") != "UP"), None)
    rec_at = _recovered_at(timeline, name, t_kill)
    windows = orchestrator_windows(cluster.log_path, t_start)
    down = [w for w in windows if url in w.get("down", []) and w["t_unix_s"] >= t_kill]
    # A window stamped just before the kill can already see it (its step ran past t_kill: failed
    # loads in "health"): it is not the plan from before the kill.
    before = [w for w in windows if w["t_unix_s"] < t_kill and w.get("plan") and not w.get("health")]
    after = [w for w in windows if rec_at is not None and w["t_unix_s"] >= rec_at and w.get("plan")]
    plans = {"before": before[-1]["plan"]["workers"] if before else None,
             "while_down": down[0].get("plan", {}).get("workers") if down else None,
             "after": after[-1]["plan"]["workers"] if after else None}
    per_node = {}
    last = timeline[-1]["servers"] if timeline else {}
    for n in cluster.nodes:
        per_node[n.url] = last.get(server_name(n.url), {}).get("ok", 0)
    served_after = 0
    if rec_at is not None:
        at_rec = next(s for s in timeline if s["t_unix_s"] >= rec_at)["servers"].get(name, {}).get("ok", 0)
        served_after = last.get(name, {}).get("ok", 0) - at_rec
    retries = {"retries": sum(v.get("retries", 0) for v in last.values()),
               "redispatched": sum(v.get("redispatched", 0) for v in last.values())}
    published = cluster.weights()
    applied = {n.url: int(runtime.servers()[server_name(n.url)]["weight"] or 0) for n in cluster.nodes}
    return FaultRun(tuple(outcomes), per_node, None if out_at is None else out_at - t_kill,
                    None if not down else down[0]["t_unix_s"] - t_kill, None if rec_at is None else rec_at - t_kill,
                    served_after, retries, plans, applied == published, tuple(timeline), tuple(windows), t_start, t_kill)


def worst_of(runs: list[dict]) -> dict[str, Any]:
    """The worst value of each measure over runs (None anywhere: never happened -> None)."""
    def worst(key: str) -> float | None:
        vals = [r[key] for r in runs]
        return None if any(v is None for v in vals) else max(vals)

    return {"errors": max(r["errors"] for r in runs), "requests": min(r["requests"] for r in runs),
            "balancer_out_s": worst("balancer_out_s"), "replanned_s": worst("replanned_s"),
            "recovered_s": worst("recovered_s"), "weights_match_plan": all(r["weights_match_plan"] for r in runs),
            "every_node_served": all(all(v > 0 for v in r["per_node_requests"].values()) for r in runs)}


def write_png(run: FaultRun, killed_url: str, path: Path) -> Path:
    """Weights per node (HAProxy, live), requests each node answered per second, client outcomes."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    t0 = run.t_start_unix_s
    t_kill_rel = run.t_kill_unix_s - t0
    times = np.array([s["t_unix_s"] - t0 for s in run.timeline])
    fig, ax = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    lag = 10  # samples: answers per second over ~2 s, so that single answers do not make spikes
    for k, name in enumerate(sorted(run.timeline[-1]["servers"])):
        w = [s["servers"].get(name, {}).get("weight", 0) if s["servers"].get(name, {}).get("status") == "UP" else 0
             for s in run.timeline]
        ok = np.array([s["servers"].get(name, {}).get("ok", 0) for s in run.timeline], dtype=float)
        rate = np.zeros_like(ok)
        rate[lag:] = (ok[lag:] - ok[:-lag]) / np.maximum(times[lag:] - times[:-lag], 1e-6)
        label = name + (" (killed)" if name == server_name(killed_url) else "")
        style = ["-", "--", ":"][k % 3]  # equal weights overlap: tell the lines apart
        ax[0].step(times, np.array(w) + 0.6 * k, where="post", ls=style, label=label)
        ax[1].plot(times, rate, ls=style, label=label)
    sends = np.array([o.t_send_s for o in run.outcomes])
    bins = np.arange(0, max(times.max(), sends.max() if len(sends) else 1) + 1)
    ax[2].hist([sends[[o.ok for o in run.outcomes]], sends[[not o.ok for o in run.outcomes]]], bins=bins,
               stacked=True, color=["tab:green", "tab:red"], label=["image", "error"])
    for a in ax:
        a.axvline(t_kill_rel, color="k", ls="--", lw=1)
        if run.recovered_s is not None:
            a.axvline(t_kill_rel + run.recovered_s, color="tab:blue", ls=":", lw=1)
    ax[0].set(ylabel="HAProxy weight (0 if DOWN; offset)", title="node killed at the dashed line, serving again at the dotted one")
    ax[1].set(ylabel="answered / s (2-s window)")
    ax[2].set(ylabel="requests sent / s", xlabel="seconds")
    for a in ax:
        a.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import platform  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from benchmarks.live.workload import prompt_for  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--repository", default=str(PROJECT_ROOT / "model_repository"))
    ap.add_argument("--profiles", default=str(PROJECT_ROOT / "profiles" / "tiny"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--trace", default=str(TRACE_DIR / "maf_2to16qps.txt"))
    ap.add_argument("--duration-s", type=int, default=60, help="the trace compressed to this many seconds")
    ap.add_argument("--lo-qps", type=float, default=1.0)
    ap.add_argument("--hi-qps", type=float, default=4.0)
    ap.add_argument("--kill-at-s", type=float, default=20.0)
    ap.add_argument("--window-s", type=float, default=2.0)
    ap.add_argument("--restart-delay-s", type=float, default=3.0)
    ap.add_argument("--out", default=str(PROJECT_ROOT / "benchmarks" / "results" / "cluster"),
                    help="results.json and cluster.png (committed)")
    ap.add_argument("--work-dir", default=str(PROJECT_ROOT / "runs" / "bench_cluster"),
                    help="each run's cluster folder: logs, configs, Prometheus data (not committed)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workload = build_workload(args.trace, args.duration_s, args.lo_qps, args.hi_qps, seed=0, prompt=prompt_for)
    runs, worst_run = [], None
    for i in tqdm(range(args.runs), desc="runs", unit="run"):
        shutil.rmtree(Path(args.work_dir) / f"run-{i}", ignore_errors=True)  # logs of an earlier run would mix in
        cfg = ClusterConfig(nodes=args.nodes, model_repository=Path(args.repository), profiles=Path(args.profiles),
                            device=args.device, window_s=args.window_s, run_dir=Path(args.work_dir) / f"run-{i}", grpc_port=0,
                            prometheus_port=0, restart_delay_s=args.restart_delay_s, policy="static",
                            orchestrator_args=STATIC_3X3)
        with Cluster(cfg) as cluster:
            cluster.wait_serving(600)
            bar = tqdm(total=len(workload.arrivals), desc=f"run {i}", unit="req", leave=False)
            run = fault_run(cluster, workload.arrivals, args.kill_at_s, on_done=lambda _o: bar.update(1))
            bar.close()
            summary = run.summary()
            runs.append(summary)
            if worst_run is None or (summary["errors"], summary["recovered_s"] or 1e9) >= \
                    (worst_run[0]["errors"], worst_run[0]["recovered_s"] or 1e9):
                worst_run = (summary, run, cluster.nodes[1].url)
        print(json.dumps(summary), flush=True)
    worst = worst_of(runs)
    load = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT).stdout.strip()
    meta = {"command": "python -m benchmarks.cluster " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
            "commit": commit, "machine": f"{platform.node()} {os.cpu_count()} CPUs", "loadavg_after": load,
            "requests_per_run": len(workload.arrivals), "trace": Path(args.trace).name, **vars(args)}
    (out / "results.json").write_text(json.dumps({"meta": meta, "worst_of_runs": worst, "runs": runs}, indent=1))
    summary, run, url = worst_run
    write_png(run, url, out / "cluster.png")
    print(json.dumps({"worst_of_runs": worst}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
