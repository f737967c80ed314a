"""What a running tritonserver's Python-backend stubs are, read from /proc (Linux).

Each stub is a child process of tritonserver whose command line is
``triton_python_backend_stub <model.py> <shm region> <shm size> <growth> <parent pid> <backend dir>
<ipc bytes> <instance name> <runtime>`` (Triton 2.51). A stub that dies is not restarted by
Triton 2.51 (its requests fail "Stub process '<instance>' is not healthy"); a reload replaces it
with a new process. So "same stub pids, all running" proves that no stub died or was replaced.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"


@dataclasses.dataclass(frozen=True)
class Stub:
    pid: int
    instance: str  # Triton's instance name, e.g. ``light_0_0``
    shm_region: str  # the /dev/shm name of its shared-memory region (no leading slash)
    state: str  # /proc/<pid>/stat state: R, S, D, Z (zombie: dead, not yet reaped), ...


def _ppid_and_state(pid: int) -> tuple[int, str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may contain spaces
    return int(fields[1]), fields[0]


def stubs(server_pid: int) -> dict[int, Stub]:
    """The Python-backend stub processes of the tritonserver ``server_pid``, by pid."""
    out: dict[int, Stub] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid, state = _ppid_and_state(int(proc.name))
            if ppid != server_pid:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        if state == "Z" or not argv or not argv[0].endswith(STUB_BINARY.encode()):
            # a zombie's cmdline is empty: keep it, so a dead stub is seen
            if state == "Z":
                out[int(proc.name)] = Stub(int(proc.name), "?", "", state)
            continue
        args = [a.decode(errors="replace") for a in argv]
        out[int(proc.name)] = Stub(int(proc.name), args[8] if len(args) > 8 else "?", args[2], state)
    return out


def running_stub_pids(server_pid: int) -> set[int]:
    """Pids of the stubs of ``server_pid`` that are alive (not zombies)."""
    return {pid for pid, stub in stubs(server_pid).items() if stub.state != "Z"}
