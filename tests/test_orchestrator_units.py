"""Pure parts of the live orchestrator: metrics parsing and window deltas, placement and its
diff, control-file and routing-weight mapping, backoff bookkeeping, published files."""
from __future__ import annotations

import json

import pytest

from orchestrator.devices import parse_slots
from orchestrator.health import Backoff, HealthBook
from orchestrator.observe import ModelCounters, NodeSample, merge, parse_prometheus, sample_from, window_stats
from orchestrator.placement import (NodeSpec, Placement, control_state, diff, instance_group, routing_weights,
                                    slots_from_instance_group, split_workers)
from orchestrator.publish import envoy_route_config, publish_weights, weights_document
from planner.types import Plan

METRICS = """# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="cascade",version="1"} 3
nv_inference_pending_request_count{model="light",version="1"} 1
diffserve_cascade_drops_total{model="cascade"} 4
diffserve_cascade_errors_total{kind="invalid",model="cascade"} 1
diffserve_cascade_errors_total{kind="stage",model="cascade"} 2
"""
STATS = {"model_stats": [
    {"name": "cascade", "inference_stats": {"success": {"count": "10"}, "fail": {"count": "5"},
                                            "queue": {"count": "15", "ns": "30000000"}}},
    {"name": "light", "inference_stats": {"success": {"count": "10"}, "queue": {"count": "10", "ns": "5000000"}}},
]}


def _plan(workers, batch=None, threshold=0.3, light_fraction=0.6, routing="cascade", capacity=None) -> Plan:
    return Plan(policy="t", workers=workers, batch_size=batch or {m: 4 for m in workers}, threshold=threshold,
                capacity_qps=capacity or {m: 10.0 * n for m, n in workers.items()}, expected_fid=1.0,
                light_fraction=light_fraction, slack_ms=1.0, status="OPTIMAL", routing=routing)


def test_prometheus_text_parses_labels_and_values_and_rejects_garbage():
    rows = parse_prometheus(METRICS)
    assert ("nv_inference_pending_request_count", {"model": "cascade", "version": "1"}, 3.0) in rows
    with pytest.raises(ValueError, match="line 2"):
        parse_prometheus("ok 1\nthis is not a metric line at all {\n")


def test_sample_reads_statistics_and_cascade_counters():
    s = sample_from(7.0, STATS, METRICS)
    assert s.models["cascade"] == ModelCounters(success=10, fail=5, queue_count=15, queue_ns=30_000_000, pending=3)
    assert s.drops == 4 and s.errors == 3


def test_window_arrivals_are_finished_plus_queue_growth_and_reload_resets_are_not_negative():
    prev = NodeSample(0.0, {"cascade": ModelCounters(success=10, fail=1, queue_count=11, queue_ns=11_000_000, pending=2),
                            "light": ModelCounters(success=50, fail=0)}, drops=1)
    cur = NodeSample(2.0, {"cascade": ModelCounters(success=16, fail=3, queue_count=19, queue_ns=27_000_000, pending=5),
                           "light": ModelCounters(success=3, fail=2)}, drops=2)  # light was reloaded
    w = window_stats(prev, cur)
    assert (w.arrivals, w.completed, w.failed, w.drops, w.pending) == (6 + 2 + 3, 6, 2, 1, 5)
    assert w.queue_delay_ms["cascade"] == pytest.approx(2.0)
    assert w.failures_by_model == {"cascade": 2, "light": 2}
    with pytest.raises(ValueError, match="strictly later"):
        window_stats(cur, prev)
    m = merge([w, w])
    assert m.arrivals == 2 * w.arrivals and m.failures_by_model["light"] == 4


def test_instance_groups_for_gpu_and_cpu_nodes_and_back():
    assert instance_group("gpu", (0, 2)) == [{"kind": "KIND_GPU", "count": 1, "gpus": [0, 2]}]
    assert instance_group("cpu", (0, 1, 2)) == [{"kind": "KIND_CPU", "count": 3}]
    with pytest.raises(ValueError, match="at least one slot"):
        instance_group("cpu", ())
    assert slots_from_instance_group("gpu", [{"count": 1, "gpus": [3, 1]}], set(), (0, 1, 2, 3)) == (1, 3)
    assert slots_from_instance_group("cpu", [{"count": 2}], {0}, (0, 1, 2, 3)) == (1, 2)


def test_split_keeps_running_gpus_and_spreads_models_over_nodes():
    a, b = NodeSpec("a:1", "gpu", (0, 1, 2, 3)), NodeSpec("b:1", "gpu", (0, 1))
    cur = {"a:1": Placement({"light": (2,), "heavy": (0, 1)})}
    out = split_workers({"light": 2, "heavy": 4}, ("light", "heavy"), [a, b],
                        {"a:1": a.slots, "b:1": b.slots}, cur)
    assert sum(p.count("light") for p in out.values()) == 2 and sum(p.count("heavy") for p in out.values()) == 4
    assert 2 in out["a:1"].slots["light"]  # the running light GPU stays light
    assert {0, 1} <= set(out["a:1"].slots["heavy"])
    assert out["b:1"].count("light") + out["b:1"].count("heavy") == 2
    for p in out.values():  # no GPU is given to two models
        used = [s for ss in p.slots.values() for s in ss]
        assert len(used) == len(set(used))
    with pytest.raises(ValueError, match="only 5 slots"):
        split_workers({"light": 3, "heavy": 3}, ("light", "heavy"), [a, b], {"a:1": (0, 1, 2), "b:1": (0, 1)}, {})


def test_diff_shrinks_before_it_grows_and_unloads_models_with_no_workers():
    node = NodeSpec("a:1", "gpu", (0, 1, 2))
    cur = Placement({"light": (0,), "heavy": (1, 2)})
    tgt = Placement({"light": (0, 1), "heavy": (2,)})
    acts = diff(node, cur, tgt, ("light", "heavy"))
    assert [(x.model, x.op, x.slots) for x in acts] == [("heavy", "set_instances", (2,)), ("light", "set_instances", (0, 1))]
    acts = diff(node, cur, Placement({"light": (0, 1, 2)}), ("light", "heavy"))
    assert [(x.model, x.op) for x in acts] == [("heavy", "unload"), ("light", "set_instances")]
    cpu = NodeSpec("c:1", "cpu", (0, 1, 2))
    assert diff(cpu, Placement({"light": (0,)}), Placement({"light": (2,)}), ("light", "heavy")) == []


def test_control_state_routes_only_to_models_that_run():
    st = control_state(_plan({"light": 2, "heavy": 1}, {"light": 8, "heavy": 2}), "light", "heavy", 5000, 3)
    assert (st.version, st.routing, st.threshold, dict(st.batch_size)) == (3, "cascade", 0.3,
                                                                          {"light": 8, "heavy": 2, "discriminator": 8})
    assert control_state(_plan({"light": 3, "heavy": 0}), "light", "heavy", 5000, 1).routing == "light"
    heavy_only = control_state(_plan({"heavy": 3}), "light", "heavy", 5000, 1)
    assert heavy_only.routing == "heavy" and "light" not in heavy_only.batch_size
    rnd = control_state(_plan({"light": 1, "heavy": 1}, routing="random", light_fraction=0.7), "light", "heavy", 5000, 1)
    assert rnd.routing == "random" and rnd.heavy_share == pytest.approx(0.3)


def test_routing_weights_follow_each_nodes_cascade_capacity():
    plan = _plan({"light": 2, "heavy": 4}, light_fraction=0.5, capacity={"light": 40.0, "heavy": 20.0})
    # Per worker: light 20 qps (sees all queries), heavy 5 qps (sees half): node cap = min(20 L, 10 H).
    w = routing_weights(plan, {"a": Placement({"light": (0,), "heavy": (1, 2, 3)}),
                               "b": Placement({"light": (0,), "heavy": (1,)})}, "light", "heavy")
    assert w == {"a": 67, "b": 33}  # a: min(20, 30) = 20; b: min(20, 10) = 10
    assert routing_weights(plan, {"a": Placement(), "b": Placement()}, "light", "heavy") == {"a": 50, "b": 50}


def test_backoff_doubles_quarantines_slots_and_forgets_on_success():
    b = Backoff(base_s=1.0, max_s=5.0)
    assert [b.delay_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    book = HealthBook().failed(("a", "light"), 10.0, (2,), "boom", b)
    assert book.in_backoff(("a", "light"), 10.5) and book.quarantined("a", 10.5) == {2}
    book = book.failed(("a", "light"), 11.0, (2,), "boom", b)
    assert book.in_backoff(("a", "light"), 12.9) and not book.in_backoff(("a", "light"), 13.0)
    assert book.quarantined("a", 13.0) == set()
    assert book.succeeded(("a", "light")).entries == {}
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0.0)


def test_published_weights_and_envoy_route_config(tmp_path):
    publish_weights({"10.0.0.1:8001": 70, "10.0.0.2:8001": 30}, 4, 1.5, tmp_path / "w.json", tmp_path / "rds.json")
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["cluster_weights"] == {"10.0.0.1:8001": 70, "10.0.0.2:8001": 30} and doc["version"] == 4
    rds = json.loads((tmp_path / "rds.json").read_text())
    clusters = rds["resources"][0]["virtual_hosts"][0]["routes"][0]["route"]["weighted_clusters"]["clusters"]
    assert clusters == [{"name": "triton_10_0_0_1_8001", "weight": 70}, {"name": "triton_10_0_0_2_8001", "weight": 30}]
    # Envoy rejects an all-zero total: nothing placed yet still routes somewhere (and errors explicitly).
    zero = envoy_route_config({"a:1": 0, "b:1": 0}, 1)
    assert [c["weight"] for c in zero["resources"][0]["virtual_hosts"][0]["routes"][0]["route"]["weighted_clusters"]["clusters"]] == [1, 1]
    with pytest.raises(ValueError, match=">= 0"):
        weights_document({"a:1": -1}, 1, 0.0)


def test_slot_specs_parse_and_reject_bad_input():
    assert parse_slots("cpu:3") == ("cpu", (0, 1, 2))
    assert parse_slots("gpu:0,2") == ("gpu", (0, 2))
    for bad in ("cpu:0", "gpu:", "tpu:1", "cpu:x"):
        with pytest.raises(ValueError, match="expected 'auto'"):
            parse_slots(bad)


def test_slo_is_the_cascade_yamls_unless_overridden_explicitly():
    from orchestrator.control import SloChoice, choose_slo  # noqa: PLC0415

    assert choose_slo(15000.0, "configs/sdxl.yaml", None) == SloChoice(15000.0, "configs/sdxl.yaml", False)
    chosen = choose_slo(15000.0, "configs/sdxl.yaml", 5000.0)
    assert chosen.slo_ms == 5000.0 and chosen.overridden and "replaces slo_ms 15000" in chosen.source
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="--slo-ms"):
            choose_slo(15000.0, "x", bad)


def test_cli_plans_for_the_cascade_yamls_slo_and_logs_an_override(tmp_path, capsys):
    """The SDXL cascade's 15 s SLO, not a 5 s default, reaches the planner and the control file."""
    from orchestrator.__main__ import build, parser  # noqa: PLC0415
    from tests.orchestrator_support import PROFILES  # noqa: PLC0415

    base = ["run", "--node", "127.0.0.1:1", "--metrics-url", "http://127.0.0.1:2/metrics", "--slots", "cpu:2",
            "--profiles", str(PROFILES), "--device", "cpu", "--log-dir", str(tmp_path),
            "--cascade", "configs/sdxl_lightning_sdxl.yaml"]
    orch = build(parser().parse_args(base))
    assert orch.control.slo_ms == 15000.0 and orch.config.slo_source.endswith("configs/sdxl_lightning_sdxl.yaml")
    plan = _plan({"light": 1, "heavy": 1})
    orch.control_path = tmp_path / "control.json"
    orch._write_control(plan, {})
    assert json.loads((tmp_path / "control.json").read_text())["slo_ms"] == 15000.0
    over = build(parser().parse_args(base + ["--slo-ms", "4000"]))
    assert over.control.slo_ms == 4000.0 and over.config.slo_source.startswith("override: --slo-ms 4000")
    with pytest.raises(SystemExit, match="expected a finite number"):
        build(parser().parse_args(base + ["--slo-ms", "-1"]))
    with pytest.raises(SystemExit, match="does not exist"):
        build(parser().parse_args(base[:-1] + ["configs/nope.yaml"]))


def test_adoption_warns_when_the_served_cascade_was_exported_from_another_config():
    from orchestrator.adopt import served_cascade_check  # noqa: PLC0415
    from orchestrator.apply import Cluster  # noqa: PLC0415

    class ExportedNode:
        url, spec = "a:1", NodeSpec("a:1", "cpu", (0,))

        def __init__(self, config_hash):
            self.config_hash = config_hash

        def is_ready(self, model):
            return True

        def model_config(self, model):
            return {"parameters": {"config_hash": {"string_value": self.config_hash}}}

    def check(served, planned):
        return served_cascade_check(Cluster([ExportedNode(served)], ("light", "heavy"), None, Backoff(), float), planned)

    assert check("abc", "abc") == {"served_config_hash": "abc"}
    assert "pass the exported YAML as --cascade" in check("abc", "def")["warning"]
    assert check("abc", None) == {} and check("", "def") == {}


def test_the_cascades_own_queue_is_its_in_flight_gauge_summed_over_instances():
    metrics = METRICS + ('diffserve_cascade_in_flight{instance="cascade_0_0",model="cascade"} 7\n'
                         'diffserve_cascade_in_flight{instance="cascade_0_1",model="cascade"} 5\n')
    s = sample_from(7.0, STATS, metrics)
    assert s.models["cascade"].in_flight == 12 and s.models["light"].in_flight == 0
    prev = NodeSample(0.0, {"cascade": ModelCounters(success=10, in_flight=3)})
    w = window_stats(prev, NodeSample(2.0, {"cascade": ModelCounters(success=14, in_flight=12)}))
    # Triton counted the accepted requests as successes already: they are arrivals, not queue growth
    assert (w.arrivals, w.in_flight) == (4, 12)
    assert merge([w, w]).in_flight == 24
