"""HAProxy (the distribution's package) as the cluster's gRPC load balancer: its configuration
(pure) and how to start it.

One frontend takes clients' gRPC (HTTP/2 cleartext) on one port; one backend holds a server per
node, named :func:`orchestrator.balancer.server_name` so that the orchestrator can set each
node's weight live over the runtime socket. ``mode http`` balances every request (HTTP/2
stream), not every connection, so one client channel is spread over all nodes. Health: HAProxy
asks each node's Triton HTTP port whether the cascade model is ready (every 500 ms, down after 2
failures), so a dead node stops getting requests within about a second, before the
orchestrator's next window sets its weight to 0. A request that could not be delivered
(connection refused, or the node died before answering) is retried once on another node.
HAProxy's own Prometheus exporter serves per-node request counts on the stats port. Every node
starts with weight 0: it gets requests only once the orchestrator has placed a cascade there
(a node whose cascade model is ready may still be loading its stages).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Sequence

from orchestrator.balancer import server_name


@dataclasses.dataclass(frozen=True)
class Backend:
    """One node: its gRPC ``host:port`` and the HTTP port its health check asks."""

    grpc_url: str
    http_port: int


def haproxy_binary() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        raise FileNotFoundError("haproxy is not installed; run `make setup` (apt-get install haproxy)")
    return path


def render_config(backends: Sequence[Backend], bind: str, runtime_socket: str, stats_bind: str,
                  backend: str = "triton", model: str = "cascade", timeout_s: int = 300, dns: bool = False) -> str:
    """The haproxy.cfg text. ``bind``/``stats_bind``: ``host:port``; ``runtime_socket``: a unix
    socket path for the runtime API (mode 600: only this user may change weights). ``dns``: node
    names are resolved at run time through the system resolvers (Kubernetes pod names), and a
    name that does not resolve yet leaves its server down instead of failing the start."""
    if not backends:
        raise ValueError("render_config needs at least one backend node")
    resolvers = "\nresolvers dns\n    parse-resolv-conf\n    hold valid 5s\n" if dns else ""
    dns_opts = " resolvers dns init-addr last,libc,none" if dns else ""
    # check-proto must be on each server line: on default-server HAProxy 2.6 checks with h2 (verified)
    servers = "\n".join(f"    server {server_name(b.grpc_url)} {b.grpc_url} check port {b.http_port} check-proto h1"
                        for b in backends)
    return f"""# Rendered by deploy/haproxy.py: gRPC in on {bind}, one server per Triton node.
global
    stats socket {runtime_socket} mode 600 level admin
    stats timeout 30s
    maxconn 4096
{resolvers}
defaults
    mode http
    timeout connect 2s
    # diffusion requests are long; gRPC connections idle between requests
    timeout client {timeout_s}s
    timeout server {timeout_s}s
    timeout http-keep-alive {timeout_s}s
    timeout check 1s
    retries 1
    option redispatch 1
    # only requests no node answered: a refused connection, or a node that died before answering
    retry-on conn-failure empty-response

frontend grpc_in
    bind {bind} proto h2
    default_backend {backend}

frontend stats
    bind {stats_bind}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats

backend {backend}
    balance roundrobin
    option httpchk
    http-check send meth GET uri /v2/models/{model}/ready
    # weight 0 until the orchestrator has placed a cascade on the node and set its weight
    default-server proto h2 inter 500ms fall 2 rise 2 weight 0{dns_opts}
{servers}
"""


def command(config_path: str | Path) -> list[str]:
    """Foreground HAProxy (``-db``) on ``config_path``: the supervisor owns the process."""
    return [haproxy_binary(), "-db", "-f", str(config_path)]


def check_config(config_path: str | Path) -> tuple[bool, str]:
    """``haproxy -c``: (valid, its output)."""
    import subprocess  # noqa: PLC0415

    out = subprocess.run([haproxy_binary(), "-c", "-f", str(config_path)], capture_output=True, text=True, timeout=30)
    return out.returncode == 0, (out.stdout + out.stderr).strip()
