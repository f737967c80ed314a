"""The cascade MILP's entry point: options -> pruning -> groups -> CP-SAT -> plan."""
from __future__ import annotations

import time

from planner.milp.decode import to_plan
from planner.milp.decompose import choice_groups, solve_groups
from planner.milp.model import tie_weights
from planner.milp.options import build_options
from planner.milp.pruning import feasible_choices, prune_options
from planner.milp.spec import CascadeSpec, PlannerInfeasible
from planner.types import Instance, Plan


def _infeasible(inst: Instance) -> PlannerInfeasible:
    return PlannerInfeasible(
        f"infeasible: {inst.num_workers} GPUs cannot serve {inst.demand_qps:.3f} qps within the "
        f"{inst.slo_ms:.0f} ms SLO at any threshold"
    )


def solve_cascade(inst: Instance, spec: CascadeSpec, policy: str) -> Plan:
    """Solve the cascade MILP for ``inst``; returns the plan or raises :class:`PlannerInfeasible`."""
    t0 = time.perf_counter()
    opts = prune_options(build_options(inst, spec))
    kept = feasible_choices(opts)
    if not kept:
        raise _infeasible(inst)
    weights = tie_weights(opts)
    groups, bound = choice_groups(opts, kept, weights)
    best, proven = solve_groups(opts, groups, bound, weights, t0)
    if best is None:
        if proven:
            raise _infeasible(inst)
        raise PlannerInfeasible(f"CP-SAT found no plan within {spec.time_limit_s} s")
    return to_plan(opts, best, policy, proven, t0)
