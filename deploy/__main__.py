"""CLI of the one-machine cluster (``make cluster`` / ``make cluster-stop``).

    python -m deploy start --nodes 3 [--window-s 5 --policy diffserve ...]   # detached, waits until serving
    python -m deploy status
    python -m deploy stop

``start`` runs ``python -m deploy run ...`` in the background (it holds and supervises every
process) and waits until every node serves; ``cluster.json`` under the run folder has the ports.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from deploy.cluster import Cluster, ClusterConfig
from orchestrator.server import PROJECT_ROOT, pid_alive, terminate

RUN_DIR = PROJECT_ROOT / "runs" / "cluster"


def config_from(args: argparse.Namespace) -> ClusterConfig:
    return ClusterConfig(nodes=args.nodes, slots_per_node=args.slots_per_node,
                         model_repository=Path(args.model_repository), profiles=Path(args.profiles),
                         device=args.device, policy=args.policy, window_s=args.window_s, slo_ms=args.slo_ms,
                         run_dir=Path(args.run_dir), host=args.host, grpc_port=args.grpc_port,
                         orchestrator_port=args.orchestrator_port, prometheus_port=args.prometheus_port,
                         scrape_interval_s=args.scrape_interval_s, restart_delay_s=args.restart_delay_s)


def cmd_run(args: argparse.Namespace) -> int:
    """Foreground: start, write cluster.json, supervise until SIGTERM/SIGINT, stop everything."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(config_from(args))
    state_file = Path(args.run_dir) / "cluster.json"
    try:
        cluster.start()
        state_file.write_text(json.dumps({**cluster.state(), "supervisor_pid": os.getpid(), "serving": False}, indent=1))
        cluster.wait_serving(args.ready_timeout_s)
        state_file.write_text(json.dumps({**cluster.state(), "supervisor_pid": os.getpid(), "serving": True}, indent=1))
        print(f"cluster serving: gRPC clients -> {cluster.balancer_url}", flush=True)
        while not stop.wait(2.0):  # keep cluster.json's pids current after restarts
            state_file.write_text(json.dumps({**cluster.state(), "supervisor_pid": os.getpid(), "serving": True},
                                             indent=1))
    finally:
        cluster.stop()
        state_file.unlink(missing_ok=True)
    return 0


def cmd_start(args: argparse.Namespace, argv: list[str]) -> int:
    run_dir = Path(args.run_dir)
    state_file = run_dir / "cluster.json"
    if state_file.exists() and pid_alive(json.loads(state_file.read_text()).get("supervisor_pid", -1)):
        print(f"a cluster is already running (see {state_file}); `make cluster-stop` first")
        return 1
    run_dir.mkdir(parents=True, exist_ok=True)
    state_file.unlink(missing_ok=True)
    out = open(run_dir / "supervisor.out", "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen([sys.executable, "-m", "deploy", "run", *argv[1:]], stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + args.ready_timeout_s + 120
    while time.monotonic() < deadline:
        if p.poll() is not None:
            print(f"the cluster supervisor exited ({p.returncode}); see {run_dir / 'supervisor.out'}")
            return 1
        if state_file.exists() and json.loads(state_file.read_text()).get("serving"):
            st = json.loads(state_file.read_text())
            print(f"cluster serving ({len(st['nodes'])} nodes): gRPC {st['balancer']} (HAProxy), "
                  f"Prometheus {st['prometheus']}, orchestrator {st['orchestrator']}/metrics; "
                  f"details in {state_file}; `make cluster-stop` to stop")
            return 0
        time.sleep(1.0)
    print(f"the cluster is not serving after {args.ready_timeout_s:.0f} s; see {run_dir}/supervisor.out; stopping it")
    terminate(p.pid, timeout_s=60)
    return 1


def cmd_stop(args: argparse.Namespace) -> int:
    state_file = Path(args.run_dir) / "cluster.json"
    if not state_file.exists():
        print("no cluster.json; nothing to stop")
        return 0
    pid = json.loads(state_file.read_text()).get("supervisor_pid", -1)
    terminate(pid, timeout_s=90)
    state_file.unlink(missing_ok=True)
    print(f"cluster stopped (supervisor pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state_file = Path(args.run_dir) / "cluster.json"
    if not state_file.exists():
        print("no cluster running (no cluster.json)")
        return 1
    print(state_file.read_text())
    return 0


def parser() -> argparse.ArgumentParser:
    d = ClusterConfig()
    ap = argparse.ArgumentParser(prog="python -m deploy", description="A Triton cluster on one machine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "start"):
        r = sub.add_parser(name, help="start the cluster" + (" detached" if name == "start" else " in the foreground"))
        r.add_argument("--nodes", type=int, default=d.nodes)
        r.add_argument("--slots-per-node", type=int, default=d.slots_per_node, help="CPU slots standing in for GPUs")
        r.add_argument("--model-repository", default=str(d.model_repository))
        r.add_argument("--profiles", default=str(d.profiles))
        r.add_argument("--device", default=d.device)
        r.add_argument("--policy", default=d.policy)
        r.add_argument("--window-s", type=float, default=d.window_s)
        r.add_argument("--slo-ms", type=float, default=d.slo_ms)
        r.add_argument("--host", default=d.host)
        r.add_argument("--grpc-port", type=int, default=d.grpc_port, help="the balancer's client port")
        r.add_argument("--orchestrator-port", type=int, default=d.orchestrator_port, help="0: a free port")
        r.add_argument("--prometheus-port", type=int, default=d.prometheus_port)
        r.add_argument("--scrape-interval-s", type=float, default=d.scrape_interval_s)
        r.add_argument("--restart-delay-s", type=float, default=d.restart_delay_s)
        r.add_argument("--ready-timeout-s", type=float, default=600.0)
        r.add_argument("--run-dir", default=str(RUN_DIR))
    for name in ("stop", "status"):
        sub.add_parser(name).add_argument("--run-dir", default=str(RUN_DIR))
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    return {"run": lambda: cmd_run(args), "start": lambda: cmd_start(args, argv),
            "stop": lambda: cmd_stop(args), "status": lambda: cmd_status(args)}[args.cmd]()


if __name__ == "__main__":
    sys.exit(main())
