"""The cascade's per-request flow (serving.cascade_flow) with fake stages: no Triton, real asyncio time."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serving import routing
from serving.cascade_flow import BatchFlow, FlowSettings, Job, Pending, StageError

MARKER = "[dropped]"


class FakeStages:
    """light/heavy images are 1 (light) or 2 (heavy) everywhere; confidence 0.9 unless the
    prompt says "hard" (0.1). ``delay_s`` per stage call; a prompt with "[fail:<stage>]" fails
    the whole call it is in."""

    def __init__(self, delay_s=None, est=None):
        self.delay_s = {"light": 0.01, "discriminator": 0.005, "heavy": 0.3, **(delay_s or {})}
        self.calls: list[tuple[str, int]] = []
        self.est = est or routing.StageEstimates()

    async def generate(self, stage, prompts, seeds):
        self.calls.append((stage, len(prompts)))
        await asyncio.sleep(self.delay_s[stage])
        if any(f"[fail:{stage}]" in p for p in prompts):
            raise StageError(f"stage {stage} failed: injected")
        return np.full((len(prompts), 2, 2, 3), 1 if stage == "light" else 2, np.uint8)

    async def score(self, images):
        self.calls.append(("discriminator", len(images)))
        await asyncio.sleep(self.delay_s["discriminator"])
        return self.conf[: len(images)].reshape(-1, 1)

    async def route(self, prompts):
        self.calls.append(("router", len(prompts)))
        if any("[fail:router]" in p for p in prompts):
            raise StageError("stage router failed: injected")
        return np.array([1.0 if "routed" in p else 0.0 for p in prompts], np.float32).reshape(-1, 1)

    def ahead(self):
        return {}

    def estimates(self):
        return self.est


class Recorder:
    def __init__(self, t0):
        self.t0, self.answers = t0, []

    def result(self, p, threshold):
        self.answers.append((p, "result", time.monotonic() - self.t0, list(p.served)))

    def error(self, p, exc):
        self.answers.append((p, "error", time.monotonic() - self.t0, str(exc)))

    def drop(self, p, message):
        self.answers.append((p, "drop", time.monotonic() - self.t0, message))

    def of(self, p):
        got = [a for a in self.answers if a[0] is p]
        assert len(got) == 1, f"{len(got)} answers for one request"
        return got[0][1:]


def run(jobs, stages=None, heavy_batch=32, slo_ms=None, router_threshold=None):
    """Run one batch of (prompts, route) jobs; returns (recorder, pendings, stages)."""
    stages = stages or FakeStages()
    t0 = time.monotonic()
    pending = [Pending(Job(tuple(p), tuple(range(len(p))), route, slo_ms), t0, routing.deadline_s(t0, slo_ms, 1.5))
               for p, route in jobs]
    prompts = [x for p in pending if p.job.route == "cascade" for x in p.job.prompts]
    stages.conf = np.array([0.1 if "hard" in x else 0.9 for x in prompts], np.float32)
    rec = Recorder(t0)
    settings = FlowSettings(threshold=0.5, heavy_batch=heavy_batch, drop_factor=1.5, marker=MARKER,
                            router_threshold=router_threshold)
    asyncio.run(BatchFlow(stages, rec, settings, time.monotonic).run(pending))
    assert len(rec.answers) == len(pending)
    return rec, pending, stages


def test_a_light_served_request_is_answered_before_the_heavy_queries_of_its_batch_finish():
    rec, (hard, easy), _ = run([(["hard one"], "cascade"), (["easy one"], "cascade")])
    kind, easy_s, served = rec.of(easy)
    assert (kind, served) == ("result", ["light"]) and easy_s < 0.15
    kind, hard_s, served = rec.of(hard)
    assert (kind, served) == ("result", ["heavy"]) and hard_s >= 0.3


def test_light_and_discriminator_get_one_call_per_batch_and_heavy_calls_of_the_heavy_batch_size():
    jobs = [([f"hard {k}"], "cascade") for k in range(5)] + [(["easy"], "cascade")]
    _, _, stages = run(jobs, heavy_batch=2)
    assert [c for c in stages.calls if c[0] != "heavy"] == [("light", 6), ("discriminator", 6)]
    assert sorted(n for s, n in stages.calls if s == "heavy") == [1, 2, 2]


def test_a_request_with_several_prompts_is_answered_when_all_its_queries_are_done():
    rec, (p,), _ = run([(["easy", "hard", "easy 2"], "cascade")], heavy_batch=1)
    kind, t_s, served = rec.of(p)
    assert kind == "result" and served == ["light", "heavy", "light"] and t_s >= 0.3
    assert p.confidence[1] == pytest.approx(0.1) and p.images[1][0, 0, 0] == 2 and p.images[0][0, 0, 0] == 1


def test_a_failing_shared_call_fails_only_the_request_that_caused_it():
    rec, (bad, good, forced), _ = run([(["hard [fail:heavy]"], "cascade"), (["hard"], "cascade"), (["x"], "heavy")])
    assert rec.of(bad)[0] == "error" and "injected" in rec.of(bad)[2]
    assert rec.of(good)[0] == "result" and rec.of(good)[2] == ["heavy"]
    assert rec.of(forced)[0] == "result"


def test_a_request_still_waiting_at_its_drop_bound_is_shed_then_not_served_late():
    # SLO 200 ms -> bound 300 ms; heavy takes 600 ms and nothing predicted it (cold estimates)
    rec, (hard, easy), _ = run([(["hard"], "cascade"), (["easy"], "cascade")],
                               FakeStages(delay_s={"heavy": 0.6}), slo_ms=200.0)
    kind, t_s, message = rec.of(hard)
    assert kind == "drop" and MARKER in message and "waiting on heavy" in message
    assert 0.3 <= t_s < 0.45  # at the bound, not when heavy finally answered
    assert rec.of(easy)[0] == "result"


def test_a_request_predicted_past_its_bound_is_shed_before_the_heavy_call():
    est = routing.StageEstimates(service_ms={"light": 10.0, "discriminator": 5.0, "heavy": 1000.0},
                                 batch_items={"heavy": 1.0}, defer_rate=0.0)
    stages = FakeStages(est=est)
    rec, (hard,), _ = run([(["hard"], "cascade")], stages, slo_ms=200.0)
    kind, t_s, message = rec.of(hard)
    assert kind == "drop" and "heavy would answer in 1000 ms" in message and t_s < 0.1
    assert not [c for c in stages.calls if c[0] == "heavy"]  # its heavy work was never sent


def test_a_result_ready_after_the_bound_is_shed_instead_of_sent():
    stages = FakeStages()
    t0 = time.monotonic()
    p = Pending(Job(("easy",), (0,), "light", 100.0), t0 - 1.0, t0 - 0.5)  # bound already passed
    rec = Recorder(t0)
    flow = BatchFlow(stages, rec, FlowSettings(0.5, 4, 1.5, MARKER), time.monotonic)
    p.images, p.served = [np.zeros((2, 2, 3), np.uint8)], ["light"]
    flow.finish(p)
    flow.finish(p)  # a second answer is never sent
    assert [a[1] for a in rec.answers] == ["drop"] and "drop limit" in rec.answers[0][3]


def test_requests_without_slo_are_never_shed():
    rec, (p,), _ = run([(["hard"], "cascade")], FakeStages(delay_s={"heavy": 0.2}))
    assert rec.of(p)[0] == "result"


def test_a_prompt_the_router_scores_above_its_threshold_skips_light_and_the_discriminator():
    # (the fake discriminator answers by position: the routed prompt comes last so "easy" keeps 0.9)
    rec, (easy, routed, forced), stages = run([(["easy"], "cascade"), (["routed hard"], "cascade"), (["x"], "light")],
                                              router_threshold=0.5)
    assert rec.of(routed)[0] == "result" and rec.of(routed)[2] == ["heavy"] and np.isnan(routed.confidence[0])
    assert rec.of(easy)[2] == ["light"] and rec.of(forced)[2] == ["light"]
    # one router call for the cascade-routed prompts only; light and discriminator never see the routed one
    assert [c for c in stages.calls if c[0] != "heavy"] == [("router", 2), ("light", 2), ("discriminator", 1)]
    assert ("heavy", 1) in stages.calls


def test_without_a_router_threshold_the_router_is_not_called():
    _, _, stages = run([(["routed hard"], "cascade")])
    assert all(c[0] != "router" for c in stages.calls)


def test_a_failing_router_routes_nothing_and_every_query_cascades():
    rec, (p,), stages = run([(["routed easy [fail:router]"], "cascade")], router_threshold=0.5)
    assert rec.of(p)[0] == "result" and rec.of(p)[2] == ["light"]
    assert ("light", 1) in stages.calls
