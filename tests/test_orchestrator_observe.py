"""The one observation builder: Triton counters -> per-model queue measurements (queries) ->
the planner's per-window input, with every per-window field the planner reads filled."""
from __future__ import annotations

import dataclasses

import pytest

from orchestrator.control import ControlConfig, Observation, build_instance
from orchestrator.observe import (ModelCounters, NodeSample, QueueWindow, build_observation, merge, queue_window,
                                  sample_from, window_stats)
from planner.types import Allocation, DeferralCurve, ModelProfile, QualityCurve

LIGHT = ModelProfile("light", {1: 100.0, 4: 200.0})
HEAVY = ModelProfile("heavy", {1: 1000.0}, quality_rank=1)
CONFIG = ControlConfig(models=(LIGHT, HEAVY), slo_ms=5000.0, num_workers=2,
                       deferral=DeferralCurve((0.0, 1.0), (0.0, 1.0)), quality=QualityCurve((0.0, 1.0), (18.0, 22.0)))
# The per-window fields of planner.types.Instance that come from the observation.
PER_WINDOW_FIELDS = ("queue_delay_ms", "queue_length", "model_arrival_qps")


def test_statistics_inference_count_is_read_as_queries_executed():
    stats = {"model_stats": [{"name": "light", "inference_count": "12", "inference_stats": {"success": {"count": "3"}}}]}
    assert sample_from(0.0, stats, "").models["light"].inferences == 12


def test_queue_window_scales_triton_request_counts_to_queries():
    # 4 requests of 3 queries each started in the window, each waited 0.5 s; 2 requests wait at the end.
    prev = ModelCounters(success=10, fail=0, queue_count=10, queue_ns=0, pending=0, inferences=30)
    cur = ModelCounters(success=14, fail=0, queue_count=14, queue_ns=4 * 500_000_000, pending=2, inferences=42)
    q = queue_window(prev, cur)
    assert q == QueueWindow(arrived=(4 + 2) * 3, started=4 * 3, wait_s=4 * 0.5 * 3, waiting_end=2 * 3)
    # Without an inference count (or with no success) a request counts as one query.
    assert queue_window(ModelCounters(), ModelCounters(fail=2, pending=1)) == QueueWindow(3, 0, 0.0, 1)


def test_observation_delay_is_measured_mean_and_littles_law_gives_it_back():
    obs = build_observation(window_start_ms=1000.0, window_s=2.0, arrivals=10,
                            queues={"light": QueueWindow(arrived=10, started=8, wait_s=0.4, waiting_end=2)},
                            current=None, drops=1)
    assert obs.queue_delay_ms["light"] == pytest.approx(50.0)  # 0.4 s over 8 queries
    assert obs.model_arrival_qps["light"] == pytest.approx(5.0)
    # The planner's Little's-law estimate queue_length / arrival rate equals the measured delay.
    assert 1000.0 * obs.queue_length["light"] / obs.model_arrival_qps["light"] == pytest.approx(50.0)
    assert (obs.arrivals, obs.drops, obs.window_start_ms) == (10, 1, 1000.0)


def test_a_model_that_started_nothing_has_no_delay_and_its_backlog_as_queue_length():
    obs = build_observation(0.0, 1.0, 5, {"heavy": QueueWindow(arrived=5, started=0, wait_s=0.0, waiting_end=5)}, None)
    assert "heavy" not in obs.queue_delay_ms and obs.queue_length["heavy"] == 5


def test_bad_measurements_are_refused_with_the_value_named():
    with pytest.raises(ValueError, match=r"QueueWindow.wait_s = -1.0"):
        QueueWindow(arrived=1, started=1, wait_s=-1.0)
    with pytest.raises(ValueError, match="window_s=0"):
        build_observation(0.0, 0, 1, {}, None)


def test_every_per_window_field_the_planner_reads_is_filled_from_a_live_sample():
    """From two real-shaped Triton samples to the planner's Instance: light and heavy both get
    every per-window field (none is left to the simulator only)."""
    def sample(t, n, pending):
        models = {m: ModelCounters(success=n, queue_count=n, queue_ns=n * 20_000_000, pending=pending, inferences=n)
                  for m in ("cascade", "light", "heavy")}
        return NodeSample(t, models)

    ws = merge([window_stats(sample(0.0, 0, 0), sample(5.0, 20, 1))])
    alloc = Allocation(workers={"light": 1, "heavy": 1}, batch_size={"light": 4, "heavy": 1})
    obs = build_observation(0.0, ws.window_s, round(ws.queues["cascade"].arrived), ws.queues, alloc)
    instance = build_instance(CONFIG, 1.0, obs)
    for field in PER_WINDOW_FIELDS:
        assert set(getattr(instance, field)) >= {"light", "heavy"}, field
    assert instance.current == alloc and obs.arrivals == 21
    # The builder fills every field of Observation that the planner's Instance takes over.
    taken_over = {f.name for f in dataclasses.fields(Observation)} & {f.name for f in dataclasses.fields(instance)}
    assert taken_over == set(PER_WINDOW_FIELDS) | {"current"}


def test_nodes_merge_by_adding_queries_and_waits():
    a = window_stats(NodeSample(0.0, {"light": ModelCounters()}),
                     NodeSample(1.0, {"light": ModelCounters(success=1, queue_count=1, queue_ns=100_000_000)}))
    b = window_stats(NodeSample(0.0, {"light": ModelCounters()}),
                     NodeSample(1.0, {"light": ModelCounters(success=3, queue_count=3, queue_ns=0)}))
    # 100 ms over 4 queries, not the mean of the two nodes' means (50 ms).
    assert merge([a, b]).queue_delay_ms["light"] == pytest.approx(25.0)
