"""Shared helpers of the orchestrator tests: a stand-in cascade deployment and an orchestrator over it."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from orchestrator.control import ControlConfig, DemandEstimator
from orchestrator.health import Backoff
from orchestrator.loop import LoopConfig, Orchestrator
from orchestrator.node import TritonNode
from orchestrator.placement import NodeSpec
from orchestrator.server import admin_headers
from planner import data, make_policy
from tests.conftest import ASSETS, CASCADE_MODELS, build_cascade_repository

ADMIN_KEY = "x-diffserve-admin:test-key"
PROFILES = ASSETS / "orchestrator_profiles"
# Per-chunk sleeps of the stand-in stages (the test profile in PROFILES assumes these).
DELAYS_MS = {"light": 60, "discriminator": 10, "heavy": 250}
EASY, HARD = "a red circle", "a hard scene of many things"


def build_repository(tmp: Path) -> tuple[Path, Path]:
    """Stand-in stages + the real cascade model, with the test delays; returns (repo, control file)."""
    control = tmp / "control.json"
    repo = build_cascade_repository(tmp / "repo", control)
    for stage, ms in DELAYS_MS.items():
        cfg = repo / stage / "config.pbtxt"
        cfg.write_text(re.sub(r'(key: "delay_ms" value: \{ string_value: )"[^"]*"', rf'\1"{ms}"', cfg.read_text()))
    return repo, control


def start_server(factory, repo: Path, **kw):
    return factory(repo, load_models=CASCADE_MODELS, restricted_key=ADMIN_KEY, **kw)


def make_orchestrator(servers, tmp: Path, policy: str = "diffserve", slots: int = 3, window_s: float = 1.0,
                      policy_kw: dict | None = None, backoff: Backoff = Backoff(1.0, 8.0), **loop_kw) -> Orchestrator:
    """An orchestrator over ``servers`` (each a node with ``slots`` CPU slots), logging under ``tmp``."""
    nodes = [TritonNode(NodeSpec(s.grpc_url, "cpu", tuple(range(slots))), s.metrics_url, admin_key=ADMIN_KEY)
             for s in servers]
    profiles, deferral, quality = data.load_calibration(PROFILES, "cpu")
    control = ControlConfig(models=profiles, slo_ms=2000.0, num_workers=slots * len(servers), deferral=deferral,
                            quality=quality, window_s=window_s)
    cfg = LoopConfig(window_s=window_s, slo_ms=2000.0, log_path=tmp / "orch.jsonl",
                     weights_path=tmp / "weights.json", backoff=backoff, **loop_kw)
    return Orchestrator(nodes, control, make_policy(policy, **(policy_kw or {})), cfg,
                        estimator=DemandEstimator(alpha=0.7, overprovision=1.2, initial_qps=2.0))


def instance_counts(server, models=("light", "heavy")) -> dict[str, int]:
    """Instances Triton runs per model (0 when not loaded), read with the admin key."""
    client = server.grpc_client()
    out = {}
    try:
        for m in models:
            if not client.is_model_ready(m):
                out[m] = 0
                continue
            cfg = client.get_model_config(m, headers=admin_headers(ADMIN_KEY), as_json=True)["config"]
            out[m] = sum(int(g.get("count", 1)) for g in cfg.get("instance_group", []))
    finally:
        client.close()
    return out


def stub_pids(server, model: str) -> list[int]:
    """PIDs of the Python-backend stub processes serving ``model`` on ``server``."""
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(server.process.pid)], capture_output=True,
                         text=True, check=True).stdout
    return sorted(int(line.split()[0]) for line in out.splitlines() if f"/{model}/1/model.py" in line)


__all__ = ["ADMIN_KEY", "EASY", "HARD", "admin_headers", "build_repository", "instance_counts", "make_orchestrator",
           "start_server", "stub_pids"]


def step_window(orch, window_s: float = 1.0) -> dict:
    """One orchestrator step, then sleep out the rest of a ``window_s`` window; returns its record."""
    t0 = time.monotonic()
    rec = orch.step()
    time.sleep(max(0.0, window_s - (time.monotonic() - t0)))
    return rec
