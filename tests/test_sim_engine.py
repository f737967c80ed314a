"""Event-loop correctness on tiny traces whose outcome can be checked by hand."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.sim.engine import DROPPED, SERVED_HEAVY, SERVED_LIGHT, SimConfig, SimResult, WindowRecord, simulate
from benchmarks.sim.metrics import summarize
from benchmarks.sim.trace import Trace
from orchestrator.control import ControlConfig, ControlLoop, DemandEstimator
from planner.types import DeferralCurve, ModelProfile, Plan, QualityCurve

LIGHT = ModelProfile("light", {1: 100.0, 2: 150.0, 4: 220.0})
HEAVY = ModelProfile("heavy", {1: 1000.0, 2: 1500.0}, quality_rank=1)
CURVE = DeferralCurve((0.0, 1.0), (0.0, 1.0))
QUALITY = QualityCurve((0.0, 0.5, 1.0), (18.0, 16.0, 22.0))


def plan(light=1, heavy=0, bl=1, bh=1, t=0.0, routing="cascade", heavy_share=0.0):
    return Plan(policy="fixed", workers={"light": light, "heavy": heavy}, batch_size={"light": bl, "heavy": bh},
                threshold=t, capacity_qps={}, expected_fid=0.0, light_fraction=1.0 - heavy_share, slack_ms=0.0,
                status="STATIC", routing=routing, heavy_share=heavy_share)


class Schedule:
    """Plan k for the k-th planner call (the initial plan is call 0); the last one repeats."""

    def __init__(self, *plans):
        self.plans, self.calls = plans, 0

    def plan(self, instance):
        p = self.plans[min(self.calls, len(self.plans) - 1)]
        self.calls += 1
        return p


class ObservingLoop(ControlLoop):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.observations = []

    def step(self, observation):
        self.observations.append(observation)
        return super().step(observation)


def run(arrivals, *plans, conf=None, workers=1, slo_ms=5000.0, window_s=5.0, load_s=0.0, seed=0, loop_cls=ControlLoop):
    arrivals = np.asarray(arrivals, dtype=float)
    trace = Trace(arrivals, np.arange(len(arrivals)))
    conf = np.ones(len(arrivals)) if conf is None else np.asarray(conf, dtype=float)
    cc = ControlConfig(models=(LIGHT, HEAVY), slo_ms=slo_ms, num_workers=workers, deferral=CURVE, quality=QUALITY,
                       window_s=window_s)
    loop = loop_cls(cc, Schedule(*plans), DemandEstimator())
    return simulate(trace, conf, loop, SimConfig(model_load_s=load_s, seed=seed)), loop


def test_idle_worker_takes_one_query_then_the_queue_is_batched_up_to_the_batch_size():
    res, _ = run([0, 1, 2, 3, 4], plan(light=1, bl=4))
    # q0 alone at t=0 (100 ms); q1..q4 wait and go as one batch of 4 at t=100 (220 ms).
    assert res.finish_ms.tolist() == [100.0, 320.0, 320.0, 320.0, 320.0]
    assert (res.outcome == SERVED_LIGHT).all()


def test_batches_are_capped_at_the_planned_size():
    res, _ = run([0, 1, 2, 3, 4], plan(light=1, bl=2))
    assert res.finish_ms.tolist() == [100.0, 250.0, 250.0, 400.0, 400.0]


def test_unprofiled_batch_size_latency_is_interpolated_between_profiled_sizes():
    res, _ = run([0, 1, 2, 3], plan(light=1, bl=4))
    assert res.finish_ms.tolist() == [100.0, 285.0, 285.0, 285.0]  # batch 3: halfway 150..220 ms


def test_cascade_defers_low_confidence_queries_to_the_heavy_model():
    res, _ = run([0, 50], plan(light=1, heavy=1, t=0.5), conf=[0.9, 0.1], workers=2)
    # q0: light 0..100, confident -> served. q1: light 100..200, deferred, heavy 200..1200.
    assert res.outcome.tolist() == [SERVED_LIGHT, SERVED_HEAVY]
    assert res.finish_ms.tolist() == [100.0, 1200.0]


def test_query_is_shed_on_arrival_when_the_live_rule_predicts_a_finish_past_1_5_x_slo():
    # Heavy only, SLO 1000 ms -> drop limit 1500 ms; heavy batch of 1 = 1000 ms.
    res, _ = run([0, 0, 1500, 2500], plan(light=0, heavy=1, bh=1), slo_ms=1000.0)
    # q0, q1: nothing measured yet, admitted (as a cold live cascade). q0 0..1000, q1 1000..2000:
    # past its drop bound (1500), so shed at 1500 (see the drop-bound test below).
    # q2 at 1500: 1 query ahead at ~1000 ms per query + its own ~1000 ms = 2000 > 1500: shed at once.
    # q3 at 2500: nothing ahead, EWMA round trip 0.2 x 2000 + 0.8 x 1000 = 1200 <= 1500: admitted.
    assert res.outcome.tolist() == [SERVED_HEAVY, DROPPED, DROPPED, SERVED_HEAVY]
    assert res.finish_ms.tolist() == [1000.0, 1500.0, 1500.0, 3500.0]
    s = summarize(res, QUALITY)
    assert (s.drops, s.timeouts) == (2, 0)
    assert s.violation_ratio == pytest.approx(2 / 4)


def test_no_query_is_answered_past_its_drop_bound_it_is_shed_at_the_bound_as_the_live_timer_does():
    # Heavy only, 1000 ms per query; q0 and q1 arrive together on a cold cascade (both admitted):
    # q1 runs 1000..2000. SLO 1000 ms -> drop bound 1500 ms: q1 is shed at 1500 (its batch ran
    # all the same, as live stage work runs on). SLO 1500 ms -> bound 2250: q1 is served late.
    res, _ = run([0, 0], plan(light=0, heavy=1, bh=1), slo_ms=1000.0)
    assert res.outcome.tolist() == [SERVED_HEAVY, DROPPED] and res.finish_ms.tolist() == [1000.0, 1500.0]
    late, _ = run([0, 0], plan(light=0, heavy=1, bh=1), slo_ms=1500.0)
    assert late.outcome.tolist() == [SERVED_HEAVY, SERVED_HEAVY] and late.finish_ms.tolist() == [1000.0, 2000.0]


def test_a_deferred_query_predicted_past_its_drop_bound_is_shed_before_heavy_as_the_live_cascade_does():
    # Light 100 ms, heavy 1000 ms per query, every query deferred; SLO 1000 ms -> bound 1500 ms.
    # q0 measures heavy (100..1100). q1 (1200): light 1200..1300, heavy idle -> predicted 1000 ms,
    # kept, heavy 1300..2300. q2 (1201): deferred at 1400 with q1 ahead -> 1000 + 1000 ms, 3400 >
    # 1201 + 1500: shed at 1400, before heavy spends 1000 ms on it; q3 likewise at 1500.
    # Without the check q2 and q3 were served at 3300 and 4300, 2099 and 3098 ms after arrival.
    res, _ = run([0, 1200, 1201, 1202], plan(light=1, heavy=1, t=0.5), conf=[0.1] * 4, workers=2, slo_ms=1000.0)
    assert res.outcome.tolist() == [SERVED_HEAVY, SERVED_HEAVY, DROPPED, DROPPED]
    assert res.finish_ms.tolist() == [1100.0, 2300.0, 1400.0, 1500.0]


def test_a_plan_with_admit_factor_1_sheds_what_is_predicted_past_the_slo_as_the_live_cascade_does():
    # Heavy only, 1000 ms per query, SLO 800 ms. q0 (cold: admitted) measures the service time;
    # q1 finds nothing ahead and is predicted at 1000 ms: within the default 1.5 x SLO (1200 ms),
    # past the SLO itself, which a plan with admit_factor 1 (the overload fallback's) sheds at.
    default, _ = run([0, 2500], plan(light=0, heavy=1, bh=1), slo_ms=800.0)
    at_slo, _ = run([0, 2500], dataclasses.replace(plan(light=0, heavy=1, bh=1), admit_factor=1.0), slo_ms=800.0)
    assert default.outcome.tolist() == [SERVED_HEAVY, SERVED_HEAVY]
    assert at_slo.outcome.tolist() == [SERVED_HEAVY, DROPPED] and at_slo.finish_ms[1] == 2500.0  # shed on arrival


def test_queries_arriving_back_to_back_are_admitted_up_to_the_limit_and_the_rest_shed():
    # 1 heavy GPU, SLO 2000 ms (limit 3000), each query 1000 ms. q0 (0..1000) is measured first;
    # q1 arrives at 1000.5 on an idle GPU (runs to 2000.5); q2..q4 arrive while it is busy:
    # q2 sees 1 ahead (2000 ms <= 3000), q3 2 ahead (3000 <= 3000), q4 3 ahead (4000): shed.
    res, _ = run([0, 1000.5, 1001, 1002, 1003], plan(light=0, heavy=1, bh=1), slo_ms=2000.0)
    assert res.outcome.tolist() == [SERVED_HEAVY, SERVED_HEAVY, SERVED_HEAVY, SERVED_HEAVY, DROPPED]
    assert res.finish_ms[4] == 1003.0


def test_a_stage_on_several_gpus_is_predicted_to_drain_in_parallel_as_the_live_cascade_predicts():
    # 3 heavy GPUs, SLO 1200 ms (limit 1800), 1000 ms per query, service measured on q0 and q1.
    # At 2000 q2 starts on an idle GPU; q3 then has 1 query ahead over all instances. The control
    # state says heavy has 3 instances, so (no drain rate measured yet) that query costs 1000 / 3
    # ms: 333 + 1000 <= 1800, admitted; q4 with 2 ahead: 667 + 1000, admitted. On 1 GPU the same
    # query ahead would cost a whole service time (2000 > 1800): shed.
    arrivals = [0, 0, 2000, 2000, 2001]
    three, _ = run(arrivals, plan(light=0, heavy=3, bh=1), slo_ms=1200.0, workers=3)
    assert three.outcome.tolist() == [SERVED_HEAVY] * 5
    one, _ = run([0, 2000, 2001], plan(light=0, heavy=1, bh=1), slo_ms=1200.0, workers=1)
    assert one.outcome.tolist() == [SERVED_HEAVY, SERVED_HEAVY, DROPPED]


def test_moved_gpu_finishes_its_batch_then_loads_the_new_model_for_the_configured_delay():
    # Window 1 s; at t=1000 the plan moves the only worker from light to heavy (load 0.5 s).
    res, _ = run([950, 1100], plan(light=1), plan(light=0, heavy=1), window_s=1.0, load_s=0.5)
    # q0 runs on light 950..1050; the worker then loads heavy 1050..1550; q1 runs 1550..2550.
    assert res.outcome.tolist() == [SERVED_LIGHT, SERVED_HEAVY]
    assert res.finish_ms.tolist() == [1050.0, 2550.0]


def test_without_load_delay_the_move_is_immediate_after_the_running_batch():
    res, _ = run([950, 1100], plan(light=1), plan(light=0, heavy=1), window_s=1.0, load_s=0.0)
    assert res.finish_ms.tolist() == [1050.0, 2100.0]


def test_queries_sent_to_a_model_without_gpus_fail_at_once_and_are_reported_to_the_control_loop():
    res, loop = run([0, 10, 20], plan(light=0, heavy=0), slo_ms=100.0, window_s=1.0, loop_cls=ObservingLoop)
    assert (res.outcome == DROPPED).all()
    assert res.finish_ms.tolist() == [0.0, 10.0, 20.0]
    assert loop.observations[0].drops == 3 and loop.observations[0].arrivals == 3


def test_queries_queued_at_a_model_whose_last_gpu_leaves_fail_at_the_move():
    # 1 light GPU, batch 1 (100 ms), q0..q2 queue; at the 150-ms tick the plan moves the GPU to
    # heavy: q0 was done at 100, q1 (running until 200) finishes, q2 (queued) fails at 150.
    res, _ = run([0, 1, 2], plan(light=1), plan(light=0, heavy=1), window_s=0.15)
    assert res.outcome.tolist() == [SERVED_LIGHT, SERVED_LIGHT, DROPPED]
    assert res.finish_ms.tolist() == [100.0, 200.0, 150.0]


def test_observation_is_built_by_the_live_loops_builder_from_the_same_measurements():
    res, loop = run([0, 1, 2, 3, 4], plan(light=1, bl=4), window_s=1.0, loop_cls=ObservingLoop)
    obs = loop.observations[0]
    assert obs.arrivals == 5 and obs.window_s == 1.0 and obs.drops == 0
    assert obs.queue_delay_ms["light"] == pytest.approx((0 + 99 + 98 + 97 + 96) / 5)
    assert "heavy" not in obs.queue_delay_ms  # nothing dispatched there, as Triton reports no queue count
    assert dict(obs.current.workers) == {"light": 1, "heavy": 0}
    # orchestrator.observe.build_observation: per-model arrival rate, Little's-law queue length
    assert obs.model_arrival_qps["light"] == pytest.approx(5.0) and obs.model_arrival_qps["heavy"] == 0.0
    assert obs.queue_length["light"] == pytest.approx(5.0 * obs.queue_delay_ms["light"] / 1000.0)
    assert obs.timeouts == 0


def test_plan_asking_for_more_workers_than_the_cluster_has_is_rejected():
    with pytest.raises(ValueError, match=r"3 workers \{'light': 3, 'heavy': 0\}; only 2 slots"):
        run([0], plan(light=3), workers=2)


def test_plan_with_a_batch_size_beyond_the_profile_is_rejected():
    with pytest.raises(ValueError, match="batch size 8 for 'light'; expected 1..4"):
        run([0], plan(light=1, bl=8))


def _random_trace_run(seed):
    rng = np.random.default_rng(7)
    arrivals = np.sort(rng.uniform(0, 20_000, 400))
    return run(arrivals, plan(light=2, heavy=6, bl=4, bh=2, routing="random", heavy_share=0.4),
               workers=8, seed=seed)[0]


def test_same_seed_gives_identical_runs_and_another_seed_changes_random_routing():
    a, b, c = _random_trace_run(1), _random_trace_run(1), _random_trace_run(2)
    assert np.array_equal(a.outcome, b.outcome) and np.array_equal(a.finish_ms, b.finish_ms, equal_nan=True)
    assert not np.array_equal(a.outcome, c.outcome)
    share = np.mean(a.outcome == SERVED_HEAVY)
    assert 0.3 < share < 0.5  # heavy with probability 0.4


def _result(arrival_ms, finish_ms, outcome, routing):
    rec = WindowRecord(time_ms=0.0, threshold=0.0, routing=routing, light_fraction=0.5, workers={}, batch_size={},
                       demand_qps=0.0, measured_rate_qps=None, status="", reason="", planner_wall_ms=0.0)
    return SimResult(arrival_ms=np.array(arrival_ms, float), finish_ms=np.array(finish_ms, float),
                     outcome=np.array(outcome, np.int8), windows=(rec,), slo_ms=1000.0, window_s=1.0, events=0,
                     loop_wall_s=0.0, planner_wall_s=0.0)


def test_fid_is_read_from_the_quality_curve_at_each_windows_light_share_weighted_by_responses():
    L, H = SERVED_LIGHT, SERVED_HEAVY
    # window 0: 2 light (share 1 -> FID 22); window 1: 1 light + 1 heavy (share .5 -> 16) + 1 drop.
    res = _result([0, 10, 1000, 1010, 1020], [100, 110, 1100, 1110, 1020], [L, L, L, H, DROPPED], "cascade")
    s = summarize(res, QUALITY)
    assert s.mean_fid == pytest.approx((2 * 22.0 + 2 * 16.0) / 4)
    assert s.violation_ratio == pytest.approx(1 / 5)
    assert s.light_share == pytest.approx(3 / 4)


def test_query_agnostic_routing_uses_the_linear_blend_of_the_curve_end_points():
    res = _result([0, 10], [100, 1010], [SERVED_LIGHT, SERVED_HEAVY], "random")
    assert summarize(res, QUALITY).mean_fid == pytest.approx((18.0 + 22.0) / 2)


def test_fluid_bound_caps_the_heavy_share_by_what_the_gpus_left_after_light_can_serve():
    from benchmarks.sim.metrics import fluid_fid_bound

    light = ModelProfile("light", {1: 100.0})  # 10 qps per GPU
    heavy = ModelProfile("heavy", {1: 1000.0}, quality_rank=1)  # 1 qps per GPU
    # 50 queries in 5 s = 10 qps: 1 light GPU, 2 heavy GPUs -> at most 20% heavy, light share >= 0.8;
    # the curve's minimum on [0.8, 1] is at 0.8: 16 + 0.3 / 0.5 x 6 = 19.6.
    busy = np.linspace(0, 4999, 50)
    assert fluid_fid_bound(busy, 5.0, light, heavy, 3, 5000.0, QUALITY) == pytest.approx(19.6)
    # 5 queries in 5 s = 1 qps: the heavy GPUs could take them all, so the curve's minimum (16) is reachable.
    idle = np.linspace(0, 4999, 5)
    assert fluid_fid_bound(idle, 5.0, light, heavy, 3, 5000.0, QUALITY) == pytest.approx(16.0)


def test_scalar_and_numpy_batch_paths_give_identical_runs(monkeypatch):
    import benchmarks.sim.engine as engine

    rng = np.random.default_rng(3)
    arrivals = np.sort(rng.uniform(0, 30_000, 600))
    conf = rng.uniform(0, 1, 600)
    plans = (plan(light=2, heavy=6, bl=4, bh=2, t=0.4), plan(light=1, heavy=7, bl=4, bh=2, t=0.6))
    kw = dict(conf=conf, workers=8, slo_ms=3000.0, window_s=2.0, load_s=0.5)
    small, _ = run(arrivals, *plans, **kw)
    monkeypatch.setattr(engine, "_SMALL", 0)  # every batch through the numpy path
    large, _ = run(arrivals, *plans, **kw)
    assert np.array_equal(small.outcome, large.outcome)
    assert np.array_equal(small.finish_ms, large.finish_ms, equal_nan=True)
    assert (small.outcome == SERVED_HEAVY).any() and (small.outcome == SERVED_LIGHT).any()


def test_gpus_move_as_the_live_placement_moves_them_keeping_the_lowest_slots():
    # 2 light GPUs; q0 at t=0 runs on GPU 1 (0..100 ms) while GPU 0 idles. At the 50-ms tick the
    # plan wants 1 light + 1 heavy: the live placement keeps light on slot 0 and moves slot 1, the
    # busy one, which finishes q0 and loads heavy 100..600 ms (not the idle GPU 0 at once).
    # q1 (60 ms, deferred at t=0.5): light on GPU 0 60..160, heavy 600..1600.
    res, _ = run([0, 60], plan(light=2), plan(light=1, heavy=1, t=0.5), conf=[0.9, 0.1], workers=2,
                 window_s=0.05, load_s=0.5)
    assert res.outcome.tolist() == [SERVED_LIGHT, SERVED_HEAVY]
    assert res.finish_ms.tolist() == [100.0, 1600.0]
