"""Trace files, trace scaling and the calibration of per-prompt confidences to f(t)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.sim.trace import Trace, calibrate_confidences, load_trace, query_confidences, rate_scale_trace, scale_trace
from planner.types import DeferralCurve

PAPER_F = DeferralCurve((0.0, 0.05, 0.1, 0.5, 0.6, 1.0), (0.0, 0.36, 0.449, 0.993, 1.0, 1.0))


def test_trace_file_is_read_and_sorted_by_arrival(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("368.0,1236\n509.0,2011\n300.0,7\n\n")
    tr = load_trace(p)
    assert tr.arrival_ms.tolist() == [300.0, 368.0, 509.0]
    assert tr.prompt_id.tolist() == [7, 1236, 2011]
    assert tr.name == "t"


def test_malformed_trace_line_is_reported_with_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("1.0,2\nabc,3\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'abc,3'; expected numbers"):
        load_trace(p)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_trace(tmp_path / "nope.txt")


def test_unsorted_arrays_are_refused_by_the_constructor():
    with pytest.raises(ValueError, match="must be sorted"):
        Trace(np.array([2.0, 1.0]), np.array([1, 2]))


def test_scaling_multiplies_the_rate_and_keeps_the_shape():
    rng = np.random.default_rng(0)
    base = Trace.from_unsorted(np.concatenate([rng.uniform(0, 10_000, 50), rng.uniform(10_000, 20_000, 200)]),
                               np.arange(250))
    big = scale_trace(base, 8, seed=3)
    assert len(big) == 8 * 250
    assert np.all(np.diff(big.arrival_ms) >= 0)
    # Offsets are < 1 s, so per-10-s counts move by at most the arrivals of one second's edge.
    counts = np.bincount((big.arrival_ms // 10_000).astype(int))
    assert counts[0] == pytest.approx(8 * 50, abs=8 * 10) and counts[1] == pytest.approx(8 * 200, abs=8 * 30)
    assert np.array_equal(scale_trace(base, 8, seed=3).arrival_ms, big.arrival_ms)
    with pytest.raises(ValueError, match="scale factor 0"):
        scale_trace(base, 0, seed=1)


def test_calibrated_confidences_reproduce_the_deferral_curve_and_keep_the_order():
    raw = np.random.default_rng(1).beta(5, 1, 5000)  # like the paper's: almost all near 1
    cal = calibrate_confidences(raw, PAPER_F)
    for t in (0.02, 0.05, 0.1, 0.3, 0.5, 0.55):
        assert np.mean(cal < t) == pytest.approx(PAPER_F.f(t), abs=2e-3)
    assert np.array_equal(np.argsort(cal, kind="stable"), np.argsort(raw, kind="stable"))


def test_query_confidence_of_an_unknown_prompt_is_an_error():
    tr = Trace(np.array([0.0, 1.0]), np.array([1, 99]))
    with pytest.raises(ValueError, match="prompt_id 99 has no confidence"):
        query_confidences(tr, {1: 0.9, 2: 0.3}, PAPER_F)


def test_rate_scaling_by_a_fraction_multiplies_the_count_and_is_seeded():
    rng = np.random.default_rng(0)
    base = Trace.from_unsorted(rng.uniform(0, 60_000, 2000), np.arange(2000))
    assert rate_scale_trace(base, 1.0, seed=1) is base
    for factor in (0.5, 1.5, 2.0, 3.25):
        tr = rate_scale_trace(base, factor, seed=1)
        assert len(tr) == pytest.approx(factor * 2000, rel=0.05)
        assert np.all(np.diff(tr.arrival_ms) >= 0)
        assert np.array_equal(rate_scale_trace(base, factor, seed=1).arrival_ms, tr.arrival_ms)
    # the original arrivals are all kept when the factor is >= 1
    assert np.isin(base.arrival_ms, rate_scale_trace(base, 1.5, seed=2).arrival_ms).all()
    assert not np.array_equal(rate_scale_trace(base, 1.5, seed=2).arrival_ms, rate_scale_trace(base, 1.5, seed=3).arrival_ms)
    with pytest.raises(ValueError, match="rate factor 0"):
        rate_scale_trace(base, 0.0, seed=1)
