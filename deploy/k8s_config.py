"""Render deploy/k8s/config/haproxy.cfg from deploy/k8s/config/nodes.json (one HAProxy server per
Triton pod, named as the orchestrator names it), so the two cannot drift apart:

    python -m deploy.k8s_config          # rewrite the committed file after editing nodes.json

tests/test_k8s_manifests.py fails when the committed file differs from this rendering.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from deploy.haproxy import Backend, render_config

K8S = Path(__file__).resolve().parent / "k8s"


def k8s_haproxy_config(nodes_file: Path = K8S / "config" / "nodes.json") -> str:
    nodes = json.loads(Path(nodes_file).read_text())
    backends = [Backend(n["url"], 8000) for n in nodes]  # the health check asks each pod's HTTP port
    text = render_config(backends, "0.0.0.0:9001", "/var/run/haproxy/admin.sock", "0.0.0.0:9101", dns=True)
    return text.replace("# Rendered by deploy/haproxy.py", "# Rendered by `python -m deploy.k8s_config` (do not edit)", 1)


def main() -> int:
    out = K8S / "config" / "haproxy.cfg"
    out.write_text(k8s_haproxy_config())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
