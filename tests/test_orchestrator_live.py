"""The live loop against a real tritonserver (stand-in stages + the real cascade model, CPU
instance slots standing in for GPUs, 1 s windows): plans become instance groups and control
files, runtime knobs change without reloads, a restarted orchestrator adopts what runs."""
from __future__ import annotations

import json
import threading
import time

import pytest

from benchmarks.live.replay import constant_rate, replay
from orchestrator.server import TritonServer, TritonServerConfig
from tests.conftest import CASCADE_MODELS
from tests.orchestrator_support import (ADMIN_KEY, EASY, HARD, build_repository, instance_counts, make_orchestrator,
                                        step_window, stub_pids)

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("orch_live")
    repo, control = build_repository(tmp)
    server = TritonServer(TritonServerConfig(model_repository=repo, load_models=CASCADE_MODELS,
                                             restricted_key=ADMIN_KEY, log_path=tmp / "tritonserver.log"))
    server.start()
    yield server, control, tmp
    server.stop()


def _steps(orch, n: int, window_s: float = 1.0) -> list[dict]:
    return [step_window(orch, window_s) for _ in range(n)]


def _served(server, prompt: str) -> tuple[str, float]:
    out = replay(server.grpc_url, constant_rate(1, 1, [prompt]))[0]
    assert out.ok, out.error
    return out.served_by, out.latency_ms


def test_each_window_observes_demand_and_applies_the_plan(stack):
    server, control, tmp = stack
    orch = make_orchestrator([server], tmp, policy="static",
                             policy_kw=dict(light_workers=2, heavy_workers=1, light_batch=4, heavy_batch=2, threshold=0.5))
    adopted = orch.adopt()
    assert adopted["nodes"][server.grpc_url]["placement"] == {"light": [0], "heavy": [1]}  # repository defaults
    load = {}
    t = threading.Thread(target=lambda: load.setdefault("out", replay(server.grpc_url, constant_rate(5, 4, [EASY, HARD]))))
    t.start()
    recs = _steps(orch, 4)
    t.join()
    assert recs[0]["note"].startswith("adopted running state")  # no change before one observed window
    obs = [r["observation"] for r in recs[1:]]
    assert sum(o["arrivals"] for o in obs) >= 10 and all(o["arrival_rate_qps"] >= 0 for o in obs)
    # The planner's per-window inputs are measured live (orchestrator.observe.build_observation).
    assert sum(o["model_arrival_qps"]["light"] for o in obs) > 0
    assert all({"light", "heavy"} <= set(o["queue_length"]) for o in obs)
    applied = recs[1]
    assert applied["plan"]["workers"] == {"light": 2, "heavy": 1}
    assert [(a["model"], a["result"]) for a in applied["actions"]] == [("light", "ok")]
    assert instance_counts(server) == {"light": 2, "heavy": 1}
    ctl = json.loads(control.read_text())
    assert (ctl["threshold"], ctl["routing"], ctl["batch_size"]) == (0.5, "cascade",
                                                                      {"light": 4, "heavy": 2, "discriminator": 4})
    assert all(r["actions"] == [] for r in recs[2:])  # a stable plan means no further changes
    assert all(o.ok for o in load["out"]), [o.error for o in load["out"] if not o.ok][:3]
    log = [json.loads(line) for line in (tmp / "orch.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log] == ["adopt", "window", "window", "window", "window"]
    assert json.loads((tmp / "weights.json").read_text())["cluster_weights"] == {server.grpc_url: 100}


def test_threshold_and_batch_sizes_change_at_runtime_without_reloading(stack):
    server, control, tmp = stack
    pids = {m: stub_pids(server, m) for m in ("light", "heavy", "cascade")}
    assert all(pids.values()), pids  # a vacuous comparison would prove nothing
    # Same workers as the previous test's plan, new threshold: everything "hard" goes to heavy.
    orch = make_orchestrator([server], tmp, policy="static",
                             policy_kw=dict(light_workers=2, heavy_workers=1, light_batch=8, heavy_batch=1, threshold=0.5))
    orch.adopt()
    assert _served(server, HARD)[0] == "heavy"  # threshold 0.5 from the previous plan
    recs = _steps(orch, 2)
    assert all(r.get("actions", []) == [] for r in recs)
    assert json.loads(control.read_text())["batch_size"] == {"light": 8, "heavy": 1, "discriminator": 8}
    orch.policy = __import__("planner").make_policy(
        "static", light_workers=2, heavy_workers=1, light_batch=8, heavy_batch=1, threshold=0.0)
    rec = _steps(orch, 1)[0]
    assert rec["actions"] == [] and rec["control"]["threshold"] == 0.0
    time.sleep(0.3)  # models re-read the control file within 100 ms
    assert _served(server, HARD)[0] == "light"
    assert {m: stub_pids(server, m) for m in pids} == pids  # no model was reloaded


def test_restarted_orchestrator_adopts_running_state_instead_of_reloading(stack):
    server, control, tmp = stack
    before = {m: stub_pids(server, m) for m in ("light", "heavy")}
    assert len(before["light"]) == 2 and len(before["heavy"]) == 1
    version = json.loads(control.read_text())["version"]
    orch = make_orchestrator([server], tmp, policy="static",
                             policy_kw=dict(light_workers=2, heavy_workers=1, light_batch=8, heavy_batch=1, threshold=0.0))
    adopted = orch.adopt()
    assert adopted["nodes"][server.grpc_url]["placement"] == {"light": [0, 1], "heavy": [2]}
    assert adopted["control"]["version"] == version and orch.control_state.threshold == 0.0
    recs = _steps(orch, 3)
    assert all(r.get("actions", []) == [] for r in recs)
    assert json.loads(control.read_text())["version"] == version  # the same plan is not rewritten
    assert {m: stub_pids(server, m) for m in before} == before


def test_dynamic_policy_moves_workers_between_models(stack):
    server, control, tmp = stack
    orch = make_orchestrator([server], tmp, policy="clipper-light")
    orch.adopt()
    load = {}
    t = threading.Thread(target=lambda: load.setdefault("out", replay(server.grpc_url, constant_rate(4, 3, [EASY, HARD]))))
    t.start()
    recs = _steps(orch, 3)
    t.join()
    assert instance_counts(server) == {"light": 3, "heavy": 0}  # heavy unloaded, its slot given to light
    assert json.loads(control.read_text())["routing"] == "light"
    assert any(a["op"] == "unload" and a["model"] == "heavy" for r in recs for a in r.get("actions", []))
    assert all(o.ok or o.error_kind == "RequestDropped" for o in load["out"]), [o.error for o in load["out"]][:3]
    orch.policy = __import__("planner").make_policy("diffserve")
    _steps(orch, 2)
    counts = instance_counts(server)
    assert counts["heavy"] >= 1 and counts["light"] >= 1  # heavy reloaded from its remembered config
    assert _served(server, EASY)[0] in ("light", "heavy")
