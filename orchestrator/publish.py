"""Files the orchestrator publishes for the outside world (atomic writes, temp file + rename).

- routing weights (JSON): ``{"version": n, "updated_unix_s": t, "cluster_weights": {url: w}}``,
  integer weights per node for a standard weighted gRPC load balancer (docs/deploy.md);
- optionally an Envoy route configuration as a file-based RDS ``DiscoveryResponse``: Envoy
  watches the file (``path_config_source``) and applies new weights without a restart;
- JSON-lines log records (one per control window);
- the orchestrator's own metrics (Prometheus text file: windows, heals, server restarts).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cluster_name(url: str) -> str:
    """Envoy cluster name of a node (``host:port`` -> ``triton_host_port``)."""
    return "triton_" + "".join(c if c.isalnum() else "_" for c in url)


def weights_document(weights: Mapping[str, int], version: int, updated_unix_s: float) -> dict[str, Any]:
    """The routing-weights JSON document. Raises ValueError for a negative weight."""
    for url, w in weights.items():
        if int(w) < 0:
            raise ValueError(f"routing weight of {url} is {w}; expected an integer >= 0")
    return {"version": version, "updated_unix_s": round(updated_unix_s, 3),
            "cluster_weights": {url: int(w) for url, w in sorted(weights.items())},
            "envoy_clusters": {url: cluster_name(url) for url in sorted(weights)}}


def envoy_route_config(weights: Mapping[str, int], version: int, route_name: str = "diffserve") -> dict[str, Any]:
    """A file-based RDS ``DiscoveryResponse`` routing all gRPC traffic over weighted clusters.

    Envoy requires a positive total weight; when every node has weight 0 (nothing placed yet)
    all get weight 1 so that requests still reach a server and get an explicit error.
    """
    items = sorted(weights.items())
    if not items:
        raise ValueError("envoy_route_config needs at least one node")
    if sum(int(w) for _, w in items) <= 0:
        items = [(u, 1) for u, _ in items]
    clusters = [{"name": cluster_name(u), "weight": int(w)} for u, w in items if int(w) > 0]
    return {
        "version_info": str(version),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": route_name,
            "virtual_hosts": [{
                "name": "triton", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"},
                            "route": {"weighted_clusters": {"clusters": clusters}, "timeout": "0s"}}],
            }],
        }],
    }


def publish_weights(weights: Mapping[str, int], version: int, updated_unix_s: float,
                    weights_path: str | Path, envoy_rds_path: str | Path | None = None) -> None:
    """Write the weights JSON (and the Envoy RDS file when a path is given)."""
    atomic_write_text(weights_path, json.dumps(weights_document(weights, version, updated_unix_s), indent=1))
    if envoy_rds_path is not None:
        atomic_write_text(envoy_rds_path, json.dumps(envoy_route_config(weights, version), indent=1))


class JsonlLog:
    """Append-only JSON-lines log (one flushed line per record)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


METRICS_HELP = {
    "windows_total": "Control windows stepped",
    "heals_total": "Stage-model reloads that replaced broken instances",
    "server_restarts_total": "tritonserver restarts after it exited (supervised server)",
    "server_restart_failures_total": "tritonserver restarts that failed (retried after a backoff)",
    "shm_regions_removed_total": "/dev/shm regions of dead servers removed",
    "last_server_restart_seconds": "Duration of the last tritonserver restart, until models re-applied",
}


def metrics_text(values: Mapping[str, float], prefix: str = "diffserve_orchestrator_") -> str:
    """Prometheus text exposition of the orchestrator's counters (``*_total``) and gauges."""
    lines = []
    for name, value in sorted(values.items()):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {prefix}{name} {METRICS_HELP.get(name, name)}", f"# TYPE {prefix}{name} {kind}",
                  f"{prefix}{name} {float(value):g}"]
    return "\n".join(lines) + "\n"


def write_metrics(path: str | Path, values: Mapping[str, float]) -> None:
    """Write the metrics file (atomic; node_exporter's textfile collector can serve it)."""
    atomic_write_text(path, metrics_text(values))
