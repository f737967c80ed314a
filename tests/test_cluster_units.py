"""Many nodes without shared storage, piece by piece (no Triton): the versioned control channel and
its HTTP endpoint, the node agent, the orchestrator's metrics, HAProxy's runtime API and the
rendered HAProxy / Prometheus configurations (checked by the real binaries)."""
from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from deploy import haproxy, prometheus
from deploy.agent import ControlAgent
from deploy.cluster import node_repository
from orchestrator.balancer import HAProxyRuntime, parse_stat, server_name, weight_commands
from orchestrator.channel import ControlChannel, NodeAck, stale_nodes
from orchestrator.endpoint import OrchestratorEndpoint
from orchestrator.server import free_port
from orchestrator.telemetry import OrchestratorMetrics
from serving.control import ControlState, read_control

KEY = "x-diffserve-admin:k"
A, B = "10.0.0.1:8001", "10.0.0.2:8001"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- the channel ------------------------------------------------------------------------------
def test_a_node_is_stale_once_it_has_missed_the_current_version_for_stale_after_s():
    acks = {A: NodeAck(3, 0.0), B: NodeAck(2, 0.0)}
    assert stale_nodes(3, published_s=10.0, acks=acks, nodes=[A, B], now_s=11.0, stale_after_s=3.0) == []
    assert stale_nodes(3, published_s=10.0, acks=acks, nodes=[A, B], now_s=13.5, stale_after_s=3.0) == [B]
    assert stale_nodes(3, 10.0, {A: NodeAck(3, 0.0)}, [A, B], 20.0, 3.0) == [B]  # never heard from
    assert stale_nodes(None, 0.0, {}, [A, B], 99.0, 3.0) == []  # nothing published yet


def test_poll_answers_at_once_for_a_new_version_and_waits_while_the_node_is_current():
    ch = ControlChannel([A, B], stale_after_s=3.0)
    assert ch.poll(A, None, wait_s=0.0) is None  # no state yet
    ch.publish(ControlState(version=1, threshold=0.3))
    assert ch.poll(A, None, wait_s=5.0).version == 1  # new to the node: no wait
    t0 = time.monotonic()
    assert ch.poll(A, 1, wait_s=0.3).version == 1  # current: waits the whole long poll
    assert time.monotonic() - t0 >= 0.25
    threading.Timer(0.2, ch.publish, args=(ControlState(version=2, threshold=0.4),)).start()
    t0 = time.monotonic()
    assert ch.poll(A, 1, wait_s=10.0).version == 2  # woken by the publish, not by the timeout
    assert time.monotonic() - t0 < 5.0
    assert ch.versions() == {A: 1, B: None}


def test_poll_refuses_unknown_nodes_and_bad_waits_naming_the_value():
    ch = ControlChannel([A])
    with pytest.raises(ValueError, match=r"node='10.9.9.9:8001' is not one of"):
        ch.poll("10.9.9.9:8001", None, 1.0)
    with pytest.raises(ValueError, match=r"wait_s=61"):
        ch.poll(A, None, 61)


def test_window_record_reports_versions_and_stale_nodes():
    clock = FakeClock()
    ch = ControlChannel([A, B], stale_after_s=2.0, clock=clock)
    ch.publish(ControlState(version=5))
    ch.poll(A, 5, wait_s=0.0)
    ch.poll(B, 4, wait_s=0.0)
    clock.t += 2.5
    rec: dict = {}
    ch.window_finished(rec)
    assert rec["control_versions"] == {A: 5, B: 4} and rec["stale_nodes"] == [B]


# --- the endpoint and the agent ----------------------------------------------------------------
@pytest.fixture
def endpoint():
    ch = ControlChannel([A, B], stale_after_s=1.0)
    ep = OrchestratorEndpoint(ch, OrchestratorMetrics([A, B]), port=0, admin_key=KEY).start()
    yield ep
    ep.stop()


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("query, headers, status, words", [
    (f"node={A}", {}, 401, ["admin key"]),
    (f"node={A}&have=seven", {"x-diffserve-admin": "k"}, 400, ["have='seven'", "integer"]),
    (f"node={A}&wait_s=-1", {"x-diffserve-admin": "k"}, 400, ["wait_s=-1"]),
    ("node=10.9.9.9:1", {"x-diffserve-admin": "k"}, 404, ["not one of"]),
    ("have=1", {"x-diffserve-admin": "k"}, 400, ["node=<grpc url> is required"]),
    (f"node={A}&wait_s=0", {"x-diffserve-admin": "k"}, 204, []),
])
def test_control_endpoint_answers_bad_requests_with_a_clear_status(endpoint, query, headers, status, words):
    code, body = _get(f"{endpoint.url}/control?{query}", headers)
    assert code == status
    for w in words:
        assert w in body


def test_agent_swaps_whole_states_in_and_keeps_the_last_one_when_the_orchestrator_is_gone(endpoint, tmp_path):
    control = tmp_path / "node" / "control.json"
    agent = ControlAgent(endpoint.url, A, control, admin_key=KEY, wait_s=0.2, retry_s=0.05)
    assert agent.poll_once() is False and not control.exists()  # nothing published yet
    endpoint.channel.publish(ControlState(version=4, threshold=0.7, batch_size={"light": 2}))
    assert agent.poll_once() is True
    assert read_control(control) == ControlState(version=4, threshold=0.7, batch_size={"light": 2})
    assert agent.poll_once() is False  # unchanged: nothing rewritten, and now acknowledged
    assert endpoint.channel.versions()[A] == 4
    endpoint.stop()
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    time.sleep(0.5)
    stop.set()
    runner.join(timeout=10)
    assert agent.last_error and read_control(control).version == 4  # the node keeps its last whole state
    assert ControlAgent("http://127.0.0.1:1", A, control).version == 4  # a restarted agent knows what it holds


def test_metrics_endpoint_serves_what_the_loop_recorded(endpoint):
    endpoint.metrics.observe({"event": "window", "demand_qps": 4.5, "observation": {"arrival_rate_qps": 3.0},
                              "plan": {"workers": {"light": 3, "heavy": 3}, "batch_size": {"light": 4, "heavy": 2},
                                       "threshold": 0.5, "solve_time_ms": 1.25, "light_fraction": 0.6},
                              "actions": [{"op": "set_instances", "result": "ok"},
                                          {"op": "unload", "result": "failed: boom"}],
                              "control": {"version": 7}, "down": [B], "placement": {A: {"light": [0], "heavy": [1]}},
                              "routing_weights": {A: 100, B: 0}, "control_versions": {A: 7, B: None},
                              "stale_nodes": [B], "node_errors": {B: "refused"}})
    endpoint.metrics.observe({"event": "error", "error": "x"})
    code, text = _get(f"{endpoint.url}/metrics")
    assert code == 200
    for line in ['diffserve_orchestrator_demand_qps 4.5', 'diffserve_orchestrator_threshold 0.5',
                 'diffserve_orchestrator_plan_workers{model="heavy"} 3', 'diffserve_orchestrator_solve_time_ms 1.25',
                 'diffserve_orchestrator_actions_total{op="unload",result="failed"} 1',
                 'diffserve_orchestrator_failures_total{kind="action"} 1',
                 'diffserve_orchestrator_failures_total{kind="window"} 1',
                 'diffserve_orchestrator_failures_total{kind="node"} 1',
                 f'diffserve_orchestrator_node_up{{node="{B}"}} 0', f'diffserve_orchestrator_routing_weight{{node="{A}"}} 100',
                 f'diffserve_orchestrator_node_workers{{model="light",node="{A}"}} 1',
                 f'diffserve_orchestrator_node_control_version{{node="{B}"}} -1',
                 f'diffserve_orchestrator_node_stale{{node="{B}"}} 1', 'diffserve_orchestrator_control_version 7']:
        assert line in text.splitlines(), line


# --- HAProxy and Prometheus ----------------------------------------------------------------------
def test_weight_commands_name_each_node_and_clip_to_haproxys_range():
    assert weight_commands("triton", {A: 60, B: 300}) == [f"set weight triton/{server_name(A)} 60",
                                                          f"set weight triton/{server_name(B)} 256"]
    with pytest.raises(ValueError, match="-1"):
        weight_commands("triton", {A: -1})
    with pytest.raises(ValueError, match="CSV header"):
        parse_stat("garbage", "triton")


def test_rendered_configs_pass_haproxy_and_promtool(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy.render_config([haproxy.Backend(A, 8000), haproxy.Backend(B, 8000)], "127.0.0.1:9001",
                                         str(tmp_path / "h.sock"), "127.0.0.1:9101"))
    ok, out = haproxy.check_config(cfg)
    assert ok, out
    prom = tmp_path / "prometheus.yml"
    prom.write_text(prometheus.render_config({A: "10.0.0.1:8002"}, "127.0.0.1:8003", "127.0.0.1:9101", 1.0))
    ok, out = prometheus.check_config(prom)
    assert ok, out
    prom.write_text(prom.read_text().replace("scrape_interval: 1000ms", "scrape_interval: often"))
    assert not prometheus.check_config(prom)[0]  # the check can fail


def test_weights_are_applied_live_through_haproxys_runtime_socket(tmp_path):
    sock = str(tmp_path / "h.sock")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy.render_config([haproxy.Backend("127.0.0.1:1", 2), haproxy.Backend("127.0.0.1:3", 4)],
                                         f"127.0.0.1:{free_port()}", sock, f"127.0.0.1:{free_port()}"))
    proc = subprocess.Popen(haproxy.command(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        runtime = HAProxyRuntime(sock)
        deadline = time.monotonic() + 10
        while not (tmp_path / "h.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        runtime.weights_published({"127.0.0.1:1": 70, "127.0.0.1:3": 0}, version=1)
        assert runtime.last_error is None
        servers = runtime.servers()
        assert {n: servers[server_name(n)]["weight"] for n in ("127.0.0.1:1", "127.0.0.1:3")} == \
            {"127.0.0.1:1": "70", "127.0.0.1:3": "0"}
        assert proc.poll() is None  # applied without a restart
        bad = HAProxyRuntime(sock, backend="nope")
        bad.weights_published({"127.0.0.1:1": 1}, version=2)
        assert "refused" in bad.last_error  # recorded, not raised: the loop keeps planning
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_node_repository_points_every_model_at_the_node_control_file(tmp_path):
    src = tmp_path / "src"
    (src / "light" / "1").mkdir(parents=True)
    (src / "light" / "1" / "model.py").write_text("x = 1\n")
    (src / "light" / "config.pbtxt").write_text('parameters [ { key: "control_file" value: { string_value: "runs/c.json" } } ]\n')
    (src / "standin.py").write_text("")
    dest = node_repository(src, tmp_path / "node-0" / "repo", tmp_path / "node-0" / "control.json")
    assert f'string_value: "{tmp_path / "node-0" / "control.json"}"' in (dest / "light" / "config.pbtxt").read_text()
    assert (dest / "light" / "1").is_symlink() and (dest / "standin.py").is_symlink()


def test_cascade_shows_the_control_version_only_when_it_changes():
    from tests.test_cascade_routing import _FakePb  # noqa: PLC0415
    from serving.triton.metrics import CascadeMetrics  # noqa: PLC0415

    m = CascadeMetrics(_FakePb, "cascade")
    for v in (3, 3, 4):
        m.show_control_version(v)
    assert m._control_version.values == [3.0, 4.0]



def test_policy_args_from_the_command_line_are_json_values_and_malformed_ones_are_refused():
    from orchestrator.__main__ import policy_kwargs  # noqa: PLC0415

    assert policy_kwargs(["light_workers=3", "threshold=0.5", "name=x"]) == {"light_workers": 3, "threshold": 0.5,
                                                                             "name": "x"}
    with pytest.raises(SystemExit, match="'light_workers'.*KEY=VALUE"):
        policy_kwargs(["light_workers"])
