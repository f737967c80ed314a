"""One node's Triton in the foreground, for a container (Kubernetes) or a plain host:

    DIFFSERVE_ADMIN_KEY=... python -m deploy.node --model-repository /models \\
        --control-file /var/run/diffserve/control.json --workdir /var/run/diffserve --host 0.0.0.0

It links the (read-only) model repository into ``<workdir>/repository`` with every model's
``control_file`` pointed at the node-local control file that the node's agent
(:mod:`deploy.agent`) writes, starts tritonserver through :mod:`orchestrator.server` (which
handles the Python-backend stub's environment traps) with the model-control and statistics
protocols restricted to the admin key, and stays until tritonserver exits or SIGTERM arrives.
No model is loaded at start: the orchestrator adopts the node and loads what the plan places.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from deploy.cluster import node_repository
from orchestrator.server import TritonServer, TritonServerConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.node", description=__doc__.split("\n")[0])
    ap.add_argument("--model-repository", required=True)
    ap.add_argument("--control-file", required=True, help="node-local control file (the agent writes it)")
    ap.add_argument("--workdir", required=True, help="writable folder for the linked repository and the log")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--admin-key", default=os.environ.get("DIFFSERVE_ADMIN_KEY", ""), help="'header:value'")
    ap.add_argument("--startup-timeout-s", type=float, default=600.0)
    args = ap.parse_args(argv)
    if not args.admin_key:
        raise SystemExit("no admin key: set DIFFSERVE_ADMIN_KEY ('header:value') or pass --admin-key; "
                         "model control must not be open to every client")
    workdir = Path(args.workdir)
    repo = node_repository(Path(args.model_repository), workdir / "repository", Path(args.control_file))
    server = TritonServer(TritonServerConfig(
        model_repository=repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, restricted_key=args.admin_key, startup_timeout_s=args.startup_timeout_s,
        log_path=workdir / "tritonserver.log"))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"tritonserver ready: grpc {server.grpc_url}, http {server.http_url}, metrics {server.metrics_url}", flush=True)
    try:
        while not stop.wait(1.0):
            if server.process.poll() is not None:
                print(f"tritonserver exited with {server.process.returncode}:\n{server.log_tail()}", flush=True)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
