"""CLI of the live orchestrator.

    python -m orchestrator run --node 127.0.0.1:8001 --metrics-url http://127.0.0.1:8002/metrics \\
        --cascade configs/tiny.yaml --slots cpu:2 --device cpu --policy diffserve --window-s 5
    python -m orchestrator run --nodes-file nodes.json ...      # many nodes, one Triton each
    python -m orchestrator start ...                            # detached (make serve)
    python -m orchestrator stop                                 # make stop
    python -m orchestrator run --nodes-file nodes.json --http-port 8003 --haproxy-socket haproxy.sock ...
        # + /metrics and /control for node agents on :8003, weights applied live to HAProxy

``nodes.json``: ``[{"url": "10.0.0.1:8001", "metrics_url": "http://10.0.0.1:8002/metrics",
"slots": "gpu:0,1,2,3", "model_repository": "/srv/model_repository"}, ...]`` (``model_repository``:
a copy of what that node serves, default ``--model-repository``). ``--slots auto``: every GPU that
``nvidia-smi -L`` lists and ``CUDA_VISIBLE_DEVICES`` shows (as device ids 0..n-1, the ids
tritonserver started in the same environment uses), else ``cpu:$CPU_SLOTS`` (CPU instance slots
stand in for GPUs). A CPU slot gets a fixed share of the cores, like a GPU: every stage
instance on a CPU node runs ``cores // slots`` intra-op threads (``--cpu-threads``, or
``cpu_threads`` per node in the nodes file, overrides it; docs/orchestrator.md "CPU slots").

SLO: the ``slo_ms`` of the ``--cascade`` YAML (the one that was exported), planned for and written
to the control file; ``--slo-ms`` overrides it explicitly, and the override is logged.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestrator.balancer import HAProxyRuntime
from orchestrator.channel import ControlChannel
from orchestrator.control import ControlConfig, DemandEstimator, choose_slo
from orchestrator.devices import parse_slots, resolve_device
from orchestrator.endpoint import OrchestratorEndpoint
from orchestrator.health import Backoff
from orchestrator.loop import RUNS, LoopConfig, Orchestrator
from orchestrator.node import TritonNode
from orchestrator.placement import NodeSpec
from orchestrator.server import PROJECT_ROOT, pid_alive, terminate
from orchestrator.supervise import ServerSupervisor
from orchestrator.telemetry import OrchestratorMetrics
from serving.config import load_cascade

PROFILES_ROOT = PROJECT_ROOT / "profiles"


def build_nodes(args: argparse.Namespace) -> list[TritonNode]:
    """The nodes named by ``--node``/``--metrics-url`` or ``--nodes-file`` (SystemExit when none)."""
    if args.nodes_file:
        entries = json.loads(Path(args.nodes_file).read_text())
    else:
        if len(args.metrics_url) != len(args.node):
            raise SystemExit(f"got {len(args.node)} --node and {len(args.metrics_url)} --metrics-url; expected one each")
        entries = [{"url": u, "metrics_url": m, "slots": args.slots} for u, m in zip(args.node, args.metrics_url)]
    if not entries:
        raise SystemExit("no node: pass --node/--metrics-url or --nodes-file")
    nodes = []
    for e in entries:
        kind, slots = parse_slots(e.get("slots", args.slots), args.cpu_slots)
        threads = e.get("cpu_threads", args.cpu_threads)
        nodes.append(TritonNode(NodeSpec(e["url"], kind, slots), e["metrics_url"], admin_key=args.admin_key or None,
                                model_repository=e.get("model_repository", args.model_repository),
                                cpu_threads=None if threads is None else int(threads)))
    return nodes


def hybrid_calibration(policy: str, profiles_dir: str | Path, light: str, heavy: str) -> dict:
    """The ``hybrid`` policy's calibration as ControlConfig fields: ``hybrid_surfaces`` for the pair
    (light, heavy) and the ``router`` curve from ``profiles_dir`` (``make calibrate`` writes them
    when the repository has a router). Other policies plan without a router: {}. SystemExit
    naming the missing or bad file and ``make calibrate``."""
    if policy != "hybrid":
        return {}
    from planner.hybrid_data import HYBRID_SURFACE_JSON, ROUTER_CURVE_CSV, load_hybrid_calibration  # noqa: PLC0415

    d = Path(profiles_dir)
    missing = [str(d / f) for f in (HYBRID_SURFACE_JSON, ROUTER_CURVE_CSV) if not (d / f).is_file()]
    if missing:
        raise SystemExit(f"--policy hybrid needs {' and '.join(missing)} (no such file); run `make calibrate` "
                         "on a repository exported with a prompt router (`router:` in the cascade YAML, `make export`)")
    try:
        surface, curve = load_hybrid_calibration(d)
    except ValueError as exc:
        raise SystemExit(f"--policy hybrid: {exc}; re-run `make calibrate`") from None
    return {"hybrid_surfaces": {(light, heavy): surface}, "router": curve}


def profiles_dir_of(args: argparse.Namespace, cascade_name: str) -> str:
    return args.profiles or str(PROFILES_ROOT / cascade_name)


def build(args: argparse.Namespace, hooks: tuple = ()) -> Orchestrator:
    from planner import data, make_policy  # noqa: PLC0415

    try:
        cascade = load_cascade(args.cascade)
        slo = choose_slo(cascade.slo_ms, cascade.source, args.slo_ms)
    except ValueError as exc:  # ConfigError included
        raise SystemExit(str(exc)) from None
    nodes = build_nodes(args)
    profiles_dir = profiles_dir_of(args, cascade.name)
    profiles, deferral, quality = data.load_calibration(profiles_dir, resolve_device(profiles_dir, args.device))
    # The planner keys plans by profile name; the live loop keys them by Triton model name.
    models = (dataclasses.replace(profiles[0], name=args.light_model),
              dataclasses.replace(profiles[-1], name=args.heavy_model))
    total = sum(len(n.spec.slots) for n in nodes)
    control = ControlConfig(models=models, slo_ms=slo.slo_ms, num_workers=total, deferral=deferral,
                            quality=quality, window_s=args.window_s,
                            **hybrid_calibration(args.policy, profiles_dir, args.light_model, args.heavy_model))
    estimator = DemandEstimator(alpha=args.ewma_alpha, overprovision=args.overprovision, initial_qps=args.initial_qps)
    log_dir = Path(args.log_dir)
    cfg = LoopConfig(window_s=args.window_s, light=args.light_model, heavy=args.heavy_model, cascade=args.cascade_model,
                     discriminator=args.discriminator_model or None, slo_source=slo.source,
                     cascade_config_hash=cascade.config_hash,
                     control_path=Path(args.control_file) if args.control_file else None,
                     log_path=log_dir / "orchestrator.jsonl", weights_path=log_dir / "routing_weights.json",
                     metrics_path=log_dir / "metrics.prom",
                     envoy_rds_path=Path(args.envoy_rds) if args.envoy_rds else None,
                     backoff=Backoff(args.backoff_base_s, args.backoff_max_s),
                     health_interval_s=args.health_interval_s if args.health_interval_s > 0 else None)
    supervisor = None
    if args.server_state_dir:
        try:
            supervisor = ServerSupervisor(args.server_state_dir, args.admin_key or None)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    return Orchestrator(nodes, control, make_policy(args.policy, **policy_kwargs(args.policy_arg)), cfg,
                        estimator=estimator, supervisor=supervisor, hooks=hooks)


def policy_kwargs(items: list[str]) -> dict:
    """``["light_workers=3", "threshold=0.5"]`` -> ``{"light_workers": 3, "threshold": 0.5}`` (JSON values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--policy-arg {item!r}; expected KEY=VALUE, e.g. light_workers=3")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def node_urls(args: argparse.Namespace) -> list[str]:
    if args.nodes_file:
        return [e["url"] for e in json.loads(Path(args.nodes_file).read_text())]
    return list(args.node)


def summary(rec: dict) -> str:
    """One human line per window (the JSON line has everything)."""
    if rec.get("event") != "window":
        return json.dumps(rec)[:400]
    obs = rec.get("observation", {})
    plan = rec.get("plan", {})
    acts = [f"{a['model']}@{a['node']}->{a.get('slots')}:{a.get('result', '')[:40]}" for a in rec.get("actions", [])]
    return (f"[window {rec['window']}] rate {obs.get('arrival_rate_qps', '-')} qps, drops {obs.get('drops', '-')}, "
            f"demand {rec.get('demand_qps', '-')} qps -> plan {plan.get('workers')} batch {plan.get('batch_size')} "
            f"t={plan.get('threshold', '-')} ({plan.get('status', rec.get('note', ''))}); actions {acts or 'none'}; "
            f"weights {rec.get('routing_weights', {})}")


def cmd_run(args: argparse.Namespace) -> int:
    hooks: list = []
    channel = metrics = endpoint = None
    if args.http_port >= 0:  # /metrics for Prometheus and /control for the nodes' agents
        channel = ControlChannel(node_urls(args), stale_after_s=args.stale_after_s)
        metrics = OrchestratorMetrics(node_urls(args))
        endpoint = OrchestratorEndpoint(channel, metrics, args.http_host, args.http_port, args.admin_key or None)
        hooks.append(channel)
    if args.haproxy_socket:
        hooks.append(HAProxyRuntime(args.haproxy_socket, args.haproxy_backend))
    orch = build(args, tuple(hooks))
    overridden = orch.config.slo_source.startswith("override")
    print(f"{'WARNING: ' if overridden else ''}planning for slo_ms={orch.control.slo_ms:g} "
          f"({orch.config.slo_source})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    adopted = orch.adopt()
    print(json.dumps(adopted)[:2000], flush=True)
    if adopted.get("warning"):
        print(f"WARNING: {adopted['warning']}", flush=True)
    if endpoint is not None:
        if orch.control_state is not None:  # agents get the adopted state before the first plan
            channel.publish(orch.control_state)
        endpoint.start()
        print(json.dumps({"event": "endpoint", "url": endpoint.url}), flush=True)

    def on_window(rec: dict) -> None:
        if metrics is not None:
            metrics.observe(rec)
        print(summary(rec), flush=True)

    try:
        orch.run(stop, max_windows=args.max_windows, on_window=on_window)
    finally:
        if endpoint is not None:
            endpoint.stop()
    return 0


def cmd_start(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``run`` detached, logging to ``<log-dir>/orchestrator.out``; pid in ``<log-dir>/orchestrator.pid``."""
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    pid_file = log_dir / "orchestrator.pid"
    if pid_file.exists() and pid_alive(int(pid_file.read_text())):
        print(f"orchestrator already running (pid {pid_file.read_text()}); `make stop` first")
        return 1
    try:  # a missing calibration is said here, not only in the detached process's log
        hybrid_calibration(args.policy, profiles_dir_of(args, load_cascade(args.cascade).name), "light", "heavy")
    except ValueError as exc:  # ConfigError included
        raise SystemExit(str(exc)) from None
    run_argv = ["run" if a == "start" else a for a in argv]
    out = open(log_dir / "orchestrator.out", "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen([sys.executable, "-m", "orchestrator", *run_argv], stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
    pid_file.write_text(str(p.pid))
    time.sleep(1.0)
    if p.poll() is not None:
        print(f"orchestrator exited at once ({p.returncode}); see {log_dir / 'orchestrator.out'}")
        return 1
    print(f"orchestrator running (pid {p.pid}); plans logged to {log_dir / 'orchestrator.out'} "
          f"and {log_dir / 'orchestrator.jsonl'}")
    return _wait_cascade_ready(args, p, log_dir / "orchestrator.out", started_unix_s=time.time())


def _first_plan_applied(jsonl: Path, since_unix_s: float) -> bool:
    """Whether the orchestrator log has a window of this run with a plan and its actions done."""
    try:
        lines = jsonl.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if rec.get("event") == "window" and rec.get("plan") and rec.get("t_unix_s", 0.0) >= since_unix_s:
            return True
    return False


def _wait_cascade_ready(args: argparse.Namespace, proc: subprocess.Popen, log: Path, started_unix_s: float) -> int:
    """Block until every node serves: the first plan is applied (its window is logged after its
    loads and the control file) and a request sent as a user sends it (the plan's routing) is
    answered. So a request sent right after ``make serve`` gets an image. Not each branch: a plan
    may serve everything on heavy alone (``quality``/``hybrid`` at low demand), and light is then
    not loaded at all. Returns the exit code for ``start``."""
    import numpy as np  # noqa: PLC0415
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    if args.ready_timeout_s <= 0 or not args.node:
        return 0
    deadline = time.monotonic() + args.ready_timeout_s
    pending = list(args.node)
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"orchestrator exited ({proc.returncode}) before the cascade was serving; see {log}")
            return 1
        if not _first_plan_applied(log.with_name("orchestrator.jsonl"), started_unix_s - 1.0):
            time.sleep(0.5)
            continue
        for url in list(pending):
            try:
                client = grpcclient.InferenceServerClient(url)
                if not client.is_model_ready(args.cascade_model):
                    continue
                prompt = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
                prompt.set_data_from_numpy(np.array([[b"a red circle"]], dtype=object))
                client.infer(args.cascade_model, [prompt])
                pending.remove(url)
            except Exception:  # noqa: BLE001 - not serving yet: keep polling until the deadline
                pass
        time.sleep(0.5)
    if pending:
        print(f"the cascade is not serving on {', '.join(pending)} after {args.ready_timeout_s:.0f} s; see {log}")
        return 1
    print(f"{args.cascade_model} serving on {', '.join(args.node)} (a request answered): send requests now")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    pid_file = Path(args.log_dir) / "orchestrator.pid"
    if not pid_file.exists():
        print("no orchestrator pid file; nothing to stop")
        return 0
    pid = int(pid_file.read_text())
    terminate(pid, timeout_s=15)
    pid_file.unlink()
    print(f"orchestrator (pid {pid}) stopped; Triton keeps serving the last plan until it is stopped")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m orchestrator", description="DiffServe live orchestrator for Triton")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "start"):
        r = sub.add_parser(name, help="run the control loop" + (" detached" if name == "start" else ""))
        r.add_argument("--node", action="append", default=[], help="Triton gRPC host:port (repeatable)")
        r.add_argument("--metrics-url", action="append", default=[], help="its metrics URL (same order)")
        r.add_argument("--nodes-file", help="JSON list of {url, metrics_url, slots} (many nodes)")
        r.add_argument("--slots", default="auto", help="'auto', 'cpu:<n>' or 'gpu:<ids>' (default auto)")
        r.add_argument("--model-repository", default=str(PROJECT_ROOT / "model_repository"),
                       help="the repository the nodes serve (its config.pbtxt files pin a GPU model's first load)")
        r.add_argument("--cpu-slots", type=int, default=int(os.environ.get("CPU_SLOTS", "2")),
                       help="CPU instance slots when --slots auto finds no GPU")
        r.add_argument("--cpu-threads", type=int, default=None,
                       help="intra-op threads per stage instance on CPU nodes (default: cores // the node's "
                            "slots, each slot a fixed share of the cores like a GPU; 0: every core)")
        r.add_argument("--cascade", default="configs/tiny.yaml",
                       help="the cascade YAML that was exported: its slo_ms is the SLO (default configs/tiny.yaml)")
        r.add_argument("--profiles", default="",
                       help="device JSON, deferral and quality curves (default profiles/<cascade name>/)")
        r.add_argument("--device", default="auto", help="profile file name under --profiles ('auto': the only one)")
        r.add_argument("--policy", default="diffserve", help="planner policy (planner.POLICY_NAMES)")
        r.add_argument("--policy-arg", action="append", default=[],
                       help="KEY=VALUE parameter of the policy (repeatable), e.g. light_workers=3 for static")
        r.add_argument("--window-s", type=float, default=5.0)
        r.add_argument("--slo-ms", type=float, default=None,
                       help="override the cascade YAML's slo_ms (logged as an override); default: the YAML's")
        r.add_argument("--ewma-alpha", type=float, default=0.5)
        r.add_argument("--overprovision", type=float, default=1.2)
        r.add_argument("--initial-qps", type=float, default=1.0)
        r.add_argument("--light-model", default="light")
        r.add_argument("--heavy-model", default="heavy")
        r.add_argument("--cascade-model", default="cascade")
        r.add_argument("--discriminator-model", default="discriminator", help="'' to leave it alone")
        r.add_argument("--control-file", default="", help="default: the cascade's control_file parameter")
        r.add_argument("--admin-key", default=os.environ.get("DIFFSERVE_ADMIN_KEY", ""), help="'header:value'")
        r.add_argument("--log-dir", default=str(RUNS))
        r.add_argument("--server-state-dir", default="",
                       help="supervise the tritonserver that `python -m orchestrator.server start` recorded here "
                            "(make serve: runs/server): restart it when it exits and re-apply the plan")
        r.add_argument("--envoy-rds", default="", help="also write an Envoy file-based RDS route config here")
        r.add_argument("--http-port", type=int, default=-1,
                       help="serve /metrics and /control (node agents) on this port; 0: a free one, -1: off")
        r.add_argument("--http-host", default="127.0.0.1", help="bind address of --http-port")
        r.add_argument("--haproxy-socket", default="",
                       help="HAProxy runtime API (unix socket path or host:port): apply routing weights live")
        r.add_argument("--haproxy-backend", default="triton", help="HAProxy backend holding one server per node")
        r.add_argument("--stale-after-s", type=float, default=3.0,
                       help="a node not holding the current control state this long is reported stale")
        r.add_argument("--backoff-base-s", type=float, default=1.0)
        r.add_argument("--backoff-max-s", type=float, default=60.0)
        r.add_argument("--health-interval-s", type=float, default=1.0,
                       help="heal dead/unready models this often between windows (0: once per window)")
        r.add_argument("--max-windows", type=int, default=None)
        r.add_argument("--ready-timeout-s", type=float, default=300.0,
                       help="start: wait this long for the cascade model to be ready (0: do not wait)")
    s = sub.add_parser("stop", help="stop the orchestrator started by `start`")
    s.add_argument("--log-dir", default=str(RUNS))
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.cmd == "run":
        return cmd_run(args)
    if args.cmd == "start":
        return cmd_start(args, argv)
    return cmd_stop(args)


if __name__ == "__main__":
    sys.exit(main())
