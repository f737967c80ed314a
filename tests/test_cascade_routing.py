"""Pure parts of the cascade: routing, deferral, latency prediction, shedding, config."""
from __future__ import annotations

import json

import numpy as np
import pytest

from serving.control import ControlState
from serving import routing
from serving.validation import RequestOptions
from serving.triton.cascade_model import SharedState, parse_config
from serving.triton.metrics import CascadeMetrics


def test_request_routing_overrides_the_policy_and_random_uses_heavy_share():
    policy = ControlState(routing="random", heavy_share=0.3)
    assert routing.choose_route(RequestOptions(routing="light"), policy, 0.0) == "light"
    assert routing.choose_route(RequestOptions(), policy, 0.29) == "heavy"
    assert routing.choose_route(RequestOptions(), policy, 0.31) == "light"
    assert routing.choose_route(RequestOptions(), ControlState(routing="cascade"), 0.0) == "cascade"


def test_deferral_is_strictly_below_the_threshold():
    assert routing.defer_mask([0.1, 0.5, 0.9], 0.5).tolist() == [True, False, False]
    assert not routing.defer_mask([0.0], 0.0).any()


def test_ewma_starts_at_the_first_sample():
    assert routing.ewma(None, 10.0, 0.2) == 10.0
    assert routing.ewma(10.0, 20.0, 0.2) == pytest.approx(12.0)


EST = routing.StageEstimates(service_ms={"light": 100.0, "discriminator": 10.0, "heavy": 400.0},
                             batch_items={"light": 4.0, "discriminator": 4.0, "heavy": 2.0}, defer_rate=0.5)


def test_a_stage_drains_the_backlog_at_its_observed_rate_then_serves_the_new_queries():
    est = routing.StageEstimates(service_ms={"heavy": 1000.0}, batch_items={"heavy": 4.0}, drain_qps={"heavy": 32.0})
    # 64 queries ahead drained at 32 q/s (8 instances x batch 4 per second), then one service time
    assert routing.stage_ms("heavy", 1, 64, est) == pytest.approx(2000.0 + 1000.0)
    assert routing.stage_ms("heavy", 1, 0, est) == pytest.approx(1000.0)
    # before a drain rate is observed: one call's worth of queries per service time (serial)
    assert routing.stage_ms("heavy", 1, 8, routing.StageEstimates(service_ms={"heavy": 1000.0},
                                                                  batch_items={"heavy": 4.0})) == pytest.approx(3000.0)
    assert routing.stage_ms("light", 1, 50, routing.StageEstimates()) == 0.0  # cold: admit


def test_predicted_path_adds_light_discriminator_and_heavy_weighted_by_the_deferral_rate():
    # light: 8 ahead at 25 ms each + one service 100; disc: 10; heavy (p=0.5): 2 ahead x 200 + 400
    assert routing.path_ms("cascade", 1, {"light": 8, "heavy": 2}, EST) == pytest.approx(300 + 10 + 0.5 * 800)
    assert routing.path_ms("light", 1, {"light": 0}, EST) == pytest.approx(100.0)
    assert routing.path_ms("heavy", 1, {}, EST) == pytest.approx(400.0)
    # a large request costs its queries at the observed rate, not one service time: 12 x 25 ms
    assert routing.path_ms("light", 12, {}, EST) == pytest.approx(300.0)


def test_stage_load_counts_expected_queries_per_stage():
    assert routing.stage_load([("cascade", 2), ("heavy", 1), ("light", 3)], 0.25) == {
        "light": 5.0, "discriminator": 2.0, "heavy": 1.5}


def test_burst_admits_the_head_of_the_batch_and_sheds_the_rest():
    est = routing.StageEstimates(service_ms={"heavy": 40.0}, batch_items={"heavy": 1.0})
    decisions = routing.admit_batch([("heavy", 1, 100.0)] * 10, {}, est, drop_factor=1.5)
    # limit 150 ms at 40 ms per query: 3 fit (120 ms), the 4th would finish at 160 ms
    assert [d.admitted for d in decisions] == [True] * 3 + [False] * 7
    assert decisions[3].predicted_ms == pytest.approx(160.0) and decisions[3].limit_ms == pytest.approx(150.0)
    ahead = routing.admit_batch([("heavy", 1, 100.0)], {"heavy": 5}, est, 1.5)  # 5 x 40 ahead + 40
    assert not ahead[0].admitted and ahead[0].predicted_ms == pytest.approx(240.0)


def test_the_control_states_admit_factor_tightens_admission_to_it_and_never_loosens_it():
    est = routing.StageEstimates(service_ms={"heavy": 40.0}, batch_items={"heavy": 1.0})
    overloaded = ControlState(admit_factor=1.0)
    assert routing.admit_limit_factor(ControlState(), 1.5) == 1.5  # no factor in the file: the cascade's own
    assert routing.admit_limit_factor(overloaded, 1.5) == 1.0
    assert routing.admit_limit_factor(ControlState(admit_factor=3.0), 1.5) == 1.5  # past the drop bound: no
    # SLO 100 ms at 40 ms per query: 3 fit within 1.5 x SLO (120 ms), 2 within the SLO (80 ms).
    burst = [("heavy", 1, 100.0)] * 4
    assert [d.admitted for d in routing.admit_batch(burst, {}, est, routing.admit_limit_factor(ControlState(), 1.5))] \
        == [True, True, True, False]
    shed = routing.admit_batch(burst, {}, est, routing.admit_limit_factor(overloaded, 1.5))
    assert [d.admitted for d in shed] == [True, True, False, False] and shed[2].limit_ms == pytest.approx(100.0)


def test_each_request_is_judged_against_its_own_drop_limit():
    est = routing.StageEstimates(service_ms={"light": 50.0}, batch_items={"light": 1.0})
    d = routing.admit_batch([("light", 1, None), ("light", 1, 60.0), ("light", 1, 10_000.0)], {}, est, 1.5)
    # the second would finish at 100 ms (one query ahead), past its 90 ms limit; the third has time
    assert [x.admitted for x in d] == [True, False, True]
    assert routing.admit_batch([("light", 1, None)] * 3, {}, est, 1.5)[2].admitted  # no SLO: never shed


def test_the_drop_bound_is_drop_factor_times_the_slo_after_receipt():
    assert routing.deadline_s(100.0, 2000.0, 1.5) == pytest.approx(103.0)
    assert routing.deadline_s(100.0, None, 1.5) is None


def test_drop_messages_name_prediction_limit_and_slo():
    msg = routing.drop_message("[m]", routing.Admission(False, 1501.0, 1500.0), 1000.0, 1.5)
    assert msg.startswith("[m]") and "1501 ms" in msg and "1500 ms" in msg and "1000 ms" in msg
    late = routing.late_message("[m]", "heavy", 700.0, 900.0, 1000.0, 1.5)
    assert late.startswith("[m]") and "heavy" in late and "900 ms" in late and "1500 ms" in late
    expired = routing.late_message("[m]", "heavy", 1500.0, None, 1000.0, 1.5)
    assert "passed after 1500 ms" in expired and "waiting on heavy" in expired


def _config(**params):
    return {"name": "cascade", "max_batch_size": 32, "output": [{"name": n} for n in ("IMAGE", "SERVED_BY", "CONFIDENCE", "THRESHOLD")],
            "parameters": {k: {"string_value": v} for k, v in params.items()}}


def test_config_parameters_are_validated(tmp_path):
    cfg = parse_config(_config(control_file="runs/control/x.json", slo_ms="2000", drop_factor="1.5"), tmp_path)
    assert cfg.control_file == tmp_path / "runs/control/x.json" and cfg.slo_ms == 2000.0
    assert parse_config(_config(slo_ms=""), tmp_path).slo_ms is None
    with pytest.raises(ValueError, match="drop_factor='-1'"):
        parse_config(_config(drop_factor="-1"), tmp_path)
    assert cfg.stage_timeout_ms == 60_000.0  # default
    assert parse_config(_config(stage_timeout_ms="250"), tmp_path).stage_timeout_ms == 250.0
    with pytest.raises(ValueError, match="stage_timeout_ms='0'"):
        parse_config(_config(stage_timeout_ms="0"), tmp_path)
    assert cfg.max_stage_calls == 128 and parse_config(_config(max_stage_calls="16"), tmp_path).max_stage_calls == 16
    with pytest.raises(ValueError, match="max_stage_calls='2.5'"):
        parse_config(_config(max_stage_calls="2.5"), tmp_path)
    with pytest.raises(ValueError, match="unknown config parameters"):
        parse_config(_config(treshold="0.5"), tmp_path)
    with pytest.raises(ValueError, match="max_batch_size"):
        parse_config({**_config(), "max_batch_size": 0}, tmp_path)
    with pytest.raises(ValueError, match="outputs"):
        parse_config({**_config(), "output": [{"name": "IMAGE"}]}, tmp_path)


def test_shared_state_sums_backlog_and_shares_estimates_across_instances(tmp_path):
    path = tmp_path / "state.bin"
    a = SharedState(path, SharedState.slot_for("cascade_0_0"))
    b = SharedState(path, SharedState.slot_for("cascade_0_1"))
    assert a.slot != b.slot
    a.add("light", 4)
    b.add("light", 3)
    b.add("heavy", 1)
    assert a.totals() == {"light": 7, "discriminator": 0, "heavy": 1, "router": 0}
    a.add("light", -4)
    assert b.totals()["light"] == 3
    assert a.estimates().service_ms == {}
    a.observe_call("light", 100.0, 4, 0, 0.5)  # nothing ahead: a service time
    b.observe_call("light", 200.0, 2, 0, 0.5)
    est = b.estimates()
    assert est.service_ms == {"light": 150.0} and est.batch_items == {"light": 3.0} and est.drain_qps == {}
    SharedState(path, SharedState.slot_for("cascade_0_1"))  # a restarted instance clears its own row
    assert a.totals()["light"] == 0


def test_calls_that_found_work_ahead_measure_how_fast_the_stage_drains_it(tmp_path):
    s = SharedState(tmp_path / "state.bin", 0)
    s.observe_call("heavy", 1000.0, 4, 0, 0.5)  # service 1 s
    s.observe_call("heavy", 3000.0, 1, 64, 0.5)  # 64 ahead drained in the 2 s beyond one service
    est = s.estimates()
    assert est.service_ms["heavy"] == pytest.approx(1000.0) and est.drain_qps["heavy"] == pytest.approx(32.0)
    s.observe_call("heavy", 900.0, 1, 5, 0.5)  # faster than one service: says nothing about the rate
    assert s.estimates().drain_qps["heavy"] == pytest.approx(32.0)


class _FakeMetric:
    def __init__(self, labels, buckets=None):
        self.labels, self.buckets, self.values = labels, buckets, []

    def increment(self, v):
        self.values.append(v)

    def set(self, v):
        self.values.append(v)

    def observe(self, v):
        self.values.append(v)


class _FakeFamily:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    made: list = []

    def __init__(self, name, description, kind):
        self.name, self.kind = name, kind
        _FakeFamily.made.append(self)

    def Metric(self, labels, buckets=None):  # noqa: N802 - pb_utils API
        assert (buckets is not None) == (self.kind == "histogram")
        return _FakeMetric(labels, buckets)


class _FakePb:
    MetricFamily = _FakeFamily


def test_metrics_register_families_with_model_labels():
    m = CascadeMetrics(_FakePb, "cascade")
    names = {f.name: f.kind for f in _FakeFamily.made}
    assert names["diffserve_cascade_confidence"] == "histogram"
    assert names["diffserve_cascade_requests_total"] == "counter"
    assert m.served["heavy"].labels == {"model": "cascade", "served_by": "heavy"}
    m.observe_confidences(np.array([0.2, 0.9], np.float32))
    assert m.confidence.values == [pytest.approx(0.2), pytest.approx(0.9)]
    json.dumps(m.stage_latency["light"].labels)


def test_empty_control_file_and_slo_follow_the_light_stage_and_its_cascade_yaml(tmp_path):
    from serving.triton.cascade_model import cascade_yaml_slo_ms, pbtxt_parameters  # noqa: PLC0415

    from export.testing import GOOD_TINY_YAML  # noqa: PLC0415 - a whole, valid cascade config

    assert "slo_ms: 5000" in GOOD_TINY_YAML
    (tmp_path / "c.yaml").write_text(GOOD_TINY_YAML.replace("slo_ms: 5000", "slo_ms: 2500"))
    light_pbtxt = ('parameters [\n  { key: "stage" value: { string_value: "light" } },\n'
                   '  { key: "cascade_config" value: { string_value: "c.yaml" } },\n'
                   '  { key: "control_file" value: { string_value: "runs/control/x.json" } }\n]\n')
    stage = pbtxt_parameters(light_pbtxt)
    assert stage == {"stage": "light", "cascade_config": "c.yaml", "control_file": "runs/control/x.json"}
    assert cascade_yaml_slo_ms(stage, tmp_path) == 2500.0
    cfg = parse_config(_config(control_file="", slo_ms=""), tmp_path, stage)
    assert cfg.control_file == tmp_path / "runs/control/x.json" and cfg.slo_ms == 2500.0
    own = parse_config(_config(control_file="/abs/c.json", slo_ms="100"), tmp_path, stage)
    assert own.control_file.as_posix() == "/abs/c.json" and own.slo_ms == 100.0
    assert cascade_yaml_slo_ms({"cascade_config": "missing.yaml"}, tmp_path) is None
    assert parse_config(_config(), tmp_path, {}).control_file == tmp_path / "runs/control/cascade.json"


def test_before_a_drain_rate_is_measured_a_stage_drains_on_all_its_planned_instances():
    est = routing.StageEstimates(service_ms={"heavy": 1000.0}, batch_items={"heavy": 1.0})
    assert routing.stage_ms("heavy", 1, 3, est) == pytest.approx(3000.0 + 1000.0)  # one instance: serial
    est8 = routing.StageEstimates(service_ms={"heavy": 1000.0}, batch_items={"heavy": 1.0}, instances={"heavy": 8})
    assert routing.stage_ms("heavy", 1, 8, est8) == pytest.approx(1000.0 + 1000.0)
    measured = routing.StageEstimates(service_ms={"heavy": 1000.0}, batch_items={"heavy": 1.0},
                                      drain_qps={"heavy": 2.0}, instances={"heavy": 8})
    assert routing.stage_ms("heavy", 1, 4, measured) == pytest.approx(2000.0 + 1000.0)  # the measured rate wins


def test_a_call_with_nothing_ahead_measures_service_and_one_with_a_backlog_the_drain_rate():
    first = routing.fold_call(None, 1000.0, 4, 0, 0.2)
    assert first == (1000.0, 4.0, 0.0)
    queued = routing.fold_call(first, 3000.0, 4, 8, 0.2)  # 8 queries drained in 2 s
    assert queued[0] == 1000.0 and queued[2] == pytest.approx(4.0)
    again = routing.fold_call(queued, 1500.0, 2, 0, 0.2)
    assert again[0] == pytest.approx(1100.0) and again[1] == pytest.approx(3.6) and again[2] == pytest.approx(4.0)
