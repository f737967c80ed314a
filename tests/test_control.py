"""The control loop core: demand estimation (EWMA x over-provisioning) and the planner call."""
from __future__ import annotations

import dataclasses

import pytest

from orchestrator.control import ControlConfig, ControlLoop, DemandEstimator, Observation, decide
from planner.types import Allocation, DeferralCurve, ModelProfile, Plan, QualityCurve

LIGHT = ModelProfile("light", {1: 100.0, 2: 150.0})
HEAVY = ModelProfile("heavy", {1: 1000.0, 2: 1500.0}, quality_rank=1)
CURVE = DeferralCurve((0.0, 1.0), (0.0, 1.0))
QUALITY = QualityCurve((0.0, 1.0), (18.0, 22.0))
CONFIG = ControlConfig(models=(LIGHT, HEAVY), slo_ms=5000.0, num_workers=4, deferral=CURVE, quality=QUALITY)


class RecordingPolicy:
    """Returns a fixed plan and remembers every instance it was asked about."""

    def __init__(self):
        self.instances = []

    def plan(self, instance):
        self.instances.append(instance)
        return Plan(policy="rec", workers={"light": 1, "heavy": 3}, batch_size={"light": 2, "heavy": 1},
                    threshold=0.5, capacity_qps={}, expected_fid=20.0, light_fraction=0.5, slack_ms=0.0,
                    status="STATIC")


def test_first_observation_sets_the_smoothed_rate_then_ewma_weights_the_newest_by_alpha():
    est = DemandEstimator(alpha=0.25, overprovision=1.2, initial_qps=3.0)
    assert est.demand_qps == pytest.approx(3.6)  # the prior, over-provisioned
    est = est.observe(10.0)
    assert est.smoothed_qps == pytest.approx(10.0)
    est = est.observe(20.0)
    assert est.smoothed_qps == pytest.approx(0.25 * 20.0 + 0.75 * 10.0)
    assert est.demand_qps == pytest.approx(1.2 * 12.5)


def test_estimator_is_immutable_observe_returns_a_new_one():
    est = DemandEstimator()
    new = est.observe(5.0)
    assert est.smoothed_qps is None and new.smoothed_qps == 5.0


@pytest.mark.parametrize("kwargs, needle", [
    ({"alpha": 0.0}, "alpha = 0.0"), ({"alpha": 1.5}, "alpha = 1.5"),
    ({"overprovision": 0.9}, "overprovision = 0.9"), ({"initial_qps": -1.0}, "initial_qps = -1.0"),
])
def test_bad_estimator_parameters_are_rejected_naming_the_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        DemandEstimator(**kwargs)


def test_negative_or_nan_rate_is_rejected():
    with pytest.raises(ValueError, match="-2.0 qps"):
        DemandEstimator().observe(-2.0)
    with pytest.raises(ValueError, match="nan qps"):
        DemandEstimator().observe(float("nan"))


def test_observation_rejects_negative_counts_and_zero_window():
    with pytest.raises(ValueError, match="arrivals = -1"):
        Observation(window_start_ms=0.0, window_s=5.0, arrivals=-1)
    with pytest.raises(ValueError, match="window_s = 0"):
        Observation(window_start_ms=0.0, window_s=0, arrivals=1)
    with pytest.raises(ValueError, match=r"queue_length\['light'\] = -3"):
        Observation(window_start_ms=0.0, window_s=5.0, arrivals=1, queue_length={"light": -3})


def test_decide_plans_for_the_overprovisioned_ewma_demand_and_passes_the_queues_through():
    policy = RecordingPolicy()
    est = DemandEstimator(alpha=0.5, overprovision=1.2).observe(10.0)
    obs = Observation(window_start_ms=0.0, window_s=5.0, arrivals=100, queue_delay_ms={"heavy": 250.0},
                      queue_length={"heavy": 7.0}, model_arrival_qps={"heavy": 4.0},
                      current=Allocation(workers={"light": 1, "heavy": 3}, batch_size={"light": 2, "heavy": 1}))
    d = decide(CONFIG, policy, est, obs)
    (inst,) = policy.instances
    assert obs.arrival_rate_qps == 20.0
    assert d.measured_rate_qps == 20.0
    assert inst.demand_qps == pytest.approx(1.2 * (0.5 * 20.0 + 0.5 * 10.0)) == d.demand_qps
    assert inst.queue_delay_ms == {"heavy": 250.0}
    assert inst.queue_length == {"heavy": 7.0} and inst.model_arrival_qps == {"heavy": 4.0}
    assert inst.current is obs.current and inst.num_workers == 4 and inst.slo_ms == 5000.0
    assert d.plan.policy == "rec" and d.planner_wall_ms >= 0.0


def test_control_loop_carries_the_estimate_across_windows():
    policy = RecordingPolicy()
    loop = ControlLoop(CONFIG, policy, DemandEstimator(alpha=0.5, overprovision=1.0, initial_qps=2.0))
    assert loop.initial().demand_qps == 2.0
    loop.step(Observation(window_start_ms=0.0, window_s=5.0, arrivals=50))   # 10 qps
    d = loop.step(Observation(window_start_ms=5000.0, window_s=5.0, arrivals=0))  # 0 qps
    assert d.demand_qps == pytest.approx(5.0)
    assert [i.demand_qps for i in policy.instances] == pytest.approx([2.0, 10.0, 5.0])


def test_a_policy_that_returns_no_plan_is_a_type_error():
    class Broken:
        def plan(self, instance):
            return {"workers": {}}

    with pytest.raises(TypeError, match="returned dict"):
        decide(CONFIG, Broken(), DemandEstimator(), None)


def test_the_control_state_carries_the_plans_instances_per_stage():
    from serving.control import ControlState, parse_control  # noqa: PLC0415

    s = parse_control({"instances": {"light": 2, "heavy": 6}})
    assert dict(s.instances) == {"light": 2, "heavy": 6} and parse_control(s.to_json()) == s
    assert "instances" not in ControlState().to_json()
    for bad in ({"light": -1}, {"gpu": 1}, {"heavy": 1.5}, [1]):
        with pytest.raises(ValueError, match="instances"):
            parse_control({"instances": bad})


def test_the_overload_fallback_asks_the_cascade_to_shed_at_the_slo_and_clipper_keeps_the_default():
    from orchestrator.placement import control_state  # noqa: PLC0415
    from planner.baselines import OVERLOAD_ADMIT_FACTOR, ClipperPolicy, fallback_plan  # noqa: PLC0415
    from planner.types import Instance  # noqa: PLC0415
    from serving.control import ControlState, parse_control  # noqa: PLC0415

    # Demand far above what any batch serves, and a queue that alone exceeds the SLO.
    inst = Instance(models=CONFIG.models, slo_ms=CONFIG.slo_ms, demand_qps=1e4, num_workers=CONFIG.num_workers,
                    deferral=CONFIG.deferral, quality=CONFIG.quality, queue_delay_ms={"light": 9e4, "heavy": 9e4})
    fallback = fallback_plan(inst, "diffserve", "demand above capacity")
    assert fallback.admit_factor == OVERLOAD_ADMIT_FACTOR == 1.0
    state = control_state(fallback, "light", "heavy", CONFIG.slo_ms, version=1)
    assert state.admit_factor == 1.0 and parse_control(state.to_json()) == state
    too_short = dataclasses.replace(inst, slo_ms=50.0)  # no batch executes within it: Clipper's own fallback
    for which, case in (("light", inst), ("heavy", inst), ("light", too_short)):
        clipper = ClipperPolicy(which).solve(case)
        assert clipper.status == "FALLBACK" and clipper.admit_factor is None
        assert control_state(clipper, "light", "heavy", CONFIG.slo_ms, version=1).admit_factor is None
    assert "admit_factor" not in ControlState().to_json()
    assert parse_control({"admit_factor": None}).admit_factor is None
    for bad in (0, -1.0, 101, True, "1", float("nan")):
        with pytest.raises(ValueError, match="admit_factor"):
            parse_control({"admit_factor": bad})
