"""Reading a solved CP-SAT model back into real numbers and a :class:`planner.types.Plan`."""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping

from ortools.sat.python import cp_model

from planner.milp.model import GroupModel
from planner.milp.options import CascadeOptions
from planner.milp.spec import HEAVY, LIGHT, Choice
from planner.types import Plan


@dataclasses.dataclass(frozen=True)
class GroupSolution:
    """One solved group: its objective value (exact integer; ``min_fid`` only, 0 otherwise), the
    chosen (pair, threshold) and, per model in use, GPUs, batch, capacity and planned latency."""

    objective: int
    choice: Choice
    gpus: Mapping[str, int]
    batch_size: Mapping[str, int]
    capacity_qps: Mapping[str, float]
    latency_ms: Mapping[str, float]


def decode_solution(opts: CascadeOptions, gm: GroupModel, solver: cp_model.CpSolver) -> GroupSolution:
    """The choice and per-model allocation of a solved ``gm``."""
    choice = next(key for key, v in gm.z.items() if solver.value(v))
    (light, heavy), k = choice
    point = opts.grids[(light, heavy)][k]
    gpus, batch, capacity, latency = {}, {}, {}, {}
    for sg in ((light, LIGHT), (heavy, HEAVY)):
        rate_qps = opts.stage_rate_qps(sg, point)
        for i, o in enumerate(gm.stages.get(sg, ())):
            if solver.value(gm.y[(sg, i)]):
                x = int(solver.value(gm.n[(sg, i)]))
                gpus[sg[0]], batch[sg[0]], capacity[sg[0]] = x, o.batch, x * o.mu_qps
                latency[sg[0]] = opts.stage_ms(sg, o, rate_qps, x)
    objective = sum(c * solver.value(v) for v, c in zip(gm.objective_vars, gm.objective_coefs))
    return GroupSolution(objective, choice, gpus, batch, capacity, latency)


def to_plan(opts: CascadeOptions, best: GroupSolution, policy: str, proven: bool, t0: float) -> Plan:
    """The :class:`Plan` of the best solution; ``proven``: every group solved to optimality."""
    (light, heavy), k = best.choice
    point = opts.grids[(light, heavy)][k]
    # A query passes light then heavy only when the discriminator defers some; routed ones pass heavy alone.
    path_ms = sum(best.latency_ms.values()) if point.defers else max(best.latency_ms.values())
    return Plan(
        policy=policy,
        workers=best.gpus,
        batch_size=best.batch_size,
        threshold=point.t,
        capacity_qps=best.capacity_qps,
        expected_fid=point.fid,
        light_fraction=1.0 - point.f,
        slack_ms=opts.inst.slo_ms - path_ms,
        status="OPTIMAL" if proven else "FEASIBLE",
        solve_time_ms=(time.perf_counter() - t0) * 1000.0,
        # Everything on heavy: without a router in the plan the cascade routes every query there
        # (as Clipper-heavy), with one the router threshold does (router share 1).
        routing="heavy" if not point.light_runs and not opts.spec.router else "cascade",
        heavy_share=point.f,
        light_model=light if point.light_runs else "",
        heavy_model=heavy if point.f > 0 else "",
        stage_latency_ms=best.latency_ms,
        router_share=point.r if opts.spec.router else 0.0,
    )
