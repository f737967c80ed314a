"""``make profile``: latency per batch size of every exported stage on this device.

Runs the same runtime code the Triton stage models run (:func:`serving.load_stage`,
:func:`serving.load_discriminator`), in this process, and writes
``profiles/<cascade>/<device>.json`` (docs/interfaces.md section 2)::

    {"batch_latency_ms": {"light": {"1": ms, ...}, "heavy": {...}},   # what planner.data reads
     "stages": {"light": {"latency_ms": {"1": {"median": .., "min": .., "max": ..}}}, ...},
     "device": ..., "backends": ..., "ort_threads": .., "cpu_slots": .., "repeats": .., "command": ..}

``batch_latency_ms`` is per *model* as the planner sees it: light = light stage + discriminator
(the cascade runs both for every query), heavy = heavy stage. Batch sizes that do not fit in
memory stop the sweep for that stage (recorded under ``skipped``).

Threads: on a CPU, each stage is timed at the thread count it gets live on one CPU slot
(:func:`serving.model_config.cpu_slot_threads`: cores // ``cpu_slots``, the count the
orchestrator sets), so the planner's per-slot latency is what one slot really delivers
(docs/orchestrator.md "CPU slots"). ``threads`` / ``$DIFFSERVE_ORT_THREADS`` override it; on a
GPU the default stays the runtime's (0).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from export import repository
from serving.config import PROJECT_ROOT, CascadeConfig
from serving.model_config import available_cores, cpu_slot_threads

PROMPTS = ("a red circle on the left of a blue square", "two green triangles", "a small yellow star above a cat")


def device_name() -> str:
    """A file-name-safe name of the device the runtime uses: the GPU's, else the CPU model + cores."""
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    except ImportError:
        pass
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1]
                break
    except OSError:
        pass
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:48]
    return f"cpu-{slug}-{os.cpu_count()}cores"


def profile_threads(threads: int | None, cpu_slots: int, on_gpu: bool) -> int:
    """The intra-op thread count to profile at: ``threads`` when given, else
    ``$DIFFSERVE_ORT_THREADS``, else one CPU slot's share of the cores (0 on a GPU: the runtime's default)."""
    if threads is not None:
        if int(threads) < 0:
            raise ValueError(f"threads={threads}; expected an integer >= 0 (0: every core)")
        return int(threads)
    env = os.environ.get("DIFFSERVE_ORT_THREADS", "")
    if env:
        if not env.isdigit():
            raise ValueError(f"DIFFSERVE_ORT_THREADS={env!r}; expected an integer >= 0")
        return int(env)
    return 0 if on_gpu else cpu_slot_threads(available_cores(), cpu_slots)


def _cuda_visible() -> bool:
    try:
        import torch  # noqa: PLC0415

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def time_call(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Run ``fn`` once to warm up, then ``repeats`` times; wall-clock ms (median, min, max)."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(1000.0 * (time.perf_counter() - t0))
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def _sweep(name: str, make_call: Callable[[int], Callable[[], Any]], batch_sizes: Sequence[int],
           repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_ms": {}, "skipped": {}}
    for b in tqdm(batch_sizes, desc=f"profile {name}", unit="batch size"):
        try:
            out["latency_ms"][str(b)] = time_call(make_call(b), repeats)
        except (MemoryError, RuntimeError) as exc:  # ORT reports allocation failures as RuntimeError
            out["skipped"][str(b)] = f"{type(exc).__name__}: {exc}"[:300]
            break
    return out


def profile_cascade(cascade: CascadeConfig, repo: str | Path, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
                    repeats: int = 3, out_dir: str | Path | None = None, backend: str = "auto",
                    threads: int | None = None, cpu_slots: int = 2) -> Path:
    """Profile light, heavy and discriminator of an exported cascade; returns the JSON path written.
    ``threads``/``cpu_slots``: see :func:`profile_threads`."""
    from serving import load_discriminator, load_stage  # noqa: PLC0415

    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes={list(batch_sizes)}; expected positive integers")
    threads = profile_threads(threads, cpu_slots, _cuda_visible())
    stages = {s: load_stage(repository.artifact_dir(repo, s), backend, threads, cascade.config_hash) for s in ("light", "heavy")}
    disc = load_discriminator(repository.artifact_dir(repo, "discriminator"), backend, threads, cascade.config_hash)

    def gen_call(stage):
        def make(b):
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(b)]
            return lambda: stage.generate(prompts, list(range(b)))
        return make

    rng = np.random.default_rng(0)
    h, w = cascade.light.height_px, cascade.light.width_px
    results = {s: _sweep(s, gen_call(p), batch_sizes, repeats) for s, p in stages.items()}
    results["discriminator"] = _sweep("discriminator", lambda b: (
        lambda x=rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8): disc.confidence(x)), batch_sizes, repeats)
    light_ms, heavy_ms = {}, {}
    for b, t in results["light"]["latency_ms"].items():
        if b in results["discriminator"]["latency_ms"]:
            light_ms[b] = t["median"] + results["discriminator"]["latency_ms"][b]["median"]
    for b, t in results["heavy"]["latency_ms"].items():
        heavy_ms[b] = t["median"]
    device = device_name()
    doc = {
        "cascade": cascade.name, "config_hash": cascade.config_hash, "device": device,
        "batch_latency_ms": {"light": light_ms, "heavy": heavy_ms},
        "batch_latency_includes": {"light": ["light", "discriminator"], "heavy": ["heavy"]},
        "stages": results,
        "backends": {s: {c: e.backend for c, e in p.engines.items()} for s, p in stages.items()}
        | {"discriminator": {"discriminator": disc.engine.backend}},
        "steps": {s: p.spec.steps for s, p in stages.items()},
        "ort_threads": threads, "cpu_slots": cpu_slots,
        "cpu_count": os.cpu_count(), "repeats": repeats, "statistic": "median of repeats after one warm-up run",
        "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m", "export", *sys.argv[1:]]),
    }
    out = Path(out_dir) if out_dir else PROJECT_ROOT / "profiles" / cascade.name
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{device}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path
