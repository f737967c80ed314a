"""Triton model-config parameters: the one parser of ``parameters { key: ... value: { string_value: ... } }``.

Triton hands a Python model its config as JSON (``parameters`` maps each key to
``{"string_value": ...}``), the model-control API returns the same JSON, and a ``config.pbtxt``
holds the text form. The stage models, the cascade model and the orchestrator all read
parameters through these two functions.

It also holds the one rule for CPU instance slots' thread count (:func:`cpu_slot_threads`),
which the orchestrator writes into the stage models' ``ort_threads`` parameter and
``export profile`` measures at.
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any, Mapping

_PBTXT_PARAMETER = re.compile(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"\s*\}')


def config_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters`` of a model config (JSON form) as a plain ``{key: string_value}`` dict."""
    return {k: (v or {}).get("string_value", "") for k, v in (model_config.get("parameters") or {}).items()}


def pbtxt_parameters(text: str) -> dict[str, str]:
    """``parameters`` (string values) of a ``config.pbtxt`` text."""
    return dict(_PBTXT_PARAMETER.findall(text))


# -- CPU slots ---------------------------------------------------------------------------------
# The stage models' intra-op thread count (ONNX Runtime; torch for AOT packages): 0 = the
# runtime's default, one thread per core.
THREADS_PARAMETER = "ort_threads"


def available_cores() -> int:
    """Cores this process may run on (the CPU affinity mask, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_slot_threads(cores: int, cpu_slots: int) -> int:
    """Intra-op threads of one stage instance on a CPU slot: the slot's fixed share of the cores.

    A CPU slot stands in for a GPU, so it must behave like one: an instance that took every core
    (the runtime's default) would slow down every other slot, and the planner, which counts slots
    as independent devices, would over-estimate what N slots serve. ``cores // cpu_slots``
    (at least 1) keeps the slots apart; leftover cores serve Triton, the cascade model and the
    discriminator's handoffs. ValueError for a count below 1.
    """
    if int(cores) < 1 or int(cpu_slots) < 1:
        raise ValueError(f"cores={cores}, cpu_slots={cpu_slots}; expected integers >= 1")
    return max(1, int(cores) // int(cpu_slots))


def with_threads(model_config: Mapping[str, Any], threads: int) -> dict[str, Any]:
    """A copy of ``model_config`` (JSON form) with ``ort_threads`` set to ``threads``, when the
    model has that parameter (stage models do; the cascade model and test doubles do not and are
    returned unchanged, so their loads stay in-place updates)."""
    cfg = copy.deepcopy(dict(model_config))
    params = cfg.get("parameters") or {}
    if THREADS_PARAMETER in params:
        params[THREADS_PARAMETER] = {"string_value": str(int(threads))}
    return cfg
