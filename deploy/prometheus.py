"""Prometheus (the distribution's package) for the cluster: its configuration (pure), how to
start it, and a query through its HTTP API.

Jobs: ``triton`` (every node's metrics port, each target labelled ``node="<grpc url>"`` like the
orchestrator's own per-node series), ``orchestrator`` (its ``/metrics``), ``haproxy`` (the
balancer's exporter).
"""
from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import yaml


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise FileNotFoundError("prometheus is not installed; run `make setup` (apt-get install prometheus)")
    return path


def render_config(nodes: Mapping[str, str], orchestrator: str, haproxy: str | None, scrape_interval_s: float = 2.0) -> str:
    """prometheus.yml text. ``nodes``: grpc url -> Triton metrics ``host:port``; ``orchestrator``
    and ``haproxy``: ``host:port`` of their metrics endpoints."""
    if not scrape_interval_s > 0:
        raise ValueError(f"scrape_interval_s={scrape_interval_s}; expected > 0")
    interval = f"{int(scrape_interval_s * 1000)}ms"
    jobs: list[dict[str, Any]] = [
        {"job_name": "triton", "static_configs": [{"targets": [m], "labels": {"node": url}}
                                                  for url, m in sorted(nodes.items())]},
        {"job_name": "orchestrator", "static_configs": [{"targets": [orchestrator]}]},
    ]
    if haproxy:
        jobs.append({"job_name": "haproxy", "static_configs": [{"targets": [haproxy]}]})
    doc = {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": jobs}
    return "# Rendered by deploy/prometheus.py\n" + yaml.safe_dump(doc, sort_keys=False)


def command(config_path: str | Path, data_dir: str | Path, listen: str) -> list[str]:
    return [prometheus_binary(), f"--config.file={config_path}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={listen}", "--storage.tsdb.retention.time=2d", "--log.level=warn"]


def query(base_url: str, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """An instant query through the HTTP API: the ``result`` vector (``[{metric, value}]``).

    Raises RuntimeError when Prometheus answers an error (e.g. a bad expression)."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - local URL
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus query {promql!r}: {body.get('error', body)}")
    return body["data"]["result"]


def check_config(config_path: str | Path) -> tuple[bool, str]:
    """``promtool check config``: (valid, its output)."""
    import subprocess  # noqa: PLC0415

    promtool = shutil.which("promtool") or str(Path(prometheus_binary()).with_name("promtool"))
    out = subprocess.run([promtool, "check", "config", str(config_path)], capture_output=True, text=True, timeout=30)
    return out.returncode == 0, (out.stdout + out.stderr).strip()
