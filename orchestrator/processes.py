"""Stopping a child process and everything it started (its process group)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def stop_process_group(p: subprocess.Popen | None, timeout_s: float, resume: bool = False) -> None:
    """SIGTERM the process group ``p`` leads (``p`` and its children, e.g. tritonserver's Python
    stubs), then SIGKILL the group if ``p`` has not exited after ``timeout_s``. Also when ``p``
    itself already died: a SIGKILLed tritonserver leaves its stubs running in its group, and they
    get a second to exit before SIGKILL. ``resume``: SIGCONT first (a stopped process cannot act
    on SIGTERM)."""
    if p is None:
        return
    leader_alive = p.poll() is None
    try:
        if resume:
            os.killpg(p.pid, signal.SIGCONT)
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:  # nothing of the group is left
        return
    if leader_alive:
        try:
            p.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    else:
        time.sleep(min(timeout_s, 1.0))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)
