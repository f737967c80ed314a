"""The router threshold in the control state: how it is written, read and applied, and how the
orchestrator's control path turns the planner's router share into it."""
from __future__ import annotations

import json

import pytest

from orchestrator.placement import control_state
from planner.types import Plan, RouterCurve
from serving.control import ControlState, parse_control, read_control, write_control
from serving.routing import choose_route
from serving.validation import RequestOptions

CURVE = RouterCurve((0.0, 0.5, 1.0), (4.0, 1.0, -2.0))


def _plan(router_share=0.0, workers=None):
    return Plan(policy="hybrid", workers=workers or {"light": 2, "heavy": 3}, batch_size={"light": 4, "heavy": 2},
                threshold=0.3, capacity_qps={}, expected_fid=20.0, light_fraction=0.4, slack_ms=0.0, status="OPTIMAL",
                heavy_share=0.6, light_model="light", heavy_model="heavy", router_share=router_share)


def test_router_threshold_round_trips_through_the_control_file(tmp_path):
    path = write_control(tmp_path / "c.json", ControlState(version=3, threshold=0.2, router_threshold=-1.25))
    assert json.loads(path.read_text())["router_threshold"] == -1.25
    assert read_control(path).router_threshold == -1.25


def test_a_control_file_without_router_threshold_has_no_router(tmp_path):
    path = write_control(tmp_path / "c.json", ControlState(version=1))
    assert "router_threshold" not in json.loads(path.read_text())  # files stay as they were without a router
    assert read_control(path).router_threshold is None
    assert parse_control({"router_threshold": None}, ControlState(router_threshold=2.0)).router_threshold is None


@pytest.mark.parametrize("bad", ["0.5", True, float("inf"), float("nan"), [1]])
def test_bad_router_threshold_is_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match="router_threshold=.*expected a finite number or null"):
        parse_control({"router_threshold": bad})


def test_router_sends_prompts_at_or_above_the_threshold_straight_to_heavy():
    state = ControlState(routing="cascade", router_threshold=1.0)
    none = RequestOptions()
    assert choose_route(none, state, 0.5, router_score=1.0) == "heavy"
    assert choose_route(none, state, 0.5, router_score=0.99) == "cascade"
    assert choose_route(none, state, 0.5) == "cascade"  # no score: the query cascades
    assert choose_route(none, ControlState(routing="cascade"), 0.5, router_score=9.0) == "cascade"  # no router


def test_per_request_routing_and_single_model_routing_win_over_the_router():
    state = ControlState(routing="cascade", router_threshold=0.0)
    assert choose_route(RequestOptions(routing="light"), state, 0.5, router_score=5.0) == "light"
    assert choose_route(RequestOptions(), ControlState(routing="light", router_threshold=0.0), 0.5, router_score=5.0) == "light"


def test_control_path_turns_the_router_share_into_the_calibrated_threshold():
    assert control_state(_plan(0.5), "light", "heavy", 5000, 1, router=CURVE).router_threshold == 1.0
    assert control_state(_plan(0.25), "light", "heavy", 5000, 1, router=CURVE).router_threshold == pytest.approx(2.5)
    assert control_state(_plan(0.0), "light", "heavy", 5000, 1, router=CURVE).router_threshold is None
    assert control_state(_plan(0.5), "light", "heavy", 5000, 1).router_threshold is None  # no calibration: no router
    # heavy without GPUs: everything on light, nothing may be routed to heavy
    light_only = control_state(_plan(0.5, {"light": 2}), "light", "heavy", 5000, 1, router=CURVE)
    assert light_only.routing == "light" and light_only.router_threshold is None
