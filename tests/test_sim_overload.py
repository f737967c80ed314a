"""The overload experiment's pieces (benchmarks/sim/overload.py); the runs themselves are in
benchmarks/results/sim/overload/ (``python -m benchmarks.sim --only overload``)."""
from __future__ import annotations

import numpy as np

from benchmarks.sim.overload import KeepDefaultShedding, overload_span
from planner import make_policy
from planner.types import DeferralCurve, Instance, ModelProfile, QualityCurve

LIGHT = ModelProfile("light", {1: 100.0, 2: 150.0})
HEAVY = ModelProfile("heavy", {1: 1000.0, 2: 1500.0}, quality_rank=1)


def test_overload_span_is_the_longest_run_of_windows_above_capacity():
    # 1-s windows: 2, 5, 5, 1, 5 queries; above 4 qps: windows 1-2 (2 s in a row), then window 4 (1 s).
    counts = [2, 5, 5, 1, 5]
    arrivals = np.concatenate([k * 1000.0 + np.linspace(0, 900, n) for k, n in enumerate(counts)])
    assert overload_span(arrivals, 1.0, 4.0) == (2.0, 5.0)
    assert overload_span(arrivals, 1.0, 5.0) == (0.0, 5.0)  # at capacity is not above it


def test_the_reference_run_keeps_the_default_shedding_of_the_overload_fallback():
    inst = Instance(models=(LIGHT, HEAVY), demand_qps=1e4, slo_ms=5000.0, num_workers=2,
                    deferral=DeferralCurve((0.0, 1.0), (0.0, 1.0)), quality=QualityCurve((0.0, 1.0), (18.0, 22.0)))
    policy = make_policy("diffserve")
    assert policy.plan(inst).status == "FALLBACK" and policy.plan(inst).admit_factor == 1.0
    reference = KeepDefaultShedding(policy)
    assert reference.name == "diffserve" and reference.plan(inst).admit_factor is None
