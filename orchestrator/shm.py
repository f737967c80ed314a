"""The Python backend's shared-memory regions in ``/dev/shm``, and which server owns them.

Triton's Python backend creates one region per model instance, named
``triton_python_backend_shm_region_<uuid>``; the server and the instance's stub process map it.
A server that exits cleanly removes its regions; one that is killed (SIGKILL, abort) leaves
some behind (measured: 2 of 5 after a SIGKILL of a server running the stand-in cascade), and
nothing else ever removes them. Other servers on the host (other users, other test runs) have
regions with the same prefix, so only regions known to belong to the dead server may go:

- while the server lives, its regions are the ones mapped into its own address space
  (``/proc/<pid>/maps``): :func:`server_regions`, recorded by the supervisor every health look;
- when it has died, its stubs that are still alive name it: a stub's command line is
  ``stub model.py <region> <size> <growth> <server pid> ...``: :func:`orphan_stub_regions`.
"""
from __future__ import annotations

import json
import os
import re
import signal
import tempfile
from pathlib import Path
from typing import Iterable

SHM_DIR = Path("/dev/shm")
REGION_PREFIX = "triton_python_backend_shm_region_"
_REGION = re.compile(r"^triton_python_backend_shm_region_[0-9a-fA-F-]{8,64}$")
STUB_NAME = "triton_python_backend_stub"


def is_region_name(name: str) -> bool:
    """True for a Python-backend region name (and nothing else: never a path, never another file)."""
    return bool(_REGION.match(name))


def server_regions(pid: int, proc: Path = Path("/proc")) -> set[str]:
    """Python-backend regions mapped by the live process ``pid`` (empty when it is gone)."""
    try:
        lines = (proc / str(pid) / "maps").read_text().splitlines()
    except OSError:
        return set()
    names = set()
    for line in lines:
        path = line.rsplit(None, 1)[-1] if line.strip() else ""
        name = path[len("/dev/shm/"):] if path.startswith("/dev/shm/") else ""
        if is_region_name(name):
            names.add(name)
    return names


def stub_commands(proc: Path = Path("/proc")) -> Iterable[tuple[int, list[str]]]:
    """(pid, argv) of every Python-backend stub process this user can see."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0].endswith(STUB_NAME):
            yield int(entry.name), argv


def orphan_stubs(server_pid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """Stubs (pid -> region) started by the server ``server_pid`` that are still alive."""
    out = {}
    for pid, argv in stub_commands(proc):
        if len(argv) > 5 and argv[5] == str(server_pid) and is_region_name(argv[2]):
            out[pid] = argv[2]
    return out


def remove_regions(names: Iterable[str], shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink the named regions that still exist; returns the ones removed. Names that are not
    Python-backend region names are refused (ValueError naming them) so that no other file is
    ever removed."""
    names = sorted(set(names))
    bad = [n for n in names if not is_region_name(n)]
    if bad:
        raise ValueError(f"not Python-backend shared-memory region names: {bad[:5]}; "
                         f"expected '{REGION_PREFIX}<uuid>'")
    removed = []
    for name in names:
        try:
            os.unlink(shm_dir / name)
            removed.append(name)
        except FileNotFoundError:
            pass  # the server or a stub removed it already
    return removed


def cleanup_dead_server(server_pid: int, recorded: Iterable[str], proc: Path = Path("/proc"),
                        shm_dir: Path = SHM_DIR) -> dict[str, list]:
    """After the server ``server_pid`` died: end its stubs that are still alive (they only hold
    its memory) and remove its regions, the ``recorded`` ones and those its stubs name.
    Returns ``{"stubs_killed": [...], "regions_removed": [...]}``."""
    stubs = orphan_stubs(server_pid, proc)
    killed = []
    for pid in sorted(stubs):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass  # it exited on its own (stubs watch their server)
    removed = remove_regions({n for n in recorded if is_region_name(n)} | set(stubs.values()), shm_dir)
    return {"stubs_killed": killed, "regions_removed": removed}


def save_record(path: Path, server_pid: int, regions: Iterable[str]) -> None:
    """Persist the regions seen for ``server_pid`` (``make stop`` and a restarted orchestrator read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": server_pid, "regions": sorted(regions)}, f)
    os.replace(tmp, path)


def load_record(path: Path, server_pid: int) -> set[str]:
    """The regions recorded for ``server_pid`` (empty when none, or recorded for another server)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(doc, dict) or doc.get("pid") != server_pid:
        return set()
    return {n for n in doc.get("regions", []) if isinstance(n, str) and is_region_name(n)}
