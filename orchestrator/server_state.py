"""The state file of a detached tritonserver (``make serve``): which process it is, where it
listens, and how to start it again (read by ``make stop`` and by the supervisor).

``<state dir>/server.json``::

    {"pid": 1234, "start_ticks": 98765, "grpc": "127.0.0.1:8001", "http": ..., "metrics": ...,
     "log": ".../tritonserver.log",
     "config": {"model_repository": ..., "host": ..., "http_port": 8000, "grpc_port": 8001,
                "metrics_port": 8002, "load_models": [], "startup_timeout_s": 300,
                "restricted": true}}

The admin key is never written here, only whether the server had one (the launcher and the
supervisor get it from ``DIFFSERVE_ADMIN_KEY`` / ``--admin-key``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def state_file(state_dir: Path) -> Path:
    return Path(state_dir) / "server.json"


def shm_record_file(state_dir: Path) -> Path:
    """Where the supervisor records the server's Python-backend /dev/shm regions (orchestrator.shm)."""
    return Path(state_dir) / "shm_regions.json"


def server_state(server: Any) -> dict[str, Any]:
    """The state of a started :class:`orchestrator.server.TritonServer` (pid, start time,
    addresses, log, launch config without the key)."""
    c = server.config
    return {"pid": server.process.pid, "start_ticks": process_start_ticks(server.process.pid),
            "grpc": server.grpc_url, "http": server.http_url, "metrics": server.metrics_url,
            "log": str(server.log_path),
            "config": {"model_repository": str(Path(c.model_repository).resolve()), "host": c.host,
                       "http_port": server.http_port, "grpc_port": server.grpc_port,
                       "metrics_port": server.metrics_port, "load_models": list(c.load_models),
                       "startup_timeout_s": c.startup_timeout_s, "restricted": bool(c.restricted_key)}}


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically (temp file + rename: ``make stop`` never reads half a file)."""
    path = state_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The recorded state, or None when there is no state file."""
    try:
        return json.loads(state_file(state_dir).read_text())
    except FileNotFoundError:
        return None


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), or None
    when there is no such process or it is a zombie (it has exited). With the pid it identifies
    one process: a pid reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": fields[0] is the state (field 3)
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def server_running(state: dict[str, Any]) -> bool:
    """True while the server recorded in ``state`` runs (same pid and start time, not a zombie)."""
    ticks = process_start_ticks(int(state["pid"]))
    return ticks is not None and state.get("start_ticks") in (None, ticks)
