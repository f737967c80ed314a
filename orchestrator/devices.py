"""Which devices a node offers: slot specs (``--slots``), the GPUs CUDA shows, the profile to plan with.

Pure parsing plus two thin probes (``nvidia-smi -L``, the profiles folder), apart from the CLI so
the benchmarks and the orchestrator resolve devices the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path


def parse_slots(text: str, cpu_default: int = 2) -> tuple[str, tuple[int, ...]]:
    """``cpu:4`` -> ("cpu", (0, 1, 2, 3)); ``gpu:0,2`` -> ("gpu", (0, 2)); ``auto`` -> GPUs or CPU."""
    if text == "auto":
        gpus = detect_gpus()
        return ("gpu", gpus) if gpus else ("cpu", tuple(range(cpu_default)))
    kind, _, rest = text.partition(":")
    try:
        if kind == "cpu":
            n = int(rest)
            if n < 1:
                raise ValueError
            return "cpu", tuple(range(n))
        if kind == "gpu":
            ids = tuple(int(x) for x in rest.split(",") if x != "")
            if ids and min(ids) >= 0:
                return "gpu", ids
    except ValueError:
        pass
    raise ValueError(f"slots={text!r}; expected 'auto', 'cpu:<n >= 1>' or 'gpu:<id>,<id>,...'")


def visible_gpus(smi_lines: list[str], cuda_visible_devices: str | None) -> list[int]:
    """Physical GPU indices (``nvidia-smi -L`` order) that CUDA shows, in CUDA's order: device id
    ``i`` of a process with this ``CUDA_VISIBLE_DEVICES`` (tritonserver's ``gpus: [i]``) is
    physical GPU ``visible_gpus(...)[i]``.

    ``CUDA_VISIBLE_DEVICES`` unset: every GPU; empty: none. Its entries are indices or
    (prefixes of) ``GPU-`` UUIDs; like CUDA, the list ends at the first entry that names no GPU
    or one already listed (``0,-1,2`` shows GPU 0 only). ``MIG-`` entries are not resolved here
    (an instance per MIG device is not a slot this orchestrator plans): they end the list too.
    """
    gpus = [line for line in smi_lines if line.startswith("GPU ")]
    if cuda_visible_devices is None:
        return list(range(len(gpus)))
    uuids = [line.split("UUID: ", 1)[1].rstrip(")").strip() if "UUID: " in line else "" for line in gpus]
    out: list[int] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        if entry.isdigit() and int(entry) < len(gpus):
            index = int(entry)
        else:
            matches = [i for i, u in enumerate(uuids) if entry.startswith("GPU-") and u.startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in out:
            break
        out.append(index)
    return out


def detect_gpus() -> tuple[int, ...]:
    """Device ids (0..n-1) of the GPUs a tritonserver started with this environment sees:
    ``nvidia-smi -L`` filtered by ``CUDA_VISIBLE_DEVICES`` (empty without GPUs or the tool)."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(range(len(visible_gpus(out.splitlines(), os.environ.get("CUDA_VISIBLE_DEVICES")))))


def _is_profile(path: Path) -> bool:
    try:
        return "batch_latency_ms" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def resolve_device(profiles_dir: str | Path, device: str) -> str:
    """``auto``: the one ``<device>.json`` profile in ``profiles_dir`` (``make profile`` names it
    after the machine); ValueError naming what is there when there is none or several."""
    if device != "auto":
        return device
    found = sorted(p.stem for p in Path(profiles_dir).glob("*.json") if _is_profile(p))
    if len(found) != 1:
        raise ValueError(f"--device auto: expected exactly one profile JSON in {profiles_dir}, found {found}; "
                         "run `make profile` or pass --device <name>")
    return found[0]
