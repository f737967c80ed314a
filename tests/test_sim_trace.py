"""Trace files, trace scaling and each query's confidence (its prompt's, as the artifact defers)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.sim.trace import (Trace, confidences_from_curve, load_trace, query_confidences, rate_scale_trace,
                                  scale_trace)
from planner import data
from planner.data import PromptConfidences
from planner.types import DeferralCurve

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


def test_each_query_is_deferred_exactly_when_the_artifact_defers_its_prompt():
    paper = data.load_cascade(data.ARTIFACT_DIR)
    trace = load_trace(paper.traces_dir / "maf_1to8qps.txt")
    conf = query_confidences(trace, paper.confidences)
    raw = np.loadtxt(data.ARTIFACT_DIR / data.PAPER_SCORES).reshape(5000, 4).mean(axis=1)
    assert np.allclose(conf, 1.0 - raw[trace.prompt_id - 1])  # content id k = the k-th prompt of the scores
    # The prompt the discriminator finds most fake is deferred first: below every threshold > its confidence.
    worst = int(np.argmax(raw)) + 1
    assert paper.confidences.lookup(np.array([worst]))[0] == pytest.approx(1.0 - raw.max())
    assert (1.0 - raw.max()) < 0.01 and paper.confidences.deferral_fraction(0.01) < 0.25


def test_prompt_ids_without_a_confidence_are_an_error_or_wrapped_when_asked():
    conf = PromptConfidences(np.array([1, 2, 3]), np.array([0.1, 0.5, 0.9]), "c.csv")
    tr = Trace(np.array([0.0, 1.0, 2.0]), np.array([1, 99, 3]))
    with pytest.raises(ValueError, match="prompt id 99 has no confidence in c.csv"):
        query_confidences(tr, conf, "exact")
    assert query_confidences(tr, conf, "wrap").tolist() == [0.5, 0.1, 0.1]  # 1 % 3, 99 % 3, 3 % 3
    assert query_confidences(tr, conf, "auto").tolist() == [0.5, 0.1, 0.1]
    known = Trace(np.array([0.0, 1.0]), np.array([3, 1]))
    assert query_confidences(known, conf, "auto").tolist() == [0.9, 0.1]  # exact when every id is known


def test_confidences_drawn_from_a_curve_defer_f_of_t_and_a_prompt_always_alike():
    curve = DeferralCurve((0.0, 0.05, 0.1, 0.5, 0.6, 1.0), (0.0, 0.36, 0.449, 0.993, 1.0, 1.0))
    ids = np.arange(20_000) % 5000
    tr = Trace(np.arange(20_000, dtype=float), ids)
    conf = confidences_from_curve(tr, curve, seed=1)
    for t in (0.02, 0.05, 0.3, 0.55):
        assert np.mean(conf < t) == pytest.approx(curve.f(t), abs=0.02)
    assert np.array_equal(conf[:5000], conf[5000:10000])  # the same prompt gets the same confidence


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
