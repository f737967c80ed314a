"""Arrival traces: loading the paper's ``arrival_ms,prompt_id`` files, scaling them, and the
per-prompt confidences that drive query-aware routing.

Pure numpy; no simulator state here.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from planner.types import DeferralCurve


@dataclasses.dataclass(frozen=True, eq=False)
class Trace:
    """Arrivals sorted by time: ``arrival_ms[i]`` (float64, ms since trace start) and the
    ``prompt_id[i]`` (int64) of query i. ``name`` says where it came from."""

    arrival_ms: np.ndarray
    prompt_id: np.ndarray
    name: str = "trace"

    def __post_init__(self) -> None:
        a, p = self.arrival_ms, self.prompt_id
        if a.ndim != 1 or p.ndim != 1 or len(a) != len(p):
            raise ValueError(f"trace {self.name!r}: arrival_ms {a.shape} and prompt_id {p.shape}; expected equal 1-D arrays")
        if len(a) and (not np.all(np.isfinite(a)) or a[0] < 0):
            raise ValueError(f"trace {self.name!r}: arrival times must be finite and >= 0 ms")
        if len(a) > 1 and np.any(np.diff(a) < 0):
            raise ValueError(f"trace {self.name!r}: arrival_ms must be sorted (use Trace.from_unsorted)")

    @classmethod
    def from_unsorted(cls, arrival_ms, prompt_id, name: str = "trace") -> "Trace":
        """Stable-sorts the arrivals by time (the paper's files are only sorted per second)."""
        a = np.asarray(arrival_ms, dtype=np.float64)
        p = np.asarray(prompt_id, dtype=np.int64)
        order = np.argsort(a, kind="stable")
        return cls(a[order], p[order], name)

    def __len__(self) -> int:
        return len(self.arrival_ms)

    @property
    def duration_s(self) -> float:
        """Time of the last arrival, seconds."""
        return float(self.arrival_ms[-1]) / 1000.0 if len(self) else 0.0

    def rate_qps(self, bin_s: float = 1.0) -> np.ndarray:
        """Arrivals per second in consecutive bins of ``bin_s`` seconds."""
        if len(self) == 0:
            return np.zeros(0)
        bins = (self.arrival_ms // (bin_s * 1000.0)).astype(np.int64)
        return np.bincount(bins) / bin_s


def load_trace(path: str | Path) -> Trace:
    """Reads a trace file with lines ``arrival_ms,prompt_id`` (the paper's format).

    Raises FileNotFoundError for a missing file and ValueError naming the file and line for a
    malformed one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace file {path} does not exist")
    arrivals: list[float] = []
    prompts: list[int] = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",")
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: {line!r}; expected 'arrival_ms,prompt_id'")
            try:
                arrivals.append(float(parts[0]))
                prompts.append(int(float(parts[1])))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: {line!r}; expected numbers 'arrival_ms,prompt_id'") from None
    return Trace.from_unsorted(arrivals, prompts, name=path.stem)


def scale_trace(trace: Trace, factor: int, seed: int) -> Trace:
    """``factor`` superimposed copies of ``trace``, each shifted by an independent uniform
    offset in [0, 1000) ms (the paper's traces are Poisson within each second, so this keeps
    the per-second rate shape and multiplies the rate by ``factor``)."""
    if factor < 1:
        raise ValueError(f"scale factor {factor}; expected an integer >= 1")
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(0.0, 1000.0, size=(factor, 1))
    arrivals = (trace.arrival_ms[None, :] + offsets).ravel()
    prompts = np.tile(trace.prompt_id, factor)
    return Trace.from_unsorted(arrivals, prompts, name=f"{trace.name}x{factor}")


def rate_scale_trace(trace: Trace, factor: float, seed: int) -> Trace:
    """The trace with its arrival rate multiplied by ``factor`` (> 0, not only integers),
    deterministic from ``seed``.

    The original arrivals come first and unchanged; ``floor(factor) - 1`` more copies are
    superimposed, each shifted by an independent uniform offset in [0, 1000) ms (as
    :func:`scale_trace`, so the per-second rate shape is kept); the fractional part adds one more
    shifted copy thinned to that fraction (each arrival kept with that probability). ``factor``
    < 1 thins the original. Factor 1 returns the trace itself.
    """
    if not factor > 0:
        raise ValueError(f"rate factor {factor}; expected > 0")
    if factor == 1:
        return trace
    rng = np.random.default_rng(seed)
    whole, frac = int(np.floor(factor)), factor - np.floor(factor)
    arrivals, prompts = [], []
    if whole >= 1:
        arrivals.append(trace.arrival_ms)
        prompts.append(trace.prompt_id)
    for _ in range(max(0, whole - 1)):
        arrivals.append(trace.arrival_ms + rng.uniform(0.0, 1000.0))
        prompts.append(trace.prompt_id)
    if frac > 0:
        keep = rng.random(len(trace)) < frac
        shift = rng.uniform(0.0, 1000.0) if whole >= 1 else 0.0  # thinning alone keeps the times
        arrivals.append(trace.arrival_ms[keep] + shift)
        prompts.append(trace.prompt_id[keep])
    return Trace.from_unsorted(np.concatenate(arrivals), np.concatenate(prompts), name=f"{trace.name}@{factor:g}x")


def load_confidences(path: str | Path, column: str = "sdturbo") -> dict[int, float]:
    """Per-prompt light-image confidence from the paper's ``confidence_*.csv``
    (``content_id,sdturbo,sdv15``). Returns {prompt_id: confidence}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"confidence file {path} does not exist")
    with path.open() as fh:
        header = fh.readline().strip().split(",")
    if "content_id" not in header or column not in header:
        raise ValueError(f"{path}: header {header}; expected columns 'content_id' and {column!r}")
    data = np.genfromtxt(path, delimiter=",", skip_header=1)
    ids = data[:, header.index("content_id")].astype(np.int64)
    conf = data[:, header.index(column)]
    return dict(zip(ids.tolist(), conf.tolist()))


def calibrate_confidences(raw: np.ndarray, deferral: DeferralCurve) -> np.ndarray:
    """Maps raw confidences to values whose distribution matches the deferral curve f(t).

    The paper's published per-prompt confidences are not on the same scale as its f(t) curve
    (0.6 % of them are below 0.5, while f(0.5) = 0.99). The cascade's behaviour depends only
    on the *order* of the confidences (the least confident queries are deferred first), so we keep
    the order and replace each value by f^-1 of its rank quantile: afterwards the share of
    prompts with calibrated confidence < t equals f(t) (up to 1/n). Returns float64 (n,).
    """
    raw = np.asarray(raw, dtype=np.float64)
    n = len(raw)
    if n == 0:
        raise ValueError("calibrate_confidences: no confidences given; expected >= 1")
    ranks = np.empty(n, dtype=np.float64)
    ranks[np.argsort(raw, kind="stable")] = np.arange(n)
    u = (ranks + 0.5) / n
    f = np.asarray(deferral.deferral_fraction, dtype=np.float64)
    t = np.asarray(deferral.thresholds, dtype=np.float64)
    # np.interp needs strictly increasing xp: keep the first threshold of every plateau of f.
    keep = np.concatenate([[True], np.diff(f) > 0])
    return np.interp(u, f[keep], t[keep])


def query_confidences(trace: Trace, per_prompt: dict[int, float], deferral: DeferralCurve) -> np.ndarray:
    """Calibrated confidence of every query of ``trace`` (float64, len(trace)).

    Raises ValueError naming a prompt id of the trace that has no confidence.
    """
    ids = np.fromiter(per_prompt.keys(), dtype=np.int64, count=len(per_prompt))
    raw = np.fromiter(per_prompt.values(), dtype=np.float64, count=len(per_prompt))
    cal = calibrate_confidences(raw, deferral)
    order = np.argsort(ids)
    ids, cal = ids[order], cal[order]
    pos = np.searchsorted(ids, trace.prompt_id)
    pos_c = np.minimum(pos, len(ids) - 1)
    missing = ids[pos_c] != trace.prompt_id
    if np.any(missing):
        bad = int(trace.prompt_id[np.argmax(missing)])
        raise ValueError(f"trace {trace.name!r}: prompt_id {bad} has no confidence; expected ids in the confidence file")
    return cal[pos_c]
