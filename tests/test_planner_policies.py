"""Planner policies on tiny instances whose optimum is computed by hand in the comments."""
from __future__ import annotations

import math

import pytest
from ortools.sat.python import cp_model

from planner import POLICY_NAMES, Allocation, DeferralCurve, Instance, ModelProfile, QualityCurve, make_policy
from planner import queueing

# Light: 100 ms per query (10 qps per GPU); heavy: 1000 ms per query (1 qps per GPU).
LIGHT = ModelProfile("light", {1: 100.0}, 0)
HEAVY = ModelProfile("heavy", {1: 1000.0}, 1)
# f(t): nothing deferred at t=0, half at t=0.5, everything at t=1.
DEFER = DeferralCurve((0.0, 0.5, 1.0), (0.0, 0.5, 1.0))
# U-shaped FID: half light (15) beats all heavy (20) and all light (25).
QUAL = QualityCurve((0.0, 0.5, 1.0), (20.0, 15.0, 25.0))


def tiny(**kw) -> Instance:
    args = dict(models=(LIGHT, HEAVY), demand_qps=4.0, slo_ms=2000.0, num_workers=4, deferral=DEFER, quality=QUAL)
    args.update(kw)
    return Instance(**args)


def test_diffserve_takes_largest_threshold_that_fits_and_spreads_headroom():
    # D=4, N=4. t=1 needs 4 heavy GPUs (4 qps) + 1 light = 5 > 4: infeasible.
    # t=0.5 needs 2 heavy + 1 light. Headroom tie-break: (1 light, 3 heavy) gives heavy 50 %
    # spare (3 vs 2 qps), light 150 %; (2, 2) gives heavy 0 %. So t=0.5 with 1 + 3.
    plan = make_policy("diffserve").plan(tiny())
    assert plan.status == "OPTIMAL"
    assert plan.threshold == 0.5
    assert dict(plan.workers) == {"light": 1, "heavy": 3}
    assert plan.heavy_share == 0.5 and plan.light_fraction == 0.5
    assert plan.expected_fid == 15.0
    assert plan.capacity_qps == {"light": 10.0, "heavy": 3.0}
    assert plan.slack_ms == pytest.approx(2000 - 100 - 1000)


def test_diffserve_reaches_all_heavy_with_one_more_gpu():
    # N=5: t=1 (f=1) needs 4 heavy + 1 light = 5 <= 5, so maximizing t goes all the way,
    # even though FID(all heavy) = 20 is worse than FID(half) = 15: the paper's objective.
    plan = make_policy("diffserve").plan(tiny(num_workers=5))
    assert plan.threshold == 1.0
    assert dict(plan.workers) == {"light": 1, "heavy": 4}
    assert plan.expected_fid == 20.0


def test_diffserve_charges_littles_law_queueing_against_the_slo():
    # Heavy queue: 3 queries waiting at 2 qps arriving -> 1500 ms (Little's law). With light 100
    # and heavy 1000 ms batches, 100 + 1000 + 1500 > 2000: no deferral fits, so t = 0.
    inst = tiny(num_workers=5, queue_length={"heavy": 3.0}, model_arrival_qps={"heavy": 2.0})
    plan = make_policy("diffserve").plan(inst)
    assert plan.threshold == 0.0 and plan.heavy_share == 0.0
    assert plan.workers.get("heavy", 0) == 0
    # The same delay given directly as queue_delay_ms has the same effect.
    plan2 = make_policy("diffserve").plan(tiny(num_workers=5, queue_delay_ms={"heavy": 1500.0}))
    assert plan2.threshold == 0.0


def test_quality_picks_the_bottom_of_the_u_not_all_heavy():
    # With N=5 all-heavy is feasible (diffserve picks t=1, FID 20), but FID is lowest (15) at
    # t=0.5, so the quality policy stops there.
    plan = make_policy("quality").plan(tiny(num_workers=5))
    assert plan.status == "OPTIMAL"
    assert plan.threshold == 0.5 and plan.expected_fid == 15.0


def test_quality_prices_mdc_queueing_of_the_planned_allocation():
    # N=4, t=0.5: heavy lam=2 qps, a = 2 Erlangs; utilization <= 0.95 needs ceil(2/rho) >= 3
    # workers, so 1 light + 3 heavy. M/D/c wait with 3: C(3, 2) = 4/9, W = 4/9 * 1 s / (3-2) / 2.
    # Light: a = 0.4 on 1 worker: C = 0.4, W = 0.4 * 0.1 s / 0.6 / 2.
    plan = make_policy("quality").plan(tiny())
    assert plan.threshold == 0.5
    assert dict(plan.workers) == {"light": 1, "heavy": 3}
    heavy_wait_ms = 1000 * (4 / 9) * 1.0 / (3 - 2) / 2
    light_wait_ms = 1000 * 0.4 * 0.1 / 0.6 / 2
    assert plan.stage_latency_ms["heavy"] == pytest.approx(1000 + heavy_wait_ms)
    assert plan.stage_latency_ms["light"] == pytest.approx(100 + light_wait_ms)
    assert plan.slack_ms == pytest.approx(2000 - 1100 - heavy_wait_ms - light_wait_ms)


def test_quality_hysteresis_keeps_gpus_for_a_marginal_gain():
    # FID 24.9 at half light vs 25 all light: a 0.1 gain. Current: 2 light + 2 heavy GPUs.
    # t=0.5 needs 3 heavy GPUs (see above), i.e. 1 GPU newly loading heavy: cost 0.5 * 1/4.
    qual = QualityCurve((0.0, 0.5, 1.0), (30.0, 24.9, 25.0))
    current = Allocation(workers={"light": 2, "heavy": 2}, batch_size={"light": 1, "heavy": 1})
    inst = tiny(quality=qual, current=current)
    stay = make_policy("quality", switch_cost_fid=0.5).plan(inst)
    assert stay.threshold == 0.0 and stay.workers.get("heavy", 0) == 0
    move = make_policy("quality", switch_cost_fid=0.0).plan(inst)
    assert move.threshold == 0.5 and move.workers["heavy"] == 3
    # A 0.2 gain is worth the 0.125 move cost.
    qual2 = QualityCurve((0.0, 0.5, 1.0), (30.0, 24.8, 25.0))
    moved = make_policy("quality", switch_cost_fid=0.5).plan(tiny(quality=qual2, current=current))
    assert moved.threshold == 0.5


def test_quality_batch_fill_wait_grows_with_workers():
    # Light batch 4 only: 400 ms, 10 qps per GPU. D=2: each of x workers waits 3 x / 2 s for a
    # full batch, so 1 worker -> 1.5 s fill; 2 -> 3 s. SLO 2100 ms: only 1 light worker fits
    # (400 + 1500 + M/D/1 wait 1000*0.2*0.4/0.8/2 = 50 -> 1950 ms), heavy unaffordable -> t=0.
    light = ModelProfile("light", {4: 400.0}, 0)
    inst = tiny(models=(light, HEAVY), demand_qps=2.0, slo_ms=2100.0, num_workers=6)
    plan = make_policy("quality", heavy_only=False).plan(inst)  # the cascade's fill wait, not heavy alone
    assert plan.threshold == 0.0
    assert plan.workers == {"light": 1}
    assert plan.stage_latency_ms["light"] == pytest.approx(400 + 1500 + 50)


def test_quality_chooses_among_more_than_two_variants():
    # A middle model "mid" (300 ms, 3.33 qps/GPU). Curves only for (light, heavy) and (mid, heavy);
    # (light, mid) has none and must never be chosen. (mid, heavy) reaches FID 12 < 15.
    mid = ModelProfile("mid", {1: 300.0}, 1)
    qual_mid = QualityCurve((0.0, 0.5, 1.0), (20.0, 12.0, 18.0))
    inst = tiny(models=(LIGHT, mid, HEAVY), num_workers=8, pair_curves={("mid", "heavy"): (DEFER, qual_mid)})
    plan = make_policy("quality").plan(inst)
    assert (plan.light_model, plan.heavy_model) == ("mid", "heavy")
    assert plan.expected_fid == 12.0
    # With too few GPUs for mid to carry all 4 qps (needs 2 GPUs at <= 0.95 utilization
    # plus 3 heavy), the planner falls back to the (light, heavy) pair.
    plan2 = make_policy("quality").plan(tiny(models=(LIGHT, mid, HEAVY), num_workers=4, pair_curves={("mid", "heavy"): (DEFER, qual_mid)}))
    assert (plan2.light_model, plan2.heavy_model) == ("light", "heavy")


def test_proteus_routes_the_heavy_share_heavy_capacity_allows():
    # D=5: heavy capacity x_H * 1 qps >= 5 s, light 10 x_L >= 5 (1 - s), x_L + x_H <= 4.
    # All heavy (s=1) would need 5 GPUs; with 1 light + 3 heavy, s = 3/5.
    plan = make_policy("proteus").plan(tiny(demand_qps=5.0))
    assert plan.routing == "random"
    assert plan.heavy_share == pytest.approx(0.6)
    assert dict(plan.workers) == {"light": 1, "heavy": 3}
    assert plan.expected_fid == pytest.approx(0.4 * 25 + 0.6 * 20)
    # D=4: 4 heavy GPUs carry everything.
    assert make_policy("proteus").plan(tiny()).heavy_share == 1.0


def test_clipper_light_picks_smallest_batch_that_keeps_up():
    light = ModelProfile("light", {1: 100.0, 4: 200.0}, 0)  # 10 or 20 qps per GPU
    plan = make_policy("clipper-light").plan(tiny(models=(light, HEAVY), demand_qps=30.0, num_workers=2))
    assert plan.routing == "light" and plan.status == "OPTIMAL"
    assert plan.batch_size == {"light": 4} and plan.workers == {"light": 2}
    over = make_policy("clipper-light").plan(tiny(models=(light, HEAVY), demand_qps=50.0, num_workers=2))
    assert over.status == "FALLBACK" and over.batch_size == {"light": 4}


def test_clipper_heavy_serves_everything_heavy():
    plan = make_policy("clipper-heavy").plan(tiny())
    assert plan.routing == "heavy" and plan.workers == {"heavy": 4}
    assert plan.heavy_share == 1.0 and plan.expected_fid == 20.0


def test_static_default_is_the_papers_configuration():
    light = ModelProfile("light", {16: 770.0}, 0)
    heavy = ModelProfile("heavy", {4: 3680.0}, 1)
    plan = make_policy("static").plan(tiny(models=(light, heavy), num_workers=16, slo_ms=5000.0))
    assert plan.status == "STATIC" and plan.threshold == 0.02
    assert dict(plan.workers) == {"light": 4, "heavy": 12}
    assert dict(plan.batch_size) == {"light": 16, "heavy": 4}
    assert plan.heavy_share == pytest.approx(DEFER.f(0.02))
    small = make_policy("static").plan(tiny(models=(light, heavy), num_workers=8, slo_ms=5000.0))
    assert dict(small.workers) == {"light": 2, "heavy": 6} and "scaled" in small.reason


@pytest.mark.parametrize("name", ["diffserve", "quality", "proteus"])
def test_demand_above_capacity_yields_the_max_throughput_fallback(name):
    light = ModelProfile("light", {1: 100.0, 8: 400.0, 32: 2500.0}, 0)
    # 4 GPUs of light serve at most 4 * 8 / 0.4 = 80 qps (batch 32 misses the 2 s SLO).
    plan = make_policy(name).plan(tiny(models=(light, HEAVY), demand_qps=1000.0))
    assert plan.status == "FALLBACK"
    assert "infeasible" in plan.reason.lower() or "INFEASIBLE" in plan.reason
    assert plan.threshold == 0.0 and plan.heavy_share == 0.0
    assert plan.workers == {"light": 4}
    assert plan.batch_size == {"light": 8}  # largest batch within the SLO
    assert plan.capacity_qps["light"] == pytest.approx(80.0)


def test_solver_trouble_becomes_a_fallback_not_an_exception(monkeypatch):
    def broken(self, model, *a, **k):
        raise RuntimeError("solver crashed")

    monkeypatch.setattr(cp_model.CpSolver, "solve", broken)
    for name in ("diffserve", "quality"):
        plan = make_policy(name).plan(tiny())
        assert plan.status == "FALLBACK"
        assert "RuntimeError" in plan.reason and "solver crashed" in plan.reason


def test_static_with_an_unprofiled_batch_falls_back_with_the_reason():
    plan = make_policy("static").plan(tiny())  # batch 16 / 4 are not profiled in the tiny models
    assert plan.status == "FALLBACK" and "not profiled" in plan.reason


def test_every_policy_returns_a_plan_for_the_same_instance():
    for name in POLICY_NAMES:
        plan = make_policy(name).plan(tiny(num_workers=16))
        assert plan.policy == name
        assert sum(plan.workers.values()) <= 16
        assert math.isfinite(plan.expected_fid) and plan.solve_time_ms >= 0


def test_unknown_policy_and_bad_parameters_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="'nope'.*diffserve"):
        make_policy("nope")
    with pytest.raises(ValueError, match="utilization_levels.*1.5"):
        make_policy("quality", utilization_levels=(0.5, 1.5))
    with pytest.raises(ValueError, match="time_limit_s = 0"):
        make_policy("diffserve", time_limit_s=0)
    with pytest.raises(ValueError, match="switch_cost_fid = -1"):
        make_policy("quality", switch_cost_fid=-1)
    with pytest.raises(ValueError, match="threshold = 2"):
        make_policy("static", threshold=2)
    with pytest.raises(TypeError):
        make_policy("clipper-light", batch=4)
    with pytest.raises(TypeError, match="Instance"):
        make_policy("diffserve").plan({"demand_qps": 3})


def test_mdc_wait_matches_pollaczek_khinchine_for_one_server():
    # M/D/1: W = rho s / (2 (1 - rho)). Here s = 1 s, rho = 0.8 -> 2 s.
    assert queueing.mdc_wait_ms(0.8, 1, 1000.0, 1) == pytest.approx(2000.0)
    assert queueing.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert queueing.littles_law_delay_ms(3.0, 2.0) == pytest.approx(1500.0)
    assert queueing.batch_fill_ms(2.0, 4, 2) == pytest.approx(3000.0)
    assert math.isinf(queueing.mdc_wait_ms(2.0, 1, 1000.0, 2))


def test_spare_gpus_become_headroom_without_changing_the_plan():
    # D=2, N=10: the quality plan needs ~1 light + 2 heavy GPUs; spreading hands the other 7 to
    # the models in use, keeping threshold, batch sizes and FID, and lowering utilization.
    inst = tiny(demand_qps=2.0, num_workers=10)
    base = make_policy("quality").plan(inst)
    spread = make_policy("quality", spread_spare_workers=True).plan(inst)
    assert sum(base.workers.values()) < 10 == sum(spread.workers.values())
    assert (spread.threshold, dict(spread.batch_size), spread.expected_fid) == (base.threshold, dict(base.batch_size), base.expected_fid)
    assert set(spread.workers) == set(base.workers)
    assert all(spread.capacity_qps[m] >= base.capacity_qps[m] for m in base.workers)
    assert "spare" in spread.reason


def test_quality_draining_queues_gives_the_queued_model_more_capacity():
    light = ModelProfile("light", {1: 100.0, 4: 220.0}, 0)
    heavy = ModelProfile("heavy", {1: 1000.0, 2: 1400.0}, 1)
    base = tiny(models=(light, heavy), num_workers=12, slo_ms=5000.0, demand_qps=4.0,
                queue_length={"heavy": 20.0, "light": 0.0})
    plain = make_policy("quality").plan(base)
    drain = make_policy("quality", drain_queues=True).plan(base)
    assert plain.status == drain.status == "OPTIMAL"
    # 20 queued heavy queries over the 5 s SLO are 4 qps more at the heavy stage: the plan must
    # give it capacity for them on top of the deferred share (or defer less).
    assert drain.heavy_share == plain.heavy_share > 0  # enough GPUs: same threshold, more heavy GPUs
    need = 4.0 * drain.heavy_share + 20.0 / 5.0
    assert drain.capacity_qps["heavy"] >= need > plain.capacity_qps["heavy"]


def test_cascade_spec_rejects_an_unknown_objective_naming_it():
    from planner.milp import CascadeSpec
    from planner.queueing import QueueModel

    with pytest.raises(ValueError, match="'max_fid'.*'max_threshold' or 'min_fid'"):
        CascadeSpec("max_fid", QueueModel("observed"), ())


@pytest.mark.parametrize("name", ["diffserve", "quality", "proteus"])
def test_overload_fallback_drains_a_backlog_at_the_highest_throughput_batch(name):
    # Light: batch 1 = 10 qps/GPU, batch 8 = 20 qps/GPU, batch 32 misses the 2 s SLO on its own.
    # Little's law: 300 queued at 100 qps = 3 s of queueing, more than the SLO, so no batch
    # "fits" with the queueing. Batch 1 would halve the capacity the backlog needs to drain;
    # the plan keeps the highest-throughput batch that executes within the SLO.
    light = ModelProfile("light", {1: 100.0, 8: 400.0, 32: 2500.0}, 0)
    inst = tiny(models=(light, HEAVY), demand_qps=1000.0,
                queue_length={"light": 300.0}, model_arrival_qps={"light": 100.0})
    plan = make_policy(name).plan(inst)
    assert plan.status == "FALLBACK"
    assert plan.batch_size == {"light": 8} and plan.workers == {"light": 4}
    assert plan.capacity_qps["light"] == pytest.approx(80.0)
    assert "drain the backlog" in plan.reason and "3000 ms" in plan.reason


def test_overload_fallback_takes_the_highest_throughput_batch_when_none_executes_within_the_slo():
    # SLO 2 s; batch 2 (2.5 s, 0.8 qps/GPU) and batch 4 (3 s, 1.33 qps/GPU) both miss it alone.
    light = ModelProfile("light", {2: 2500.0, 4: 3000.0}, 0)
    plan = make_policy("diffserve").plan(tiny(models=(light, HEAVY), demand_qps=50.0))
    assert plan.status == "FALLBACK" and plan.batch_size == {"light": 4}


def test_fallback_prefers_throughput_over_batch_size_where_the_gpu_saturates():
    # The paper's SD-Turbo saturates at batch 16: 20.78 qps/GPU at 770 ms, 20.51 at 32 (1560 ms).
    light = ModelProfile("light", {1: 100.0, 16: 770.0, 32: 1560.0}, 0)
    plan = make_policy("diffserve").plan(tiny(models=(light, HEAVY), demand_qps=1000.0, slo_ms=5000.0))
    assert plan.status == "FALLBACK" and plan.batch_size == {"light": 16}
    assert plan.capacity_qps["light"] == pytest.approx(4 * 16 / 0.77)


def _fine_curves():
    ts = tuple(i / 100 for i in range(101))
    return DeferralCurve(ts, ts), QualityCurve((0.0, 1.0), (20.0, 40.0))  # all heavy FID 20, all light 40


def test_quality_serves_everything_on_heavy_alone_when_that_fits_and_beats_the_cascade():
    # 20 qps, 2 GPUs: a cascade needs one GPU for light and serves <= 13.3 qps on heavy (f <= 0.63);
    # two heavy GPUs at batch 4 serve 26.7 qps. Heavy alone: FID 20 instead of ~27, light not loaded.
    f, q = _fine_curves()
    inst = Instance(models=(ModelProfile("light", {1: 10.0}, 0), ModelProfile("heavy", {1: 100.0, 4: 300.0}, 1)),
                    demand_qps=20.0, slo_ms=5000.0, num_workers=2, deferral=f, quality=q)
    plan = make_policy("quality").plan(inst)
    assert (plan.routing, dict(plan.workers), plan.expected_fid, plan.router_share) == ("heavy", {"heavy": 2}, 20.0, 0.0)
    cascade = make_policy("quality", heavy_only=False).plan(inst)
    assert cascade.routing == "cascade" and cascade.workers["light"] == 1 and cascade.expected_fid > 25.0


def test_quality_prices_queueing_at_the_forecast_not_the_over_provisioned_demand():
    # heavy batch 4 = 400 ms (10 qps per GPU), SLO 2 s, 12 qps planned. Priced at 12 qps, batch fill
    # + M/D/1 wait keep heavy at utilization <= 0.9 (f = 0.71: 1.90 s); when 12 qps is a 1.2x margin
    # over a 10-qps forecast, the top level 0.95 of it waits as 0.79 does, so f = 0.79 fits (1.47 s).
    f, q = _fine_curves()
    models = (ModelProfile("light", {1: 10.0}, 0), ModelProfile("heavy", {4: 400.0}, 1))
    kw = dict(models=models, demand_qps=12.0, slo_ms=2000.0, num_workers=2, deferral=f, quality=q)
    plain = make_policy("quality", heavy_only=False).plan(Instance(**kw))
    margin = make_policy("quality", heavy_only=False).plan(Instance(**kw, demand_margin=1.2))
    assert plain.heavy_share == pytest.approx(0.71)
    assert margin.heavy_share == pytest.approx(0.79)
    assert sum(margin.stage_latency_ms.values()) <= 2000.0


def test_an_instance_rejects_a_demand_margin_below_one():
    f, q = _fine_curves()
    with pytest.raises(ValueError, match="demand_margin"):
        Instance(models=(ModelProfile("light", {1: 10.0}, 0), ModelProfile("heavy", {4: 400.0}, 1)), demand_qps=1.0,
                 slo_ms=2000.0, num_workers=2, deferral=f, quality=q, demand_margin=0.9)
