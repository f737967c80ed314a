"""The live benchmark's workload (pure): a shared trace's rate shape, time-compressed and
rescaled onto a target load range, with Poisson arrivals and domain prompts.

The paper's MAF traces (``arrival_ms,prompt_id``) give the shape: the per-second arrival
counts, smoothed over ``smooth_s`` seconds. The replay lasts ``duration_s``: replay second u
reads trace second ``u * trace_len / duration``, and its rate is min-max mapped onto
``[lo_qps, hi_qps]`` (e.g. 70%..150% of the cascade's planned capacity). Arrivals are Poisson
with that rate (seeded), so the same seed gives the same arrivals for every policy.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from benchmarks.live.replay import Arrival

TRACE_DIR = Path(__file__).resolve().parent / "traces"


@dataclasses.dataclass(frozen=True)
class Workload:
    """Arrivals plus the target rate per replay second (``rate_qps[u]``) they were drawn from."""

    arrivals: tuple[Arrival, ...]
    rate_qps: tuple[float, ...]
    source: str


def trace_shape(path: str | Path, smooth_s: int = 5) -> np.ndarray:
    """Per-second arrival counts of a ``arrival_ms,prompt_id`` trace, moving-average smoothed."""
    ms = np.loadtxt(path, delimiter=",", usecols=0, ndmin=1)
    if ms.size == 0:
        raise ValueError(f"trace {path} is empty; expected lines 'arrival_ms,prompt_id'")
    counts = np.bincount((ms // 1000).astype(np.int64)).astype(np.float64)
    if smooth_s > 1:
        counts = np.convolve(counts, np.ones(smooth_s) / smooth_s, mode="same")
    return counts


def rescale(shape: np.ndarray, duration_s: int, lo_qps: float, hi_qps: float) -> np.ndarray:
    """Rate (qps) per replay second: the shape resampled to ``duration_s`` seconds, min-max
    mapped onto ``[lo_qps, hi_qps]``. Raises ValueError for an empty range or duration."""
    if duration_s < 1 or not 0 <= lo_qps <= hi_qps or hi_qps <= 0:
        raise ValueError(f"duration_s={duration_s}, lo={lo_qps}, hi={hi_qps}; expected >= 1 s and 0 <= lo <= hi, hi > 0")
    idx = np.minimum((np.arange(duration_s) * len(shape) / duration_s).astype(np.int64), len(shape) - 1)
    s = shape[idx]
    span = s.max() - s.min()
    unit = (s - s.min()) / span if span > 0 else np.full_like(s, 0.5)
    return lo_qps + (hi_qps - lo_qps) * unit


def prompt_for(prompt_id: int, seed: int, hard_share: float = 0.5) -> str:
    """A tiny-domain caption for a trace prompt id (deterministic; hard with ``hard_share``), from
    the held-out compositions (``eval`` split) whose quality the tiny report measures."""
    from zoo.domain import sample_scene  # noqa: PLC0415

    rng = np.random.default_rng([seed, int(prompt_id)])
    return sample_scene(rng, "hard" if rng.random() < hard_share else "easy", split="eval")[0]


def build_workload(trace: str | Path, duration_s: int, lo_qps: float, hi_qps: float, seed: int = 0,
                   hard_share: float = 0.5, prompt=prompt_for) -> Workload:
    """Poisson arrivals following the rescaled trace shape, each with a domain prompt and seed."""
    rate = rescale(trace_shape(trace), duration_s, lo_qps, hi_qps)
    rng = np.random.default_rng(seed)
    arrivals = []
    for u, r in enumerate(rate):
        n = rng.poisson(r)
        for t in np.sort(rng.uniform(u, u + 1, n)):
            pid = int(rng.integers(0, 5000))
            arrivals.append(Arrival(float(t), prompt(pid, seed, hard_share), seed=pid))
    return Workload(tuple(arrivals), tuple(float(x) for x in rate), source=f"{Path(trace).name} x{len(rate)} s")
