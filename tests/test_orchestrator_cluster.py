"""Many nodes (one tritonserver each): one global plan spread over the nodes, per-node routing
weights published as JSON and as an Envoy route config, a node that dies gets weight 0."""
from __future__ import annotations

import json

import pytest

from benchmarks.live.replay import constant_rate, replay
from tests.orchestrator_support import (EASY, HARD, build_repository, instance_counts, make_orchestrator, start_server,
                                        step_window)

pytestmark = pytest.mark.triton


def test_global_plan_is_split_over_nodes_with_weights_and_a_dead_node_gets_none(triton_server_factory, tmp_path):
    repo, control = build_repository(tmp_path)
    a, b = start_server(triton_server_factory, repo), start_server(triton_server_factory, repo)
    orch = make_orchestrator([a, b], tmp_path, policy="static", slots=2, envoy_rds_path=tmp_path / "rds.json",
                             policy_kw=dict(light_workers=2, heavy_workers=2, light_batch=4, heavy_batch=2, threshold=0.5))
    orch.adopt()
    step_window(orch)
    rec = step_window(orch)
    assert rec["plan"]["workers"] == {"light": 2, "heavy": 2}
    assert instance_counts(a) == instance_counts(b) == {"light": 1, "heavy": 1}
    weights = json.loads((tmp_path / "weights.json").read_text())["cluster_weights"]
    assert weights == {a.grpc_url: 50, b.grpc_url: 50}
    rds = json.loads((tmp_path / "rds.json").read_text())
    route = rds["resources"][0]["virtual_hosts"][0]["routes"][0]["route"]
    assert sorted(c["weight"] for c in route["weighted_clusters"]["clusters"]) == [50, 50]
    # Both nodes serve the cascade under the one control file.
    for server in (a, b):
        assert all(o.ok for o in replay(server.grpc_url, constant_rate(4, 1, [EASY, HARD])))

    b.stop()
    rec = step_window(orch)
    assert b.grpc_url in rec["down"] and b.grpc_url in rec["node_errors"]
    assert sum(rec["plan"]["workers"].values()) == 2  # re-planned for the slots that answer
    assert rec["routing_weights"] == {a.grpc_url: 100, b.grpc_url: 0}
    assert json.loads((tmp_path / "weights.json").read_text())["cluster_weights"][b.grpc_url] == 0
    assert instance_counts(a) == {"light": 1, "heavy": 1}
    assert all(o.ok for o in replay(a.grpc_url, constant_rate(4, 1, [EASY, HARD])))
