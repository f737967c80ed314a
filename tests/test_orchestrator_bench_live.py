"""Pure parts of the live benchmark: trace shaping, arrivals, capacity search, profile lookup."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.live.run import capacity_qps
from benchmarks.live.workload import TRACE_DIR, build_workload, rescale, trace_shape
from orchestrator.devices import resolve_device
from orchestrator.control import ControlConfig
from planner import data
from tests.orchestrator_support import PROFILES

TRACE = TRACE_DIR / "maf_2to16qps.txt"


def test_rescaled_rate_spans_the_asked_range_and_keeps_the_trace_shape():
    shape = trace_shape(TRACE)
    rate = rescale(shape, 60, 2.0, 6.0)
    assert len(rate) == 60 and rate.min() == pytest.approx(2.0) and rate.max() == pytest.approx(6.0)
    # Same ordering of busy and quiet moments as the (resampled) trace.
    idx = (np.arange(60) * len(shape) / 60).astype(int)
    assert np.corrcoef(rate, shape[idx])[0, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected >= 1 s"):
        rescale(shape, 0, 1.0, 2.0)


def test_arrivals_are_poisson_at_the_target_rate_and_reproducible():
    w = build_workload(TRACE, 120, 3.0, 3.0, seed=7, prompt=lambda pid, seed, hard: f"p{pid}")
    assert abs(len(w.arrivals) - 360) < 4 * np.sqrt(360)  # 4 sigma of Poisson(360)
    times = [a.t_s for a in w.arrivals]
    assert times == sorted(times) and 0 <= times[0] and times[-1] < 120
    again = build_workload(TRACE, 120, 3.0, 3.0, seed=7, prompt=lambda pid, seed, hard: f"p{pid}")
    assert again.arrivals == w.arrivals


def test_capacity_is_the_largest_demand_planned_without_fallback():
    profiles, deferral, quality = data.load_calibration(PROFILES, "cpu")
    cfg = ControlConfig(models=profiles, slo_ms=2000.0, num_workers=3, deferral=deferral, quality=quality)
    cap = capacity_qps(cfg, "clipper-heavy")
    # Three heavy workers at the best profiled throughput (batch 8 in 280 ms) bound it from above.
    assert 0 < cap <= 3 * 8 / 0.280 + 1e-6
    from planner import make_policy
    from planner.types import Instance

    def status(q):
        return make_policy("clipper-heavy").plan(Instance(models=profiles, demand_qps=q, slo_ms=2000.0, num_workers=3,
                                                          deferral=deferral, quality=quality)).status
    assert status(cap * 0.99) != "FALLBACK" and status(cap * 1.02) == "FALLBACK"


def test_device_auto_picks_the_only_latency_profile(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"prompts": 3}))
    (tmp_path / "quality_curve.json").write_text(json.dumps({"fid": [1, 2]}))
    with pytest.raises(ValueError, match="exactly one profile JSON"):
        resolve_device(tmp_path, "auto")
    (tmp_path / "cpu-x-2cores.json").write_text(json.dumps({"batch_latency_ms": {}}))
    assert resolve_device(tmp_path, "auto") == "cpu-x-2cores"
    assert resolve_device(tmp_path, "gpu-a100") == "gpu-a100"


def test_routed_share_counts_heavy_answers_whose_light_image_was_never_scored():
    from benchmarks.live.replay import Outcome
    from benchmarks.live.run import PolicyRun, summarize

    nan = float("nan")
    outcomes = (Outcome(0, 0.0, 10.0, True, "heavy", confidence=nan),  # routed by the prompt router
                Outcome(1, 0.1, 10.0, True, "heavy", confidence=0.01),  # deferred by the discriminator
                Outcome(2, 0.2, 10.0, True, "light", confidence=0.9),
                Outcome(3, 0.3, 10.0, True, "light", confidence=0.8),
                Outcome(4, 0.4, 0.0, False, error_kind="RequestDropped"))
    row = summarize(PolicyRun("hybrid", outcomes, ("p",) * 5, 1, 0, 1.0), 5000.0, None, 0)
    assert row["routed_share"] == 0.25 and row["light_share"] == 0.5 and row["served"] == 4
