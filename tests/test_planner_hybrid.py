"""The ``hybrid`` policy (a prompt router in front of the cascade) against an independent brute
force, and the properties the router must keep: r = 0 is the cascade-only plan, a routed query
costs only heavy (latency and capacity), and the HADIS reference data loads as documented.

The brute force enumerates every pair, grid point (the pair's f(t) at r = 0, its surface's points
at r > 0), option (batch, utilization level) and GPU count in real arithmetic, with the semantics
of planner/milp/model.py's docstring: the light stage sees D (1 - r), the heavy stage D f; the
SLO binds light + heavy when the discriminator defers some (f > r), else each stage alone.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random

import numpy as np
import pytest

from planner import DeferralCurve, HybridSurface, Instance, ModelProfile, QualityCurve, RouterCurve, make_policy
from planner import queueing
from planner.hadis import load_hadis, routed_mask
from planner.types import Allocation
from tests.planner_support import assert_plan_matches_brute_force

LEVELS = (0.6, 0.9)


def _stage_ms(prof: ModelProfile, b: int, rho: float, lam: float, x: int) -> float | None:
    """Latency of x GPUs at batch b, level rho, rate lam (the ``quality`` queueing model); None if infeasible."""
    s = prof.latency_ms(b)
    cmin = max(1, math.ceil(lam * s / 1000 / b / rho - 1e-9))
    if x < cmin or rho * prof.throughput_qps(b) * x < lam - 1e-9:
        return None
    fill = 0.0 if b == 1 else 1000 * (b - 1) * x / lam
    return s + queueing.mdc_wait_ms(lam, b, s, cmin) + fill


def _stage_plans(prof: ModelProfile, lam: float, gpus: int) -> list[tuple[int, float]]:
    """(GPUs, latency) of every feasible option of a stage at rate lam; [(0, 0)] when it does not run."""
    if lam <= 0:
        return [(0, 0.0)]
    out = []
    for b, rho, x in itertools.product(prof.batch_sizes, LEVELS, range(1, gpus + 1)):
        ms = _stage_ms(prof, b, rho, lam, x)
        if ms is not None:
            out.append((x, ms))
    return out


def _points(inst: Instance, pair: tuple[str, str]) -> list[tuple[float, float, float]]:
    """(r, f, FID) of a pair: its curves' thresholds at r = 0, its surface at r > 0 (all of it without curves)."""
    pts = []
    curves = inst.curves_for(*pair)
    if curves is not None:
        pts += [(0.0, curves[0].f(t), curves[1].fid_at(1 - curves[0].f(t))) for t in curves[0].thresholds]
    surface = inst.hybrid_surfaces.get(pair)
    if surface is not None:
        pts += [(r, surface.heavy_share(r, d), surface.fid[i][j]) for i, r in enumerate(surface.router_share)
                for j, d in enumerate(surface.disc_share) if r > 0 or curves is None]
    return pts


def brute_force(inst: Instance, gamma: float) -> float | None:
    """Best FID + gamma * loads / N over every plan (None: nothing feasible)."""
    names, n_gpus, demand, best = [m.name for m in inst.models], inst.num_workers, inst.demand_qps, None
    cur = inst.current.workers if inst.current else {}
    for light, heavy in itertools.combinations(names, 2):
        for r, f, fid in _points(inst, (light, heavy)):
            lights = _stage_plans(inst.model(light), demand * (1 - r) if r < 1 else 0.0, n_gpus)
            heavies = _stage_plans(inst.model(heavy), demand * f, n_gpus)
            for (xl, ml), (xh, mh) in itertools.product(lights, heavies):
                path_ms = ml + mh if f > r else max(ml, mh)
                if xl + xh > n_gpus or path_ms > inst.slo_ms:
                    continue
                loads = max(0, xl - cur.get(light, 0)) + max(0, xh - cur.get(heavy, 0))
                obj = fid + gamma * loads / n_gpus
                best = obj if best is None else min(best, obj)
    return best


def _surface(rng: random.Random) -> HybridSurface:
    shares = (0.0, 0.5, 1.0)
    fid = tuple(tuple(rng.uniform(12, 30) for _ in shares) for _ in shares)
    thresholds = tuple(tuple(sorted(rng.uniform(0, 1) for _ in shares)) for _ in shares)
    return HybridSurface(shares, shares, fid, thresholds)


def _random_instance(rng: random.Random) -> Instance:
    n_models = rng.choice((2, 3))
    models = []
    for i in range(n_models):
        base = rng.uniform(100, 500) * (1 + 1.5 * i)
        models.append(ModelProfile(f"m{i}", {b: base * (0.6 + 0.4 * b) for b in sorted(rng.sample([1, 2, 4], 2))}, i))
    names = [m.name for m in models]
    ts = (0.0, 0.5, 1.0)

    def curves():
        return DeferralCurve(ts, (0.0, rng.uniform(0.1, 0.6), 1.0)), QualityCurve((0.0, 0.5, 1.0), tuple(
            rng.uniform(12, 30) for _ in range(3)))

    pairs = list(itertools.combinations(names, 2))
    pair_curves = {p: curves() for p in pairs if p != (names[0], names[-1]) and rng.random() < 0.5}
    surfaces = {p: _surface(rng) for p in pairs if rng.random() < 0.8}
    f0, q0 = curves()
    return Instance(models=tuple(models), demand_qps=rng.uniform(0.5, 8.0), slo_ms=rng.uniform(1200, 5000),
                    num_workers=rng.randint(2, 5), deferral=f0, quality=q0, pair_curves=pair_curves,
                    hybrid_surfaces=surfaces)


@pytest.mark.parametrize("seed", range(30))
def test_hybrid_matches_brute_force(seed):
    rng = random.Random(7000 + seed)
    inst, gamma = _random_instance(rng), 0.0
    if seed % 3 == 0:  # the move cost against a random current allocation
        gamma = 2.0
        inst = dataclasses.replace(inst, current=Allocation(workers={m.name: rng.randint(0, 2) for m in inst.models},
                                                            batch_size={}))
    best = brute_force(inst, gamma)
    plan = make_policy("hybrid", utilization_levels=LEVELS, switch_cost_fid=gamma).plan(inst)
    assert_plan_matches_brute_force(plan, inst, best, gamma)


def test_the_brute_force_comparison_includes_routed_plans():
    # Not vacuous: on these seeds the optimum routes queries in some instances and not in others.
    shares = [make_policy("hybrid", utilization_levels=LEVELS).plan(_random_instance(random.Random(7000 + s))).router_share
              for s in range(30)]
    assert any(r > 0 for r in shares) and any(r == 0 for r in shares)


def _paper_like(surface_fid_shift: float, router_shares=(0.0, 0.5, 1.0)) -> Instance:
    light = ModelProfile("light", {1: 200.0, 4: 500.0}, 0)
    heavy = ModelProfile("heavy", {1: 900.0, 2: 1500.0}, 1)
    f = DeferralCurve((0.0, 0.3, 0.6, 1.0), (0.0, 0.3, 0.6, 1.0))
    q = QualityCurve((0.0, 0.4, 0.7, 1.0), (18.0, 16.5, 17.5, 23.0))
    d = (0.0, 0.5, 1.0)
    surface = HybridSurface(router_shares, d,
                            tuple(tuple(q.fid_at(1 - HybridSurface.heavy_share(r, x)) + (surface_fid_shift if r > 0 else 0)
                                        for x in d) for r in router_shares),
                            tuple((0.0, 0.5, 1.0) for _ in router_shares))
    return Instance(models=(light, heavy), demand_qps=4.0, slo_ms=3000.0, num_workers=8, deferral=f, quality=q,
                    hybrid_surfaces={("light", "heavy"): surface})


def _decision(p):
    return (p.light_model, p.heavy_model, p.threshold, p.heavy_share, p.router_share, dict(p.workers),
            dict(p.batch_size), p.expected_fid, p.status)


@pytest.mark.parametrize("router_shares", [(0.0,), (0.0, 0.5, 1.0)])
def test_without_a_useful_router_the_hybrid_plan_is_the_cascade_plan(router_shares):
    # A surface with only r = 0, or whose routed points are all far worse: hybrid plans what quality plans.
    inst = _paper_like(surface_fid_shift=50.0, router_shares=router_shares)
    hybrid, quality = make_policy("hybrid").plan(inst), make_policy("quality").plan(inst)
    assert hybrid.router_share == 0.0
    assert _decision(hybrid) == _decision(quality)


def test_a_better_routed_point_is_taken_and_reported():
    inst = _paper_like(surface_fid_shift=-3.0)
    plan = make_policy("hybrid").plan(inst)
    assert plan.router_share > 0 and plan.expected_fid < make_policy("quality").plan(inst).expected_fid
    assert plan.heavy_share >= plan.router_share


def test_routed_queries_pay_only_heavy_latency():
    # light 400 ms + heavy 900 ms > SLO 1 s: no plan defers a query; routing half of them straight to
    # heavy (900 ms) while light serves the rest (400 ms) fits. A plan that adds the two would be infeasible.
    light = ModelProfile("light", {1: 400.0}, 0)
    heavy = ModelProfile("heavy", {1: 900.0}, 1)
    f = DeferralCurve((0.0, 1.0), (0.0, 1.0))
    q = QualityCurve((0.0, 1.0), (15.0, 25.0))
    surface = HybridSurface((0.0, 0.5), (0.0, 0.5), ((25.0, 20.0), (20.0, 17.5)), ((0.0, 0.5), (0.0, 0.5)))
    inst = Instance(models=(light, heavy), demand_qps=0.2, slo_ms=1000.0, num_workers=4, deferral=f, quality=q,
                    hybrid_surfaces={("light", "heavy"): surface})
    plan = make_policy("hybrid", heavy_only=False).plan(inst)  # (all on heavy alone, 900 ms, would fit too)
    assert plan.status == "OPTIMAL"
    assert (plan.router_share, plan.heavy_share, plan.threshold) == (0.5, 0.5, 0.0)
    assert plan.slack_ms == pytest.approx(1000.0 - max(plan.stage_latency_ms.values()))


def test_routed_queries_take_no_light_capacity():
    # One light GPU serves 5 qps; 8 qps arrive. All through light is impossible; with 40 % routed,
    # light sees 4.8 qps and fits on that one GPU, heavy gets the rest of the GPUs.
    light = ModelProfile("light", {1: 200.0}, 0)
    heavy = ModelProfile("heavy", {1: 500.0}, 1)
    f = DeferralCurve((0.0, 1.0), (0.0, 1.0))
    q = QualityCurve((0.0, 1.0), (15.0, 25.0))
    shares = (0.0, 0.4, 1.0)
    fid = tuple(tuple(24.0 - 5 * r - 1 * d for d in (0.0, 1.0)) for r in shares)
    surface = HybridSurface(shares, (0.0, 1.0), fid, tuple((0.0, 1.0) for _ in shares))
    inst = Instance(models=(light, heavy), demand_qps=8.0, slo_ms=4000.0, num_workers=3, deferral=f, quality=q,
                    hybrid_surfaces={("light", "heavy"): surface})
    plan = make_policy("hybrid", utilization_levels=(1.0,)).plan(inst)
    assert plan.status == "OPTIMAL" and plan.router_share == 0.4 and plan.heavy_share == pytest.approx(0.4)
    assert plan.workers == {"light": 1, "heavy": 2}


@pytest.mark.parametrize("bad, message", [
    (dict(router_share=(0.0, 0.0)), "strictly increasing"),
    (dict(fid=((1.0, 2.0),)), "expected 2 rows"),
    (dict(fid=((1.0, float("nan")), (1.0, 2.0))), "finite"),
    (dict(disc_threshold=((0.5, 0.2), (0.0, 1.0))), "non-decreasing"),
])
def test_bad_hybrid_surface_is_refused_with_the_value(bad, message):
    good = dict(router_share=(0.0, 1.0), disc_share=(0.0, 1.0), fid=((1.0, 2.0), (3.0, 4.0)),
                disc_threshold=((0.0, 1.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match=message):
        HybridSurface(**{**good, **bad})


def test_router_curve_maps_a_share_to_a_score_threshold():
    curve = RouterCurve((0.0, 0.5, 1.0), (3.0, 1.0, -2.0))
    assert curve.threshold_for(0.0) is None and curve.threshold_for(0.5) == 1.0
    assert curve.threshold_for(0.25) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="non-increasing"):
        RouterCurve((0.0, 1.0), (1.0, 2.0))
    with pytest.raises(ValueError, match="router share 1.5"):
        curve.threshold_for(1.5)


def test_hadis_data_loads_with_the_documented_semantics():
    h = load_hadis()
    assert len(h.models) == 4 and len(h.surfaces) == 6 and h.slo_ms == 6000.0
    sdxl = h.models[0]
    assert sdxl.latency_ms(1) == 500.0 and sdxl.latency_ms(4) == pytest.approx(500.0 * 4 * 0.9)
    surface = h.surfaces[("sdxl-lightning", "sd35-large-turbo")]
    assert len(surface.router_share) == len(surface.disc_share) == 11
    assert surface.fid[7][1] == 24.88 and surface.fid[0][0] == 29.75  # rows of quality_hybrid_4models.csv
    # The router routes (about) r of the prompts; the threshold at (r, d) defers d of the ones it keeps.
    routed = routed_mask(h.router_score, h.router, 0.3)
    assert routed.mean() == pytest.approx(0.3, abs=0.01)
    kept = h.confidence["sdxl-lightning"][~routed]
    assert np.mean(kept < surface.disc_threshold[3][4]) == pytest.approx(0.4, abs=1 / len(kept))
