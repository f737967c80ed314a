"""The router threshold in the control state: how it is written, read and applied, and how the
orchestrator's control path turns the planner's router share into it."""
from __future__ import annotations

import dataclasses
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


def test_routing_weights_count_the_routed_queries_off_light():
    from orchestrator.placement import Placement, routing_weights  # noqa: PLC0415

    placements = {"a": Placement({"light": (0, 1), "heavy": (2,)}), "b": Placement({"light": (0,), "heavy": (1, 2)})}
    plan = Plan(policy="hybrid", workers={"light": 3, "heavy": 3}, batch_size={"light": 4, "heavy": 2}, threshold=0.0,
                capacity_qps={"light": 30.0, "heavy": 30.0}, expected_fid=1.0, light_fraction=0.5, slack_ms=0.0,
                status="OPTIMAL", heavy_share=0.5, router_share=0.5)
    # Half the queries skip light: light and heavy each carry half, so both nodes sustain the same rate.
    assert routing_weights(plan, placements, "light", "heavy") == {"a": 50, "b": 50}
    cascade = dataclasses.replace(plan, router_share=0.0)  # every query through light: node a has more of it
    assert routing_weights(cascade, placements, "light", "heavy") == {"a": 67, "b": 33}


def _cli_args(tmp_path, profiles, policy="hybrid"):
    return ["--node", "127.0.0.1:1", "--metrics-url", "http://127.0.0.1:2/metrics", "--slots", "cpu:2",
            "--profiles", str(profiles), "--log-dir", str(tmp_path), "--policy", policy, "--ready-timeout-s", "0"]


def test_policy_hybrid_loads_the_surface_and_router_curve_and_other_policies_have_no_router(tmp_path):
    from orchestrator.__main__ import PROFILES_ROOT, build, parser  # noqa: PLC0415

    tiny = PROFILES_ROOT / "tiny"

    orch = build(parser().parse_args(["run", *_cli_args(tmp_path, tiny)]))
    assert orch.control.router is not None and set(orch.control.hybrid_surfaces) == {("light", "heavy")}
    assert orch.control.hybrid_surfaces[("light", "heavy")].router_share[-1] == 1.0
    plain = build(parser().parse_args(["run", *_cli_args(tmp_path, tiny, "diffserve")]))
    assert plain.control.router is None and not plain.control.hybrid_surfaces


def test_policy_hybrid_without_a_surface_stops_at_start_naming_the_file_and_make_calibrate(tmp_path):
    from orchestrator.__main__ import build, main, parser  # noqa: PLC0415
    from tests.orchestrator_support import PROFILES  # noqa: PLC0415

    for call in (lambda: build(parser().parse_args(["run", *_cli_args(tmp_path, PROFILES)])),
                 lambda: main(["start", *_cli_args(tmp_path, PROFILES)])):
        with pytest.raises(SystemExit, match=r"hybrid_surface.json and .*router_curve.csv \(no such file\); "
                                             r"run `make calibrate`"):
            call()
    assert not (tmp_path / "orchestrator.pid").exists()  # nothing was started


def test_make_serve_policy_hybrid_command_line_starts_the_orchestrator(tmp_path):
    """``make serve POLICY=hybrid``'s orchestrator command (with an unreachable node: the loop runs,
    finds no slot to plan) starts detached with the tiny cascade's committed calibration, and stops."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    from orchestrator.__main__ import PROFILES_ROOT  # noqa: PLC0415

    cli = [sys.executable, "-m", "orchestrator"]
    args = [*_cli_args(tmp_path, PROFILES_ROOT / "tiny"), "--window-s", "1", "--control-file", str(tmp_path / "c.json")]
    started = subprocess.run([*cli, "start", *args], capture_output=True, text=True, timeout=60)
    try:
        assert started.returncode == 0 and "orchestrator running" in started.stdout, started.stdout + started.stderr
        log = tmp_path / "orchestrator.out"
        deadline = time.monotonic() + 30
        while "[window 1]" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.2)  # two windows: the loop keeps running without a reachable node
        text = log.read_text()
        assert "planning for slo_ms=5000" in text and "[window 1]" in text and "Traceback" not in text, text
    finally:
        stopped = subprocess.run([*cli, "stop", "--log-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout


def test_start_waits_for_a_plan_of_this_run_before_it_calls_the_cascade_serving(tmp_path):
    # `make serve` returns once the first plan of THIS run is applied (the orchestrator logs the
    # window after its loads and the control file); a log left by an earlier run does not count.
    import json  # noqa: PLC0415

    from orchestrator.__main__ import _first_plan_applied  # noqa: PLC0415

    log = tmp_path / "orchestrator.jsonl"
    assert not _first_plan_applied(log, 100.0)  # no log yet
    log.write_text(json.dumps({"event": "window", "t_unix_s": 50.0, "plan": {"workers": {"heavy": 1}}}) + "\n"
                   + json.dumps({"event": "adopt", "t_unix_s": 101.0}) + "\n"
                   + json.dumps({"event": "window", "t_unix_s": 101.0}) + "\n"  # a window with no plan yet
                   + '{"event": "wind')  # a line being written
    assert not _first_plan_applied(log, 100.0)
    with log.open("a") as f:
        f.write('ow"}\n' + json.dumps({"event": "window", "t_unix_s": 106.0, "plan": {"workers": {"heavy": 1}}}) + "\n")
    assert _first_plan_applied(log, 100.0)
