"""Request validation: the one set of rules for every model that answers clients.

The cascade, ``light``, ``heavy``, ``discriminator`` (and any future stage) parse their inputs
through these functions, so a request is refused for the same reasons, with the same message,
whichever model it reaches. Every refusal is a :class:`BadRequest` naming the value and what was
expected; the Triton adapters turn it into gRPC INVALID_ARGUMENT (HTTP 400).

Rules:

- ``PROMPT``: BYTES, one element per query, at most :data:`PROMPT_MAX_BYTES` bytes of UTF-8,
  with at least one printable non-space character and no control characters other than tab,
  newline and carriage return (a prompt of NULs is not a prompt). Accepted prompts longer than
  the text encoder's context are truncated by the stage's tokenizer.
- ``SEED``: optional INT64, one per prompt, in ``[0, 2**32 - 1]`` (numpy/torch generator seeds);
  omitted means :data:`DEFAULT_SEED`.
- request parameters: only the keys a model declares (the cascade: ``routing``, ``slo_ms``; a
  stage: none); unknown keys are refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from typing import Any, Iterable, Mapping

import numpy as np

PROMPT_MAX_BYTES = 2048
SEED_MAX = 2**32 - 1
DEFAULT_SEED = 0
REQUEST_ROUTES = ("cascade", "light", "heavy")
CASCADE_PARAMETERS = ("routing", "slo_ms")
_ALLOWED_CONTROL = frozenset("\t\n\r")


class BadRequest(ValueError):
    """The request is malformed; the message says which value and what was expected."""


@dataclasses.dataclass(frozen=True)
class RequestOptions:
    """Per-request parameters: a forced route (None = the control state's policy) and an SLO."""

    routing: str | None = None
    slo_ms: float | None = None


def decode_prompt(raw: Any, index: int = 0) -> str:
    """One PROMPT element (bytes) as text, or BadRequest (not bytes, too long, not UTF-8, no text)."""
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if not isinstance(raw, (bytes, bytearray, np.bytes_)):
        raise BadRequest(f"PROMPT[{index}] is {type(raw).__name__}; expected UTF-8 bytes")
    raw = bytes(raw)
    if len(raw) > PROMPT_MAX_BYTES:
        raise BadRequest(f"PROMPT[{index}] is {len(raw)} bytes; expected at most {PROMPT_MAX_BYTES} bytes "
                         "of UTF-8 (longer prompts are rejected; the text encoder truncates to its context)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"PROMPT[{index}] is not valid UTF-8 (byte {raw[exc.start]:#04x} at offset "
                         f"{exc.start}); expected UTF-8 text") from exc
    bad = next((c for c in text if unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROL), None)
    if bad is not None:
        raise BadRequest(f"PROMPT[{index}] contains the control character U+{ord(bad):04X} at offset "
                         f"{text.index(bad)}; expected text (tab, newline and carriage return are allowed)")
    if not any(c.isprintable() and not c.isspace() for c in text):
        raise BadRequest(f"PROMPT[{index}] has no printable character ({raw[:20]!r}); "
                         "expected a text prompt with at least one printable non-space character")
    return text


def decode_prompts(raw: Any) -> list[str]:
    """A PROMPT tensor (BYTES ``[n, 1]`` or ``[n]``) as ``n`` texts; BadRequest for an empty batch or a bad element."""
    values = np.asarray(raw, dtype=object).reshape(-1)
    if values.size == 0:
        raise BadRequest("PROMPT has no elements; expected BYTES [batch, 1] with at least one prompt")
    return [decode_prompt(p, k) for k, p in enumerate(values)]


def check_seed(value: Any, index: int = 0) -> int:
    """One SEED element as int, or BadRequest when not an integer in [0, 2**32 - 1]."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise BadRequest(f"SEED[{index}]={value!r}; expected an integer in [0, {SEED_MAX}]")
    seed = int(value)
    if not 0 <= seed <= SEED_MAX:
        raise BadRequest(f"SEED[{index}]={seed}; expected an integer in [0, {SEED_MAX}]")
    return seed


def check_seeds(raw: Any | None, n: int) -> list[int]:
    """A SEED tensor (INT64, one per prompt) as ``n`` seeds; None (input omitted) -> DEFAULT_SEED each."""
    if raw is None:
        return [DEFAULT_SEED] * n
    values = np.asarray(raw)
    if values.dtype != np.int64:
        raise BadRequest(f"SEED is {values.dtype}; expected INT64")
    values = values.reshape(-1)
    if values.size != n:
        raise BadRequest(f"SEED has {values.size} values for {n} prompts; expected one per prompt")
    return [check_seed(v, k) for k, v in enumerate(values)]


def check_images(raw: Any, height_px: int | None = None, width_px: int | None = None) -> np.ndarray:
    """An IMAGE tensor as UINT8 ``[n, H, W, 3]`` (H, W checked when given); BadRequest otherwise."""
    images = np.asarray(raw)
    want = f"UINT8 [batch, {height_px or 'H'}, {width_px or 'W'}, 3]"
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise BadRequest(f"IMAGE is {images.dtype} {list(images.shape)}; expected {want}")
    if (height_px and images.shape[1] != height_px) or (width_px and images.shape[2] != width_px):
        raise BadRequest(f"IMAGE is {list(images.shape)}; expected {want}")
    return images


def request_parameters(parameters: str | Mapping[str, Any] | None, allowed: Iterable[str] = ()) -> dict[str, Any]:
    """Triton's request parameters (a JSON string in the Python backend) as a dict of ``allowed`` keys only."""
    if parameters is None or parameters == "":
        return {}
    if isinstance(parameters, str):
        try:
            params = json.loads(parameters)
        except ValueError as exc:
            raise BadRequest(f"request parameters are not JSON ({exc})") from exc
    else:
        params = dict(parameters)
    if not isinstance(params, dict):
        raise BadRequest(f"request parameters are {type(params).__name__}; expected a map of names to values")
    allowed = tuple(allowed)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown request parameters {unknown}; expected only {list(allowed)}")
    return params


def parse_options(parameters: str | Mapping[str, Any] | None) -> RequestOptions:
    """The cascade's request parameters: ``routing`` in {cascade, light, heavy}; ``slo_ms`` a positive
    number (numbers may arrive as strings from HTTP clients). Unknown keys are refused."""
    params = request_parameters(parameters, CASCADE_PARAMETERS)
    routing = params.get("routing")
    if routing is not None and routing not in REQUEST_ROUTES:
        raise BadRequest(f"parameter routing={routing!r}; expected one of {list(REQUEST_ROUTES)}")
    slo_ms = params.get("slo_ms")
    if slo_ms is not None:
        try:
            if isinstance(slo_ms, bool):
                raise ValueError
            slo_ms = float(slo_ms)
        except (TypeError, ValueError):
            raise BadRequest(f"parameter slo_ms={params['slo_ms']!r}; expected a positive number of ms") from None
        if not (math.isfinite(slo_ms) and slo_ms > 0):
            raise BadRequest(f"parameter slo_ms={params['slo_ms']!r}; expected a positive number of ms")
    return RequestOptions(routing=routing, slo_ms=slo_ms)
