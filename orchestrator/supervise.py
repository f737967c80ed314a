"""Supervision of the local tritonserver: when it exits for any reason (crash, abort, SIGKILL,
OOM), clean up after it and start it again with the same launch config.

The orchestrator is the one supervisor (it already owns the plan, which it re-applies after a
restart: :meth:`orchestrator.loop.Orchestrator.supervise`). It supervises the server recorded
in a state directory (``python -m orchestrator.server start``, i.e. ``make serve``):

- alive: the recorded pid with its recorded start time and not a zombie, or, for a server this
  supervisor started itself, ``Popen.poll()`` (so it is reaped and its exit status known);
- while alive, its Python-backend /dev/shm regions are recorded (:mod:`orchestrator.shm`);
- after an exit: its orphaned stubs are ended, its regions removed (only its own), its log kept
  as ``<log>.prev``, and a new server started on the same ports; the state file then names it.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable

from orchestrator.health import Backoff
from orchestrator.server import TritonServer, TritonServerConfig, TritonStartError, launch_detached
from orchestrator.server_state import read_state, server_running, shm_record_file
from orchestrator.shm import cleanup_dead_server, load_record, save_record, server_regions


class ServerSupervisor:
    """Keeps the detached tritonserver of ``state_dir`` running.

    ``restricted_key`` (``header:value``) is passed to the restarted server (the state file
    never holds it). Restarts that fail are retried after ``backoff``.
    """

    def __init__(self, state_dir: str | Path, restricted_key: str | None, backoff: Backoff = Backoff(1.0, 30.0),
                 clock: Callable[[], float] = time.monotonic):
        self.state_dir = Path(state_dir)
        state = read_state(self.state_dir)
        if state is None or "config" not in state:
            raise ValueError(f"no tritonserver state with a launch config in {self.state_dir}; start the server "
                             "with `python -m orchestrator.server start --state-dir ...` (make serve does)")
        if state["config"].get("restricted") and not restricted_key:
            raise ValueError(f"the server recorded in {self.state_dir} was started with an admin key; expected the "
                             "same key (--admin-key / DIFFSERVE_ADMIN_KEY) to restart it restricted")
        self.state: dict[str, Any] = state
        self.restricted_key = restricted_key
        self.backoff = backoff
        self.clock = clock
        self.server: TritonServer | None = None  # set when this supervisor started the running server
        self.regions: set[str] = load_record(shm_record_file(self.state_dir), int(state["pid"]))
        self.restarts = 0
        self.regions_removed = 0
        self._failures = 0
        self._retry_at_s = 0.0

    @property
    def grpc_url(self) -> str:
        return self.state["grpc"]

    @property
    def pid(self) -> int:
        return int(self.state["pid"])

    def alive(self) -> bool:
        if self.server is not None and self.server.process is not None:
            return self.server.process.poll() is None
        return server_running(self.state)

    def watch(self) -> None:
        """Record the live server's regions (the health look calls this about every second)."""
        seen = server_regions(self.pid)
        if not seen <= self.regions:
            self.regions |= seen
            save_record(shm_record_file(self.state_dir), self.pid, self.regions)

    def exit_status(self) -> str:
        """How the server ended: known only for a server this supervisor started (its parent)."""
        proc = self.server.process if self.server is not None else None
        if proc is None or proc.returncode is None:
            return "unknown (exited while not a child of this orchestrator; see its log)"
        if proc.returncode < 0:
            return f"killed by {signal.Signals(-proc.returncode).name}"
        return f"exit status {proc.returncode}"

    def restart(self) -> dict[str, Any] | None:
        """Clean up after the dead server and start a new one (blocks until it is ready).

        Returns the event record (``result`` "ok" or "failed: ..."), or None while a failed
        restart waits for its backoff."""
        now = self.clock()
        if now < self._retry_at_s:
            return None
        t0 = time.monotonic()
        dead_pid, status = self.pid, self.exit_status()
        cleaned = cleanup_dead_server(dead_pid, self.regions)
        self.regions_removed += len(cleaned["regions_removed"])
        log = Path(self.state["log"])
        tail = log.read_bytes()[-600:].decode(errors="replace") if log.exists() else ""
        if log.exists():
            log.replace(log.with_name(log.name + ".prev"))  # the new server truncates its log
        event: dict[str, Any] = {"event": "server_restart", "t_unix_s": time.time(), "dead_pid": dead_pid,
                                 "exit": status, "dead_log_tail": tail, **cleaned}
        try:
            self._launch()
        except (TritonStartError, OSError) as exc:
            self._failures += 1
            self._retry_at_s = self.clock() + self.backoff.delay_s(self._failures)
            event.update(result=f"failed: {str(exc)[:500]}", retry_in_s=self.backoff.delay_s(self._failures))
            return event
        self._failures = 0
        self.restarts += 1
        self.regions = set()
        self.watch()
        event.update(result="ok", pid=self.pid, restart_s=round(time.monotonic() - t0, 3))
        return event

    def _launch(self) -> None:
        c = self.state["config"]
        cfg = TritonServerConfig(model_repository=c["model_repository"], host=c["host"], http_port=c["http_port"],
                                 grpc_port=c["grpc_port"], metrics_port=c["metrics_port"],
                                 load_models=tuple(c.get("load_models", ())), restricted_key=self.restricted_key,
                                 startup_timeout_s=float(c.get("startup_timeout_s", 300.0)),
                                 log_path=self.state["log"], die_with_parent=False)
        if self.server is not None:
            self.server.stop()  # reaps the dead child and closes its log file
        server = TritonServer(cfg)
        launch_detached(server, self.state_dir)
        self.server = server
        self.state = read_state(self.state_dir)
