"""``stage.json``: what an exported stage is (shapes, sampler, tokenizers) and where its files are.

Written by ``export.exporter`` next to the ONNX files, read by the serving runtime. Pure data;
:func:`read_stage_spec` validates it and raises :class:`StageSpecError` naming the bad field.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

FORMAT_VERSION = 1
KINDS = ("sd", "sdxl")
UNCOND_MODES = ("none", "empty_prompt", "zeros")


class StageSpecError(ValueError):
    """``stage.json`` is missing, malformed, from another format version, or stale."""


class StaleArtifacts(StageSpecError):
    """The artifacts were exported from a different cascade config than the one being served."""


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """One tokenizer folder (``tokenizer.json``); ids are truncated/padded to ``max_length_tokens``."""

    dir: str
    max_length_tokens: int
    pad_id: int


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A text-to-image stage (``sd``: one CLIP encoder; ``sdxl``: two plus pooled/time-id conditioning).

    ``uncond``: what classifier-free guidance uses as the negative branch ("none" when
    ``guidance_scale <= 1``, "empty_prompt" = the encoded empty prompt, "zeros" = SDXL's
    ``force_zeros_for_empty_prompt``). ``latent_shape`` is (channels, height, width) per image.
    """

    stage: str
    cascade: str
    config_hash: str
    kind: str
    pipeline_class: str
    steps: int
    guidance_scale: float
    scheduler: Mapping[str, Any]
    height_px: int
    width_px: int
    latent_shape: tuple[int, int, int]
    vae_scaling_factor: float
    vae_shift_factor: float
    vae_latents_mean: tuple[float, ...] | None
    vae_latents_std: tuple[float, ...] | None
    tokenizers: tuple[TokenizerSpec, ...]
    uncond: str
    components: Mapping[str, Mapping[str, Any]]

    @property
    def do_cfg(self) -> bool:
        return self.uncond != "none"


def _require(obj: Mapping[str, Any], key: str, where: Path):
    if key not in obj:
        raise StageSpecError(f"{where}: missing field {key!r}; re-run `make export`")
    return obj[key]


def read_stage_json(artifact_dir: str | Path, expected_hash: str | None = None, kind: str | None = None) -> dict:
    """``<artifact_dir>/stage.json`` as a dict, after the checks every exported stage shares: it
    exists, is JSON of this format version, is of ``kind`` (when given), and was exported from the
    cascade config hashing to ``expected_hash`` (when given; else :class:`StaleArtifacts`)."""
    path = Path(artifact_dir) / "stage.json"
    if not path.exists():
        raise StageSpecError(f"{path} does not exist; run `make export` (CASCADE=<config>) first")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StageSpecError(f"{path}: not valid JSON ({exc}); re-run `make export`") from exc
    version = obj.get("format_version") if isinstance(obj, dict) else None
    if version != FORMAT_VERSION:
        raise StageSpecError(f"{path}: format_version {version!r}, expected {FORMAT_VERSION}; re-run `make export`")
    if kind is not None and obj.get("kind") != kind:
        raise StageSpecError(f"{path}: kind {obj.get('kind')!r}; expected a format-{FORMAT_VERSION} {kind} stage; "
                             "re-run `make export`")
    if expected_hash is not None and obj.get("config_hash") != expected_hash:
        raise StaleArtifacts(
            f"{path} was exported from cascade config hash {obj.get('config_hash')!r} but the config now hashes to "
            f"{expected_hash!r}: the config changed since the export; re-run `make export`")
    return obj


def read_stage_spec(artifact_dir: str | Path, expected_hash: str | None = None) -> StageSpec:
    """Parse ``<artifact_dir>/stage.json``.

    ``expected_hash``: the hash of the cascade config being served; a different hash in the
    file raises :class:`StaleArtifacts` (the config changed since the export).
    """
    obj = read_stage_json(artifact_dir, expected_hash)
    path = Path(artifact_dir) / "stage.json"
    kind = _require(obj, "kind", path)
    if kind not in KINDS:
        raise StageSpecError(f"{path}: kind {kind!r}; expected one of {KINDS}")
    uncond = _require(obj, "uncond", path)
    if uncond not in UNCOND_MODES:
        raise StageSpecError(f"{path}: uncond {uncond!r}; expected one of {UNCOND_MODES}")
    vae = _require(obj, "vae", path)
    toks = tuple(TokenizerSpec(t["dir"], int(t["max_length_tokens"]), int(t["pad_id"]))
                 for t in _require(obj, "tokenizers", path))
    if len(toks) != (2 if kind == "sdxl" else 1):
        raise StageSpecError(f"{path}: {len(toks)} tokenizers for kind {kind!r}; expected {2 if kind == 'sdxl' else 1}")
    comps = _require(obj, "components", path)
    for name in ("text_encoder", "unet", "vae_decoder"):
        if name not in comps:
            raise StageSpecError(f"{path}: components lack {name!r}; re-run `make export`")
    mean, std = vae.get("latents_mean"), vae.get("latents_std")
    return StageSpec(
        stage=obj.get("stage", ""), cascade=obj.get("cascade", ""), config_hash=obj.get("config_hash", ""),
        kind=kind, pipeline_class=obj.get("pipeline_class", ""), steps=int(_require(obj, "steps", path)),
        guidance_scale=float(_require(obj, "guidance_scale", path)), scheduler=dict(_require(obj, "scheduler", path)),
        height_px=int(_require(obj, "height_px", path)), width_px=int(_require(obj, "width_px", path)),
        latent_shape=tuple(int(x) for x in _require(obj, "latent_shape", path)),
        vae_scaling_factor=float(vae["scaling_factor"]), vae_shift_factor=float(vae.get("shift_factor") or 0.0),
        vae_latents_mean=tuple(mean) if mean is not None else None,
        vae_latents_std=tuple(std) if std is not None else None,
        tokenizers=toks, uncond=uncond, components=comps,
    )
