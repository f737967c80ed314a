"""The cascade model's ``config.pbtxt`` parameters, validated (pure; no Triton import)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

from serving.control import resolve_control_path
from serving.model_config import config_parameters

OUTPUTS = ("IMAGE", "SERVED_BY", "CONFIDENCE", "THRESHOLD")
PARAMETERS = ("control_file", "slo_ms", "drop_factor", "ewma_alpha", "light_model", "heavy_model",
              "discriminator_model", "router_model", "random_seed", "stage_timeout_ms", "max_stage_calls")


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
    """The cascade's ``config.pbtxt`` parameters, validated.

    ``slo_ms``: default SLO when neither the control file nor the request sets one (None: no
    shedding). ``drop_factor``: no request is answered later than drop_factor x SLO after the
    cascade received it; it is shed instead (paper: 1.5). ``ewma_alpha``: weight of the newest
    latency sample. ``stage_models``: Triton model name per stage. ``random_seed``: seed of the
    ``random`` routing policy's generator. ``stage_timeout_ms``: a stage call that has not
    answered after this long fails its queries (INTERNAL, "did not answer within"), so a hung
    stage cannot hang the cascade's clients. ``max_stage_calls``: BLS calls in flight per stage
    and cascade instance (the size of that stage's thread pool: each call waits on one thread;
    more calls wait for a thread, still counted as work in flight).
    """

    control_file: Path
    slo_ms: float | None = None
    drop_factor: float = 1.5
    ewma_alpha: float = 0.2
    stage_models: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"light": "light", "discriminator": "discriminator", "heavy": "heavy", "router": "router"})
    random_seed: int = 0
    stage_timeout_ms: float = 60_000.0
    max_stage_calls: int = 128


def cascade_yaml_slo_ms(stage_params: Mapping[str, str], project_root: str | Path | None) -> float | None:
    """``slo_ms`` of the cascade YAML a stage model was exported from (its ``cascade_config``
    parameter), or None when there is no such file or value."""
    ref = stage_params.get("cascade_config", "")
    if not ref:
        return None
    from serving.config import load_cascade  # noqa: PLC0415 - the one parser of cascade YAMLs

    path = resolve_control_path(ref, project_root)  # same rule: relative to the project root
    try:
        return load_cascade(path).slo_ms
    except (OSError, ValueError):  # ConfigError included: a broken YAML is the stage models' error to report
        return None


def parse_config(model_config: Mapping[str, Any], project_root: str | Path | None = None,
                 stage_params: Mapping[str, str] | None = None) -> CascadeConfig:
    """Validate the model config dict Triton passes to ``initialize`` (ValueError if bad).

    ``stage_params``: the light stage model's config parameters. An empty ``control_file``
    means the light stage's (so the cascade follows whichever cascade was exported), an empty
    ``slo_ms`` the cascade YAML's ``slo_ms`` (named by the stage's ``cascade_config``).
    """
    stage_params = stage_params or {}
    name = model_config.get("name", "cascade")
    if int(model_config.get("max_batch_size", 0)) < 1:
        raise ValueError(f"{name}: max_batch_size={model_config.get('max_batch_size')}; expected >= 1 (batching on)")
    have = {o["name"] for o in model_config.get("output", [])}
    if set(OUTPUTS) - have:
        raise ValueError(f"{name}: config outputs {sorted(have)}; expected {list(OUTPUTS)}")
    params = config_parameters(model_config)
    if set(params) - set(PARAMETERS):
        raise ValueError(f"{name}: unknown config parameters {sorted(set(params) - set(PARAMETERS))}; "
                         f"expected {sorted(PARAMETERS)}")

    def number(key: str, default: float | None, lo: float, hi: float) -> float | None:
        raw = params.get(key, "")
        if raw == "":
            return default
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"{name}: parameter {key}={raw!r}; expected a number in ({lo}, {hi}]") from None
        if not (math.isfinite(v) and lo < v <= hi):
            raise ValueError(f"{name}: parameter {key}={raw!r}; expected a number in ({lo}, {hi}]")
        return v

    calls = number("max_stage_calls", 128, 0.0, 4096.0)
    if calls != int(calls):
        raise ValueError(f"{name}: parameter max_stage_calls={params['max_stage_calls']!r}; expected an integer in [1, 4096]")
    control = params.get("control_file") or stage_params.get("control_file") or f"runs/control/{name}.json"
    slo_ms = number("slo_ms", None, 0.0, 3.6e6)
    return CascadeConfig(
        control_file=resolve_control_path(control, project_root),
        slo_ms=slo_ms if slo_ms is not None else cascade_yaml_slo_ms(stage_params, project_root),
        drop_factor=number("drop_factor", 1.5, 0.0, 100.0),
        ewma_alpha=number("ewma_alpha", 0.2, 0.0, 1.0),
        stage_models={s: params.get(f"{s}_model") or s for s in ("light", "discriminator", "heavy", "router")},
        random_seed=int(number("random_seed", 0, -1.0, 2.0**32)),
        stage_timeout_ms=number("stage_timeout_ms", 60_000.0, 0.0, 3.6e6),
        max_stage_calls=int(calls),
    )
