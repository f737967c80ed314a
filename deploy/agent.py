"""The node control agent: pulls whole, versioned control states from the orchestrator and swaps
them into the node-local control file that the node's Triton models read.

One agent runs beside each Triton (a sidecar in Kubernetes, a process in ``make cluster``)::

    DIFFSERVE_ADMIN_KEY=... python -m deploy.agent --orchestrator http://orch:8003 \\
        --node triton-0.triton:8001 --control-file /var/run/diffserve/control.json

It long-polls ``GET /control?node=..&have=<version it holds>`` (:mod:`orchestrator.endpoint`),
so a new state arrives within milliseconds of the plan, and writes it with
:func:`serving.control.write_control` (temp file + rename: the models see the old or the new
state, never a mix). ``have`` is the acknowledgement the orchestrator's staleness report is
built on. When the orchestrator cannot be reached the agent keeps the file as it is (the node
serves its last whole state) and retries every ``retry_s``. On start it reads the version
already in the file, so a restarted agent does not rewrite an unchanged state.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from serving.control import ControlState, parse_control, read_control, write_control


class ControlAgent:
    """Pulls states for ``node`` from ``orchestrator_url`` into ``control_file``."""

    def __init__(self, orchestrator_url: str, node: str, control_file: str | Path, admin_key: str | None = None,
                 wait_s: float = 10.0, retry_s: float = 0.5):
        self.base = orchestrator_url.rstrip("/")
        self.node, self.control_file = node, Path(control_file)
        header, _, value = (admin_key or "").partition(":")
        if admin_key and not (header and value):
            raise ValueError(f"admin_key must look like 'header:value', got {admin_key!r}")
        self.headers = {header: value} if admin_key else {}
        self.wait_s, self.retry_s = wait_s, retry_s
        self.version = self._held_version()
        self.last_error: str | None = None

    def _held_version(self) -> int | None:
        try:
            return read_control(self.control_file).version
        except (OSError, ValueError):
            return None

    def poll_once(self) -> bool:
        """One long poll; True when a new state was written. Raises OSError / ValueError."""
        query = {"node": self.node, "wait_s": f"{self.wait_s:g}"}
        if self.version is not None:
            query["have"] = str(self.version)
        req = urllib.request.Request(f"{self.base}/control?{urllib.parse.urlencode(query)}", headers=self.headers)
        with urllib.request.urlopen(req, timeout=self.wait_s + 5.0) as resp:  # noqa: S310 - operator-given URL
            if resp.status == 204:
                return False  # the orchestrator has no state yet: keep ours
            body = json.loads(resp.read())
        state = parse_control(body["state"], ControlState())
        if state.version == self.version:
            return False
        write_control(self.control_file, state)
        self.version = state.version
        return True

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; errors keep the last state and are retried."""
        while not stop.is_set():
            try:
                if self.poll_once():
                    print(json.dumps({"event": "control", "node": self.node, "version": self.version}), flush=True)
                if self.last_error is not None:
                    print(json.dumps({"event": "reconnected", "node": self.node}), flush=True)
                self.last_error = None
            except (OSError, ValueError, KeyError) as exc:
                detail = exc.read().decode(errors="replace")[:200] if isinstance(exc, urllib.error.HTTPError) else ""
                msg = f"{type(exc).__name__}: {exc} {detail}".strip()
                if msg != self.last_error:  # once per distinct problem, not once per retry
                    print(json.dumps({"event": "error", "node": self.node, "keeping_version": self.version,
                                      "error": msg[:300]}), flush=True)
                self.last_error = msg
                stop.wait(self.retry_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.agent", description=__doc__.split("\n")[0])
    ap.add_argument("--orchestrator", required=True, help="the orchestrator's endpoint, http://host:port")
    ap.add_argument("--node", required=True, help="this node's Triton gRPC url, as in the orchestrator's node list")
    ap.add_argument("--control-file", required=True, help="the node-local control file its models read")
    ap.add_argument("--admin-key", default=os.environ.get("DIFFSERVE_ADMIN_KEY", ""), help="'header:value'")
    ap.add_argument("--wait-s", type=float, default=10.0, help="long-poll length (seconds)")
    ap.add_argument("--retry-s", type=float, default=0.5, help="wait after a failed poll (seconds)")
    args = ap.parse_args(argv)
    agent = ControlAgent(args.orchestrator, args.node, args.control_file, args.admin_key or None,
                         args.wait_s, args.retry_s)
    stop = threading.Event()

    def quit_now(*_) -> None:  # also ends a long poll in progress; the file is only ever renamed into place
        stop.set()
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, quit_now)
    agent.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
