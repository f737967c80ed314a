"""The cascade MILP of the ``diffserve`` and ``quality`` policies, one module per role.

- :mod:`planner.milp.model`: the formulation (data, variables, constraints (C1)-(C10),
  objectives) in its docstring, and the CP-SAT model built from it;
- :mod:`planner.milp.spec`: what a policy asks (:class:`CascadeSpec`), units, failure;
- :mod:`planner.milp.options`: threshold grids, stage options and their priced latencies;
- :mod:`planner.milp.pruning`: exact reductions before any model is built;
- :mod:`planner.milp.decompose`: one model per pair, best bound first, and the search over them;
- :mod:`planner.milp.decode`: solver values -> :class:`planner.types.Plan`;
- :mod:`planner.milp.solve`: :func:`solve_cascade`, the pipeline of the above.
"""
from planner.milp.options import GridPoint, threshold_grid
from planner.milp.solve import solve_cascade
from planner.milp.spec import CascadeSpec, PlannerInfeasible

__all__ = ["CascadeSpec", "GridPoint", "PlannerInfeasible", "solve_cascade", "threshold_grid"]
