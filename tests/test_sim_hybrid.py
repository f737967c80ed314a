"""The simulator with the prompt router and several variants: routed queries skip light, a query
keeps the pair it was admitted under, served FID is read off the pair's surface, and a synthetic
HADIS-like cascade runs through the hybrid experiment end to end."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.sim.engine import DROPPED, SERVED_HEAVY, SERVED_LIGHT, SimConfig, SimResult, simulate
from benchmarks.sim.hybrid import HybridConfig, run_trace, surface_fid
from benchmarks.sim.trace import Trace
from orchestrator.control import ControlConfig, ControlLoop, DemandEstimator
from planner.hadis import HadisData, disc_thresholds, quantile_deferral, router_curve
from planner.types import DeferralCurve, HybridSurface, ModelProfile, Plan, QualityCurve, RouterCurve

LIGHT = ModelProfile("light", {1: 100.0, 2: 150.0})
HEAVY = ModelProfile("heavy", {1: 1000.0, 2: 1500.0}, quality_rank=1)
CURVE = DeferralCurve((0.0, 1.0), (0.0, 1.0))
QUALITY = QualityCurve((0.0, 1.0), (18.0, 22.0))
ROUTER = RouterCurve((0.0, 0.5, 1.0), (1.0, 0.5, 0.0))  # share 0.5 -> route scores >= 0.5


class Fixed:
    def __init__(self, plan):
        self.p = plan

    def plan(self, instance):
        return self.p


def _plan(workers, light="light", heavy="heavy", t=0.0, router_share=0.0):
    return Plan(policy="fixed", workers=workers, batch_size={n: 1 for n in workers}, threshold=t, capacity_qps={},
                expected_fid=0.0, light_fraction=0.5, slack_ms=0.0, status="STATIC", heavy_share=0.5,
                light_model=light, heavy_model=heavy, router_share=router_share)


def _run(plan, arrivals, conf, models=(LIGHT, HEAVY), router_score=None, router=None, workers=2):
    trace = Trace(np.asarray(arrivals, dtype=float), np.arange(len(arrivals)))
    cc = ControlConfig(models=models, slo_ms=5000.0, num_workers=workers, deferral=CURVE, quality=QUALITY)
    return simulate(trace, np.asarray(conf, dtype=float), ControlLoop(cc, Fixed(plan), DemandEstimator()),
                    SimConfig(model_load_s=0.0), router_score=router_score, router=router)


def test_routed_queries_skip_light_and_the_discriminator():
    # q0 scores above the router threshold: straight to heavy (0..1000 ms). q1 below: light (0..100),
    # confident, served there. Without the router q0 would pass light first and be served there at 100 ms.
    plan = _plan({"light": 1, "heavy": 1}, t=0.5, router_share=0.5)
    res = _run(plan, [0, 0], conf=[0.9, 0.9], router_score=np.array([0.8, 0.2]), router=ROUTER)
    assert res.outcome.tolist() == [SERVED_HEAVY, SERVED_LIGHT]
    assert res.finish_ms.tolist() == [1000.0, 100.0]
    assert res.routed.tolist() == [True, False]
    plain = _run(plan, [0, 0], conf=[0.9, 0.9])
    assert plain.outcome.tolist() == [SERVED_LIGHT, SERVED_LIGHT] and not plain.routed.any()


def test_a_routed_query_and_a_deferred_one_reach_the_same_heavy_model_by_different_paths():
    plan = _plan({"light": 1, "heavy": 1}, t=0.5, router_share=0.5)
    res = _run(plan, [0, 0], conf=[0.9, 0.1], router_score=np.array([0.7, 0.1]), router=ROUTER)
    # q0 routed: heavy 0..1000. q1 cascades: light 0..100, deferred (0.1 < 0.5), heavy 1000..2000.
    assert res.outcome.tolist() == [SERVED_HEAVY, SERVED_HEAVY]
    assert res.finish_ms.tolist() == [1000.0, 2000.0]
    assert res.routed.tolist() == [True, False]


def test_a_query_runs_on_the_pair_of_its_plan_among_several_variants():
    # Three variants; the plan runs the pair (mid, big): the light stage is "mid", not the first model.
    mid = ModelProfile("mid", {1: 300.0}, 1)
    big = ModelProfile("big", {1: 2000.0}, 2)
    small = ModelProfile("small", {1: 50.0}, 0)
    plan = _plan({"mid": 1, "big": 1}, light="mid", heavy="big", t=0.5)
    conf = np.array([[0.9, 0.9], [0.9, 0.1], [0.0, 0.0]])  # rows: confidence in small's, mid's, big's image
    res = _run(plan, [0, 0], conf, models=(small, mid, big))
    assert res.model_names == ("small", "mid", "big")
    assert res.light_model.tolist() == [1, 1] and res.heavy_model.tolist() == [2, 2]
    # q0 confident in mid's image: served by mid at 300 ms; q1 (0.1 < 0.5) deferred to big: 600..2600.
    assert res.outcome.tolist() == [SERVED_LIGHT, SERVED_HEAVY] and res.finish_ms.tolist() == [300.0, 2600.0]


def test_served_fid_is_the_surface_at_the_window_realised_router_and_discriminator_shares():
    surface = HybridSurface((0.0, 1.0), (0.0, 1.0), ((30.0, 20.0), (10.0, 10.0)), ((0.0, 1.0), (0.0, 1.0)))
    n = 8  # one window: 2 routed, 3 deferred of the 6 that passed light, 2 light-served, 1 dropped
    outcome = np.array([SERVED_HEAVY] * 2 + [SERVED_HEAVY] * 3 + [SERVED_LIGHT] * 2 + [DROPPED])
    res = SimResult(arrival_ms=np.arange(n, dtype=float), finish_ms=np.ones(n), outcome=outcome, windows=(),
                    slo_ms=5000.0, window_s=5.0, events=0, loop_wall_s=0.0, planner_wall_s=0.0, model_names=("a", "b"),
                    light_model=np.zeros(n, np.int8), heavy_model=np.ones(n, np.int8),
                    routed=np.array([True, True] + [False] * 6))
    mean, per_window = surface_fid(res, {("a", "b"): surface})
    r, d = 2 / 7, 3 / 5  # of the 7 responses; of the 5 responses that passed light
    assert mean == pytest.approx(surface.fid_at(r, d)) and per_window.tolist() == pytest.approx([mean])


def _synthetic_hadis(tmp_path) -> HadisData:
    """Three variants whose surfaces, like HADIS's, give each model's own FID where it serves alone
    (all light at (0, 0), all heavy at r = 1) and a mix better than both, routing better than
    deferring; the router's high scores are the prompts whose light images the discriminator dislikes."""
    rng = np.random.default_rng(3)
    models = (ModelProfile("s", {b: 100.0 * b for b in (1, 2, 4)}, 0), ModelProfile("m", {b: 300.0 * b for b in (1, 2)}, 1),
              ModelProfile("l", {1: 900.0, 2: 1700.0}, 2))
    prompts = 60
    score = rng.normal(size=prompts)
    conf = {m.name: np.clip(0.5 - 0.2 * score + rng.normal(0, 0.1, prompts), 0.001, 0.999) for m in models}
    shares = (0.0, 0.5, 1.0)
    curve = router_curve(score, shares)
    surfaces, pair_curves = {}, {}
    solo = {"s": 30.0, "m": 24.0, "l": 20.0}
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            def fid_at(r, d, a=a.name, b=b.name):
                h = HybridSurface.heavy_share(r, d)
                return (1 - h) * solo[a] + h * solo[b] - 8.0 * h * (1 - h) - 4.0 * r * (1 - h)
            fid = tuple(tuple(fid_at(r, d) for d in shares) for r in shares)
            surfaces[(a.name, b.name)] = HybridSurface(shares, shares, fid,
                                                       disc_thresholds(conf[a.name], score, curve, shares, shares))
            pair_curves[(a.name, b.name)] = (quantile_deferral(conf[a.name], 0.1),
                                             QualityCurve((0.0, 1.0), (fid[0][-1], fid[0][0])))
    (tmp_path / "traces").mkdir()
    arrivals = np.sort(rng.uniform(0, 60_000, 180))  # 3 qps for a minute
    (tmp_path / "traces" / "steady.txt").write_text("".join(f"{t:.1f},{rng.integers(0, prompts)}\n" for t in arrivals))
    return HadisData(models=models, slo_ms=6000.0, surfaces=surfaces, pair_curves=pair_curves, router=curve,
                     router_score=score, confidence=conf, traces_dir=tmp_path / "traces")


def test_hybrid_experiment_on_a_synthetic_hadis_like_cascade(tmp_path):
    h = _synthetic_hadis(tmp_path)
    case = run_trace(HybridConfig(traces=("steady",), num_workers=6), h, "steady")
    hybrid, best = case["policies"]["hybrid"]["summary"], case["policies"]["diffserve-best"]["summary"]
    assert case["best_pair"] in {"->".join(p) for p in h.surfaces}
    assert len(case["diffserve_by_pair"]) == 3
    assert hybrid["routed_share"] > 0  # the router is used where the surface rewards it
    # ours without the router never plans a router share (it may still serve everything on heavy)
    assert all(w["router_share"] == 0 for w in case["policies"]["quality"]["windows"])
    assert hybrid["mean_fid"] < best["mean_fid"] and hybrid["violation_ratio"] <= best["violation_ratio"]
    assert case["checks"]["hybrid FID < diffserve best pair"]
