"""Shared checks of the planner tests: a solved plan against an independent brute force."""
from __future__ import annotations

import pytest


def assert_plan_matches_brute_force(plan, inst, best: float | None, gamma: float) -> None:
    """``plan`` is FALLBACK exactly when the brute force found nothing, else OPTIMAL with the brute
    force's objective (expected FID + ``gamma`` x GPUs loaded / GPUs) within the GPU budget and SLO."""
    if best is None:
        assert plan.status == "FALLBACK"
        return
    assert plan.status == "OPTIMAL"
    cur = inst.current.workers if inst.current else {}
    loads = sum(max(0, x - cur.get(m, 0)) for m, x in plan.workers.items())
    assert plan.expected_fid + gamma * loads / inst.num_workers == pytest.approx(best, abs=1e-9)
    assert sum(plan.workers.values()) <= inst.num_workers and plan.slack_ms >= -1e-6
