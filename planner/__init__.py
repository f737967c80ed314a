"""Pure planner (no Triton): an :class:`Instance` (profiles, demand, SLO, GPUs, curves, current
allocation, observed queueing) -> a :class:`Plan` (GPUs, batch size per model, threshold,
capacity, expected quality, slack, solver status).

Public API::

    from planner import make_policy, data
    profiles, deferral, quality = data.load_paper()
    inst = Instance(models=profiles, demand_qps=12.0, slo_ms=5000, num_workers=15,
                    deferral=deferral, quality=quality)
    plan = make_policy("diffserve").plan(inst)   # never raises for a valid Instance
"""
from planner import data
from planner.policies import POLICY_NAMES, make_policy
from planner.types import (Allocation, DeferralCurve, HybridSurface, Instance, ModelProfile, Plan, QualityCurve,
                           RouterCurve)

__all__ = [
    "POLICY_NAMES",
    "Allocation",
    "DeferralCurve",
    "HybridSurface",
    "Instance",
    "ModelProfile",
    "Plan",
    "QualityCurve",
    "RouterCurve",
    "data",
    "make_policy",
]
