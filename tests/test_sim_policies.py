"""Planner policies as the simulator drives them (regressions found in simulation)."""
from __future__ import annotations

import planner
from planner import data
from planner.types import Instance


def _instance(**kw):
    (light, heavy), deferral, quality = data.load_paper()
    base = dict(models=(light, heavy), demand_qps=30.0, slo_ms=5000.0, num_workers=15, deferral=deferral,
                quality=quality)
    base.update(kw)
    return Instance(**base)


def test_clipper_heavy_stays_on_the_heavy_model_when_its_queue_already_exceeds_the_slo():
    # Little's law: 200 queued at 10 qps = 20 s of queueing, more than the 5 s SLO.
    inst = _instance(queue_length={"sdv15": 200.0}, model_arrival_qps={"sdv15": 10.0})
    plan = planner.make_policy("clipper-heavy").plan(inst)
    assert dict(plan.workers) == {"sdv15": 15}
    assert plan.routing == "heavy" and plan.light_fraction == 0.0
    assert plan.status == "FALLBACK" and "queueing" in plan.reason
    # the highest-throughput batch that executes within the SLO: 4 (1.09 qps/GPU at 3.68 s)
    assert plan.batch_size["sdv15"] == 4
