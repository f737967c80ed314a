"""One supervised child process (an agent, HAProxy, Prometheus, the orchestrator): start with its
output in a log file, tell whether it runs, stop it (SIGTERM, then SIGKILL).

Children die with the supervisor (PR_SET_PDEATHSIG), like the Triton nodes, so a killed
``make cluster`` supervisor or test run leaves nothing behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from orchestrator.processes import stop_process_group


def _die_with_parent() -> None:
    import ctypes  # noqa: PLC0415

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Child:
    """``argv`` run with ``env`` (added to this process's environment), output to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str | Path, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None):
        self.name, self.argv, self.log_path = name, list(argv), Path(log_path)
        self.env, self.cwd = dict(env or {}), cwd
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "Child":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=self.cwd,
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child (e.g. SIGSTOP to freeze an agent in a test)."""
        if self.running():
            os.kill(self.process.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_process_group(self.process, timeout_s, resume=True)  # resume: a test may have frozen it

    def log_tail(self, n_chars: int = 2000) -> str:
        return self.log_path.read_bytes()[-n_chars:].decode(errors="replace") if self.log_path.exists() else ""
