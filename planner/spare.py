"""Spare GPUs as headroom: a plan that leaves GPUs idle hands them to the models it uses.

A cascade plan sized for the demand estimate leaves the rest of the cluster idle, and an idle
GPU absorbs no burst. Giving it to a model in use changes neither the threshold nor the batch
sizes (so neither the expected FID) and only lowers utilization, hence queueing, between two
plans. Found in simulation (``benchmarks/sim``): on ``maf_1to8qps`` with 15 GPUs the
``quality`` policy planned 2-8 GPUs and timed out 0.7% of the queries in bursts that the idle
GPUs could have served.
"""
from __future__ import annotations

import dataclasses

from planner.types import Instance, Plan


def _arrival_qps(plan: Plan, inst: Instance, name: str) -> float:
    """Planned arrival rate at model ``name``: the queries the prompt router keeps (all without
    one) at the light model of a cascade, the heavy share at the heavy one, the routed share for
    query-agnostic routing."""
    d = inst.demand_qps
    if plan.routing == "cascade":
        return d * (1.0 - plan.router_share) if name == plan.light_model else d * plan.heavy_share
    if plan.routing == "random":
        return d * plan.heavy_share if name == plan.heavy_model else d * (1.0 - plan.heavy_share)
    return d


def spread_spare_workers(plan: Plan, inst: Instance) -> Plan:
    """``plan`` with the GPUs it leaves unused given to the models it already uses.

    The spare GPUs first go back to models that hold them in ``inst.current`` (no model load),
    then one at a time to the model with the highest planned utilization (arrival rate over
    capacity). Threshold, batch sizes and expected FID are unchanged; ``capacity_qps`` grows.
    Fallback plans and plans that use every GPU are returned as they are.
    """
    used = {name: int(w) for name, w in plan.workers.items() if int(w) > 0}
    spare = inst.num_workers - sum(used.values())
    if spare <= 0 or not used or plan.status == "FALLBACK":
        return plan
    mu = {name: inst.model(name).throughput_qps(int(plan.batch_size[name])) for name in used}
    lam = {name: _arrival_qps(plan, inst, name) for name in used}

    def utilization(name: str) -> float:
        return lam[name] / (used[name] * mu[name])

    current = dict(inst.current.workers) if inst.current is not None else {}
    for name in sorted(used, key=utilization, reverse=True):
        back = min(spare, max(0, int(current.get(name, 0)) - used[name]))
        used[name] += back
        spare -= back
    while spare > 0:
        name = max(used, key=utilization)
        used[name] += 1
        spare -= 1
    added = sum(used.values()) - sum(int(w) for w in plan.workers.values() if int(w) > 0)
    note = f"spread {added} spare GPUs as headroom"
    return dataclasses.replace(
        plan,
        workers={**dict(plan.workers), **used},
        capacity_qps={**dict(plan.capacity_qps), **{n: used[n] * mu[n] for n in used}},
        reason=f"{plan.reason}; {note}" if plan.reason else note,
    )
