"""Writing results: provenance (git SHA, config, seed), JSON, markdown tables, PNG plots."""
from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def git_provenance() -> dict[str, Any]:
    """``{"git_sha": ..., "git_dirty": bool}`` of the checkout (``"unknown"`` outside git)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "benchmarks/sim", "orchestrator/control.py",
                                     "planner"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": "unknown", "git_dirty": None}
    return {"git_sha": sha, "git_dirty": dirty}


def provenance(command: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """What every results file carries: the command, the config (with its seed), git, time."""
    return {"command": command, "config": dict(config), **git_provenance(),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else round(float(x), 6)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(path: Path, doc: Mapping[str, Any]) -> Path:
    """Writes ``doc`` as indented JSON (NaN -> null); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(doc), indent=1) + "\n")
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed as given (format them before)."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_time_series(path: Path, runs: Mapping[str, Any], title: str) -> Path:
    """Figure-5-like PNG: arrival rate, threshold, violation ratio and FID per window, one line
    per policy. ``runs`` maps a policy name to its :class:`~benchmarks.sim.metrics.Series`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(5, 1, figsize=(10, 12), sharex=True)
    first = next(iter(runs.values()))
    axes[0].plot(first.t_s, first.arrivals / (first.t_s[1] - first.t_s[0] if len(first.t_s) > 1 else 1.0),
                 color="black", label="arrivals")
    for name, s in runs.items():
        axes[0].plot(s.t_s, s.demand_qps, lw=1, label=f"demand est. ({name})")
        axes[1].step(s.t_s, s.threshold, where="post", lw=1.2, label=name)
        axes[2].plot(s.t_s, s.violation_ratio, lw=1.2, label=name)
        axes[3].plot(s.t_s, s.fid, lw=1.2, label=name)
        axes[4].step(s.t_s, s.workers_heavy, where="post", lw=1.2, label=name)
    axes[0].set_ylabel("queries/s")
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].set_ylabel("threshold t")
    axes[2].set_ylabel("SLO violation ratio")
    axes[3].set_ylabel("FID (lower is better)")
    axes[4].set_ylabel("heavy-model GPUs")
    axes[4].set_xlabel("time (s)")
    axes[1].legend(fontsize=7, ncol=3)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(path: Path, names: Sequence[str], violation: Sequence[float], fid: Sequence[float], title: str) -> Path:
    """Two bar charts side by side: SLO violation ratio and mean FID per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(names, violation, color="tab:red")
    a.set_ylabel("SLO violation ratio")
    b.bar(names, fid, color="tab:blue")
    b.set_ylabel("mean FID (lower is better)")
    b.set_ylim(min(fid) * 0.95, max(fid) * 1.02)
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
