"""Pure parts of the server supervision: which /dev/shm regions belong to which server (fake
/proc and /dev/shm trees), the state file's process identity, the orchestrator's metrics file."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.publish import metrics_text
from orchestrator.server_state import process_start_ticks, server_running
from orchestrator.shm import (cleanup_dead_server, load_record, orphan_stubs, remove_regions, save_record,
                              server_regions)

OURS = "triton_python_backend_shm_region_0ec205c3-8e73-4477-a0c1-41a687707611"
THEIRS = "triton_python_backend_shm_region_93cbdc4c-65b9-4df9-84c7-bc48bdc9f185"
STUB = "/venv/backends/python/triton_python_backend_stub"


def _proc(tmp_path, pid: int, argv: list[str] | None = None, maps: str | None = None):
    d = tmp_path / "proc" / str(pid)
    d.mkdir(parents=True)
    if argv is not None:
        (d / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    if maps is not None:
        (d / "maps").write_text(maps)
    return tmp_path / "proc"


def test_live_server_regions_are_the_python_backend_regions_it_maps(tmp_path):
    maps = (f"7f00-7f10 rw-s 00000000 00:1a 1 /dev/shm/{OURS}\n"
            "7f10-7f20 r-xp 00000000 08:01 2 /usr/lib/libc.so.6\n"
            "7f20-7f30 rw-s 00000000 00:1a 3 /dev/shm/other_program_segment\n7f30-7f40 rw-p 00000000 00:00 0\n")
    proc = _proc(tmp_path, 100, maps=maps)
    assert server_regions(100, proc) == {OURS}
    assert server_regions(999, proc) == set()  # gone: nothing


def test_orphan_stubs_are_those_that_name_the_dead_server_as_parent(tmp_path):
    proc = _proc(tmp_path, 201, [STUB, "/repo/light/1/model.py", OURS, "1048576", "1048576", "100", "/b", "336", "light_0"])
    _proc(tmp_path, 202, [STUB, "/repo/light/1/model.py", THEIRS, "1048576", "1048576", "555", "/b", "336", "light_0"])
    _proc(tmp_path, 203, ["/usr/bin/python", "x", OURS, "1", "1", "100"])  # not a stub
    assert orphan_stubs(100, proc) == {201: OURS}


def test_cleanup_removes_only_the_dead_servers_regions(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    for name in (OURS, THEIRS, "unrelated"):
        (shm / name).write_text("x")
    proc = _proc(tmp_path, 1, maps="")  # no stub of the dead server is alive
    done = cleanup_dead_server(100, [OURS, "../../etc/passwd"], proc, shm)
    assert done == {"stubs_killed": [], "regions_removed": [OURS]}
    assert sorted(p.name for p in shm.iterdir()) == [THEIRS, "unrelated"]
    with pytest.raises(ValueError, match="not Python-backend shared-memory region names"):
        remove_regions(["unrelated"], shm)


def test_region_record_is_kept_per_server_pid(tmp_path):
    path = tmp_path / "shm_regions.json"
    save_record(path, 100, {OURS})
    assert load_record(path, 100) == {OURS}
    assert load_record(path, 101) == set()  # recorded for another server
    assert load_record(tmp_path / "missing.json", 100) == set()


def test_a_server_is_running_only_while_its_pid_has_the_recorded_start_time():
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None and server_running({"pid": os.getpid(), "start_ticks": ticks})
    assert not server_running({"pid": os.getpid(), "start_ticks": ticks + 1})  # a reused pid is another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while process_start_ticks(child.pid) is not None:  # exits, then is a zombie until reaped: both "not running"
        os.sched_yield()
    assert not server_running({"pid": child.pid, "start_ticks": None})
    child.wait()


def test_orchestrator_metrics_are_prometheus_text_with_types():
    text = metrics_text({"server_restarts_total": 2, "last_server_restart_seconds": 7.5})
    assert "# TYPE diffserve_orchestrator_server_restarts_total counter\ndiffserve_orchestrator_server_restarts_total 2" in text
    assert "# TYPE diffserve_orchestrator_last_server_restart_seconds gauge" in text


def test_restart_benchmark_measures_back_from_the_first_request_after_the_last_failure():
    from benchmarks.bench_restart import cycle_of  # noqa: PLC0415
    from benchmarks.live.replay import Outcome  # noqa: PLC0415

    def req(t, ok, latency_s=0.1):
        return Outcome(0, t, latency_s * 1000, ok, error_kind="" if ok else "ServerUnavailable", error="" if ok else "x")

    outcomes = [req(9.0, False, 2.0),  # in flight at the kill (t=10): not this cycle's
                req(10.5, False), req(12.0, False), req(13.0, True), req(14.0, True),
                req(19.8, False, 1.0)]  # in flight at the next kill (t=20): that kill's
    c = cycle_of(outcomes, 10.0, 20.0)
    assert (c["requests"], c["failed"], c["back_s"], c["last_failure_s"]) == (4, 2, 3.0, 2.0)
    assert c["back_answered_s"] == pytest.approx(3.1)
    assert cycle_of([req(11.0, False)], 10.0, 20.0)["back_s"] is None  # never back
    shed = Outcome(0, 15.0, 100.0, False, error_kind="RequestDropped", error="shed")
    c = cycle_of(outcomes + [shed], 10.0, 20.0)  # a load shed after recovery is counted, not an outage
    assert c["back_s"] == 3.0 and c["failed"] == 3 and c["failures"][-1] == [5.0, "RequestDropped"]


def test_supervisor_needs_a_recorded_server_and_keeps_a_restricted_one_restricted(tmp_path):
    from orchestrator.server_state import write_state  # noqa: PLC0415
    from orchestrator.supervise import ServerSupervisor  # noqa: PLC0415

    with pytest.raises(ValueError, match="no tritonserver state"):
        ServerSupervisor(tmp_path, "x-key:v")
    write_state(tmp_path, {"pid": os.getpid(), "start_ticks": None, "grpc": "127.0.0.1:1", "log": "l",
                           "config": {"restricted": True}})
    with pytest.raises(ValueError, match="started with an admin key"):
        ServerSupervisor(tmp_path, None)
    assert ServerSupervisor(tmp_path, "x-key:v").alive()  # this very process stands in for a live server
