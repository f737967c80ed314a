"""Many nodes, really run: real tritonservers as nodes, HAProxy in front, node agents pulling the
control state, Prometheus scraping, one node killed mid-trace (deploy/cluster.py, benchmarks/cluster.py).

Stand-in stages (tests/assets/cascade_repository) keep the nodes cheap; everything else is the
shipped code and the distribution's HAProxy and Prometheus binaries (installed by `make setup`).
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest

from benchmarks.cluster import STATIC_3X3, fault_run
from benchmarks.live.workload import TRACE_DIR, build_workload
from client.cascade import CascadeClient
from deploy import prometheus
from deploy.cluster import Cluster, ClusterConfig, node_repository
from deploy.processes import Child
from orchestrator.channel import ControlChannel
from orchestrator.endpoint import OrchestratorEndpoint
from orchestrator.observe import parse_prometheus
from orchestrator.server import PROJECT_ROOT
from orchestrator.telemetry import OrchestratorMetrics
from planner import make_policy
from serving.control import read_control
from tests.conftest import CASCADE_MODELS
from tests.orchestrator_support import ADMIN_KEY, EASY, HARD, PROFILES, build_repository, make_orchestrator, step_window

pytestmark = pytest.mark.triton
KNOWN_ERRORS = {"RequestDropped", "ServerUnavailable", "InferenceFailed", "ModelNotReady", "InvalidRequest"}


def _prompt(pid: int, seed: int, hard_share: float) -> str:
    return HARD if pid % 2 else EASY


def test_three_nodes_behind_haproxy_serve_a_trace_and_survive_a_killed_node(tmp_path):
    repo, _ = build_repository(tmp_path)
    window_s = 1.0
    cfg = ClusterConfig(nodes=3, slots_per_node=2, model_repository=repo, profiles=PROFILES, device="cpu",
                        window_s=window_s, slo_ms=2000.0, run_dir=tmp_path / "cluster", grpc_port=0, prometheus_port=0,
                        restart_delay_s=3.0, policy="static", orchestrator_args=STATIC_3X3)
    workload = build_workload(TRACE_DIR / "maf_2to16qps.txt", 30, 2.0, 6.0, seed=0, prompt=_prompt)
    with Cluster(cfg) as cluster:
        cluster.wait_serving(300)
        killed_group = cluster.nodes[1].server.process.pid  # the server leads its own process group
        run = fault_run(cluster, workload.arrivals, kill_at_s=10.0, node_index=1)
        print(json.dumps(run.summary()))  # the numbers, for the log
        killed = cluster.nodes[1].url
        # Every request got an image or a clear, classified error (none lost, none silent).
        assert len(run.outcomes) == len(workload.arrivals)
        assert all(o.ok or (o.error_kind in KNOWN_ERRORS and o.error) for o in run.outcomes)
        assert run.errors <= 0.1 * len(run.outcomes)
        # All nodes served; the plan spread 3 + 3 instances as 1 + 1 per node, then 2 + 2 on the rest.
        assert all(n > 0 for n in run.per_node_requests.values()), run.per_node_requests
        assert run.plans == {"before": {"light": 3, "heavy": 3}, "while_down": {"light": 2, "heavy": 2},
                             "after": {"light": 3, "heavy": 3}}
        # The balancer took the node out within ~a second; the orchestrator re-planned within one
        # window (+ the time its step takes); the node came back, was adopted and served again.
        assert run.balancer_out_s is not None and run.balancer_out_s < 3.0
        assert run.replanned_s is not None and run.replanned_s <= 2 * window_s
        down = next(w for w in run.windows if killed in w.get("down", []))
        assert down["routing_weights"][killed] == 0 and sum(down["routing_weights"].values()) > 0
        assert run.recovered_s is not None and run.served_after_recovery > 0
        assert run.weights_match_plan  # HAProxy's live weights == the orchestrator's published ones
        with pytest.raises(ProcessLookupError):  # no Python-backend stub of the killed server is left
            os.killpg(killed_group, 0)
        _check_prometheus(cluster)


def _check_prometheus(cluster: Cluster) -> None:
    """Prometheus answers per-node request counts and the orchestrator's threshold."""
    deadline = time.monotonic() + 20
    while True:
        per_node = prometheus.query(cluster.prometheus_url,
                                    'sum by (node) (nv_inference_request_success{model="cascade"})')
        threshold = prometheus.query(cluster.prometheus_url, "diffserve_orchestrator_threshold")
        versions = prometheus.query(cluster.prometheus_url, "diffserve_orchestrator_node_control_version")
        nodes = {r["metric"]["node"] for r in per_node if float(r["value"][1]) > 0}
        if nodes == {n.url for n in cluster.nodes} and threshold or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert nodes == {n.url for n in cluster.nodes}, per_node
    assert [float(r["value"][1]) for r in threshold] == [0.5]
    assert {r["metric"]["node"] for r in versions} == {n.url for n in cluster.nodes}


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - local
        return sum(v for n, _, v in parse_prometheus(r.read().decode()) if n == name)


def test_a_node_that_misses_control_updates_serves_its_last_whole_state_and_is_reported_stale(
        triton_server_factory, tmp_path):
    repo, _ = build_repository(tmp_path)
    servers, agents, controls = [], [], []
    for i in range(2):
        controls.append(tmp_path / f"node-{i}" / "control.json")
        node_repo = node_repository(repo, tmp_path / f"node-{i}" / "repo", controls[i])
        servers.append(triton_server_factory(node_repo, load_models=CASCADE_MODELS, restricted_key=ADMIN_KEY))
    a, b = servers
    static = dict(light_workers=2, heavy_workers=2, light_batch=4, heavy_batch=2)
    orch = make_orchestrator(servers, tmp_path, policy="static", slots=2, policy_kw=dict(static, threshold=0.5),
                             control_path=tmp_path / "orchestrator-control.json")  # its own copy, not a node's
    channel = ControlChannel([a.grpc_url, b.grpc_url], stale_after_s=1.0)
    orch.hooks = (channel,)
    endpoint = OrchestratorEndpoint(channel, OrchestratorMetrics(), port=0, admin_key=ADMIN_KEY).start()
    try:
        for s, control in zip(servers, controls):
            agents.append(Child("agent", [".venv/bin/python", "-m", "deploy.agent", "--orchestrator", endpoint.url,
                                          "--node", s.grpc_url, "--control-file", str(control), "--wait-s", "5"],
                                tmp_path / f"agent-{s.grpc_port}.log", env={"DIFFSERVE_ADMIN_KEY": ADMIN_KEY},
                                cwd=PROJECT_ROOT).start())
        orch.adopt()
        step_window(orch)  # adopted what runs: observes only
        step_window(orch)
        v1 = orch.control_state.version
        _wait_for(lambda: all(c.exists() and read_control(c).version == v1 for c in controls), agents)
        agents[1].signal(signal.SIGSTOP)  # node b's agent stops hearing the orchestrator
        orch.policy = make_policy("static", **static, threshold=0.9)  # a new plan: a new whole state
        step_window(orch)
        v2 = orch.control_state.version
        assert v2 > v1
        _wait_for(lambda: read_control(controls[0]).version == v2, agents)
        time.sleep(1.2)  # past stale_after_s
        rec = step_window(orch)
        assert rec["stale_nodes"] == [b.grpc_url] and rec["control_versions"] == {a.grpc_url: v2, b.grpc_url: v1}
        # b keeps serving, with its last whole state (threshold 0.5, version v1); a with the new one.
        with CascadeClient(b.grpc_url, timeout_s=30) as client:
            assert client.generate(EASY, seed=1).threshold == pytest.approx(0.5)
        with CascadeClient(a.grpc_url, timeout_s=30) as client:
            assert client.generate(EASY, seed=1).threshold == pytest.approx(0.9)
        assert read_control(controls[1]).version == v1
        assert _metric(b.metrics_url, "diffserve_control_version") == v1  # the node reports what it serves
        assert _metric(a.metrics_url, "diffserve_control_version") == v2
        agents[1].signal(signal.SIGCONT)  # reachable again: catches up, no longer stale
        _wait_for(lambda: read_control(controls[1]).version == v2, agents)
        time.sleep(0.3)
        assert step_window(orch)["stale_nodes"] == []
    finally:
        endpoint.stop()
        for agent in agents:
            agent.stop()


def _wait_for(cond, agents, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out; agent logs:\n" + "\n".join(a.log_tail() for a in agents))
