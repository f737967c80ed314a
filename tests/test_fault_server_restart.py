"""A supervised tritonserver: SIGKILLed while a stream of requests runs, it is restarted by the
orchestrator with its plan re-applied; every request gets an image or an explicit error,
service is back within 10 s, no /dev/shm region of the dead server is left, the restart is
logged and counted; ``make stop``'s server half tells a dead server from a live one."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from benchmarks.bench_restart import Stack, kill_cycles, stub_regions, summary, wait_serving
from orchestrator.server_state import read_state
from tests.orchestrator_support import PROFILES, build_repository

pytestmark = pytest.mark.triton


def test_killed_server_is_restarted_with_its_plan_and_no_region_of_it_is_left(tmp_path):
    repo, _ = build_repository(tmp_path)
    with Stack(repo, tmp_path / "run", "configs/tiny.yaml", PROFILES, device="cpu", slots="cpu:3",
               window_s=2.0) as stack:
        wait_serving(stack, 120)
        time.sleep(2.5)  # one window observed: the plan is in force (not only the adoption)
        cycles, outcomes = kill_cycles(stack, kills=1, rate_qps=4.0, period_s=14.0, settle_s=3.0)
        res = summary(cycles, outcomes)
        print(json.dumps({k: v for k, v in res.items() if k != "cycles"}), json.dumps(res["cycles"][0]))
        cycle = cycles[0]
        # Every request got an image or an explicit, classified error; none was lost.
        assert all(o.ok or (o.error_kind not in ("", "Lost") and o.error) for o in outcomes)
        assert cycle.failed > 0, "the kill should have failed some requests"
        assert cycle.back_s is not None and cycle.back_s <= 10.0, res["cycles"]
        assert cycle.dead_regions and cycle.left_regions == (), cycle  # the dead server's regions are gone
        new_pid = stack.server_pid()
        assert new_pid != cycle.dead_pid
        assert set(stub_regions(new_pid)).isdisjoint(cycle.dead_regions)
        # The plan is re-applied on the new server: the stages run as planned, not as the repository says.
        records = [json.loads(x) for x in (stack.log_dir / "orchestrator.jsonl").read_text().splitlines()]
        restart = [r for r in records if r["event"] == "server_restart"]
        assert [r["result"] for r in restart] == ["ok"] and restart[0]["dead_pid"] == cycle.dead_pid
        before = [r for r in records if r["event"] == "window" and r["t_unix_s"] < restart[0]["t_unix_s"]][-1]
        assert restart[0]["placement"] == before["placement"] and before["placement"][stack.grpc_url]
        loads = restart[0]["reapplied"]["actions"]
        assert {a["model"] for a in loads} == {"cascade", "discriminator", *before["placement"][stack.grpc_url]}
        assert all(a["result"] == "ok" for a in loads), loads
        metrics = (stack.log_dir / "metrics.prom").read_text()
        assert "diffserve_orchestrator_server_restarts_total 1" in metrics
        # make stop: a dead server is told apart from a live one (exit status and message).
        stack.stop_orchestrator()
        regions = stub_regions(new_pid)
        os.kill(new_pid, signal.SIGKILL)
        time.sleep(0.5)
        stopped = stack.stop_server()
        assert stopped.returncode == 1 and "was NOT running" in stopped.stdout, stopped.stdout
        assert not [r for r in regions if os.path.exists(f"/dev/shm/{r}")]
        assert read_state(stack.state_dir) is None


def test_make_stop_of_a_live_server_says_stopped_and_exits_0(tmp_path):
    repo, _ = build_repository(tmp_path)
    with Stack(repo, tmp_path / "run", "configs/tiny.yaml", PROFILES, device="cpu", slots="cpu:3") as stack:
        stack.stop_orchestrator()
        pid = stack.server_pid()
        stopped = stack.stop_server()
        assert stopped.returncode == 0 and f"tritonserver (pid {pid}) stopped" in stopped.stdout, stopped.stdout
