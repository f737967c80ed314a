"""What a cascade policy asks of the MILP (:class:`CascadeSpec`), the MILP's units and its failure."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from planner.queueing import QueueModel

LIGHT, HEAVY = "L", "H"  # a stage's role: the light or the heavy model of a pair
US_PER_MS = 1000.0  # CP-SAT time unit: microseconds
MQ_PER_Q = 1000.0  # CP-SAT rate unit: milli-queries (per second)
FID_SCALE = 10_000  # FID resolution 1e-4 in the integer objective
HEADROOM_MAX_PCT = 100
OBJECTIVES = ("max_threshold", "min_fid")

Pair = tuple[str, str]  # (light model, heavy model)
Stage = tuple[str, str]  # (model, LIGHT | HEAVY): a model as the light or the heavy model of a pair
Choice = tuple[Pair, int]  # (pair, index on the pair's grid of thresholds or (router, discriminator) shares)


class PlannerInfeasible(Exception):
    """No plan satisfies the constraints (or none was found in the time limit); ``str`` says why."""


@dataclasses.dataclass(frozen=True)
class CascadeSpec:
    """What a cascade policy asks of :func:`planner.milp.solve_cascade`."""

    objective: str  # "max_threshold" | "min_fid"
    queue: QueueModel
    pairs: tuple[Pair, ...]
    switch_cost_fid: float = 0.0
    threshold_step: float | None = None
    dedupe_deferral: bool = False  # keep one threshold per distinct f(t) (smallest t)
    time_limit_s: float = 1.0
    search_workers: int = 1  # CP-SAT search threads (not GPUs)
    # CP-SAT presolve (probing, symmetry) costs more than the search on these few-hundred-
    # variable models; off by default.
    presolve: bool = False
    # Measured (``benchmarks/bench_planner.py --solver-sweep``): the LP relaxation and presolve
    # roughly double the CPU time on these models; fixed best-objective-first search and
    # CP-SAT's automatic search are within noise of each other.
    linearization_level: int = 0
    fixed_search: bool = True
    # ``min_fid``: solve each pair as its own model and keep the best (planner.milp.decompose);
    # False builds the one model over all pairs (same plans, kept to check that in the tests).
    decompose_pairs: bool = True
    # Queued queries per model to drain, as extra arrival rate (queries/s) at that model's stage
    # (``quality`` with ``drain_queues``); empty: none.
    backlog_qps: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # ``hybrid``: a pair with a hybrid surface (Instance.hybrid_surfaces) plans on the surface's
    # (router share, discriminator share) grid instead of its threshold grid.
    router: bool = False
    # ``quality``/``hybrid``: each pair may also serve every query on its heavy model alone (the
    # light model and the discriminator do not run), at the quality curve's all-heavy FID. A
    # cascade pays for light on every query; at low demand the same GPUs serve more heavy
    # queries without it (the tiny cascade on 2 CPU slots: 2 heavy slots vs 1 light + 1 heavy).
    heavy_only: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r}; expected 'max_threshold' or 'min_fid'")
        if self.router and self.objective != "min_fid":
            raise ValueError("router=True plans on hybrid surfaces, which only the 'min_fid' objective reads")
