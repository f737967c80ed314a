"""Triton model-config parameters: the one parser of ``parameters { key: ... value: { string_value: ... } }``.

Triton hands a Python model its config as JSON (``parameters`` maps each key to
``{"string_value": ...}``), the model-control API returns the same JSON, and a ``config.pbtxt``
holds the text form. The stage models, the cascade model and the orchestrator all read
parameters through these two functions.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

_PBTXT_PARAMETER = re.compile(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"\s*\}')


def config_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters`` of a model config (JSON form) as a plain ``{key: string_value}`` dict."""
    return {k: (v or {}).get("string_value", "") for k, v in (model_config.get("parameters") or {}).items()}


def pbtxt_parameters(text: str) -> dict[str, str]:
    """``parameters`` (string values) of a ``config.pbtxt`` text."""
    return dict(_PBTXT_PARAMETER.findall(text))
