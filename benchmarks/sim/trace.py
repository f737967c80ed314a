"""Arrival traces: loading the paper's ``arrival_ms,prompt_id`` files, scaling them, and each
query's confidence (its prompt's, from the cascade description) that drives query-aware routing.

Pure numpy; no simulator state here.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from planner.data import PromptConfidences
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


PROMPT_ID_MODES = ("exact", "wrap", "auto")


def query_confidences(trace: Trace, confidences: PromptConfidences, prompt_ids: str = "exact") -> np.ndarray:
    """Each query's confidence: its prompt's (float64, len(trace)), so a query is deferred at
    threshold t exactly when the artifact would defer its prompt (confidence < t).

    ``prompt_ids``: ``exact`` (a prompt id without a confidence is a ValueError naming it),
    ``wrap`` (prompt id p takes the confidence of the (p mod n)-th prompt in id order: a trace
    written for another prompt set, e.g. the paper's traces on a 256-prompt calibration) or
    ``auto`` (exact when every id is known, else wrap).
    """
    return confidences.confidence[_prompt_positions(trace, confidences, prompt_ids)]


def query_router_scores(trace: Trace, confidences: PromptConfidences, prompt_ids: str = "exact") -> np.ndarray:
    """Each query's router score: its prompt's (float64, len(trace)), the prompt found as
    :func:`query_confidences` finds it, so a query's router score and confidence are one prompt's."""
    if confidences.router_score is None:
        raise ValueError(f"{confidences.source}: no router scores; expected a 'router' column (written by "
                         "`export calibrate` on a repository with a prompt router)")
    return confidences.router_score[_prompt_positions(trace, confidences, prompt_ids)]


def _prompt_positions(trace: Trace, confidences: PromptConfidences, prompt_ids: str) -> np.ndarray:
    """Index into the confidences' prompts of each query's prompt (``prompt_ids``: see :func:`query_confidences`)."""
    if prompt_ids not in PROMPT_ID_MODES:
        raise ValueError(f"prompt_ids = {prompt_ids!r}; expected one of {PROMPT_ID_MODES}")
    known = np.isin(trace.prompt_id, confidences.content_id)
    if prompt_ids == "exact" or (prompt_ids == "auto" and known.all()):
        return confidences.positions(trace.prompt_id)
    return np.mod(trace.prompt_id, len(confidences.confidence))


def confidences_from_curve(trace: Trace, deferral: DeferralCurve, seed: int) -> np.ndarray:
    """Per-query confidences for a cascade known only by its f(t): each prompt id draws u ~ U[0, 1)
    once (seeded) and gets the threshold at which f reaches u, so the share of prompts deferred at
    t is f(t) (up to sampling) and a repeated prompt is deferred alike. Returns float64 (len(trace))."""
    ids, inverse = np.unique(trace.prompt_id, return_inverse=True)
    u = np.random.default_rng(seed).random(len(ids))
    f = np.asarray(deferral.deferral_fraction, dtype=np.float64)
    t = np.asarray(deferral.thresholds, dtype=np.float64)
    keep = np.concatenate([[True], np.diff(f) > 0])  # np.interp needs strictly increasing f
    return np.interp(u, f[keep], t[keep])[inverse]
