"""Cascade config files (``configs/*.yaml``): parsing, validation and the config hash.

A cascade YAML (docs/interfaces.md section 2)::

    name: tiny
    slo_ms: 5000
    light:  {model: zoo/weights/light, steps: 4, guidance_scale: 4.0,
             scheduler: ddim, height: 32, width: 32}
    heavy:  {model: zoo/weights/heavy, steps: 25, guidance_scale: 4.0,
             scheduler: {name: ddim, timestep_spacing: leading}, height: 32, width: 32}
    discriminator: {path: zoo/weights/discriminator, image_size: 32}
    # optional: discriminator.loader (default export.discriminators:load_discriminator)
    calibration: {prompts: zoo.calibration:held_apart_prompts, count: 256, seed: 20251126,
                  quality: zoo.calibration:judge_fid}   # optional

``model``: a local diffusers folder (relative paths are under the project root) or a hub id
``owner/name``. ``scheduler``: ``from_model`` (the folder's own), ``ddim``, ``euler``,
``euler_ancestral``, or a mapping ``{name: ..., <diffusers scheduler option>: value, ...}``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
}
_LOADER = re.compile(r"^[\w.]+:\w+$")  # package.module:function
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_STAGE_KEYS = {"model", "steps", "guidance_scale", "scheduler", "height", "width"}
_TOP_KEYS = {"name", "slo_ms", "light", "heavy", "discriminator", "router", "calibration", "description"}


class ConfigError(ValueError):
    """The cascade config is malformed; the message names the file, key, value and what was expected."""


@dataclasses.dataclass(frozen=True)
class SchedulerChoice:
    """``name`` is ``from_model`` or a key of :data:`SCHEDULER_CLASSES`; ``options`` override its config."""

    name: str = "from_model"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One diffusion stage: which weights, how many steps, guidance, sampler, image size in pixels."""

    model: str
    steps: int
    guidance_scale: float
    scheduler: SchedulerChoice
    height_px: int
    width_px: int

    def model_location(self) -> tuple[str, str]:
        """("local", absolute path) or ("hub", hub id); raises ConfigError for a missing local folder."""
        return resolve_model(self.model)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """Discriminator weights folder, its input size in pixels, and the ``module:function`` that loads it."""

    path: str
    image_size_px: int
    loader: str = "export.discriminators:load_discriminator"


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Held-apart prompts and the quality metric for ``make calibrate``.

    ``prompts``: a text file (one prompt per line) or ``module:function`` with signature
    ``(seed, count) -> list[str]``. ``quality``: optional ``module:function`` with signature
    ``(prompts, seed) -> (score(images_uint8_nhwc) -> FID, description)``; without one the quality
    curve is skipped (a real cascade brings its own metric, e.g. FID against reference images).
    """

    prompts: str = "zoo.calibration:held_apart_prompts"
    count: int = 256
    seed: int = 20251126
    quality: str | None = None


@dataclasses.dataclass(frozen=True)
class RouterConfig:
    """The prompt router's artifact folder (``router.json``, :mod:`serving.router`); optional in a cascade."""

    path: str


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
    """A whole cascade config; ``config_hash`` identifies its content (not its formatting)."""

    name: str
    slo_ms: float
    light: StageConfig
    heavy: StageConfig
    discriminator: DiscriminatorConfig
    calibration: CalibrationConfig
    source: str
    config_hash: str
    router: RouterConfig | None = None

    def stage(self, name: str) -> StageConfig:
        if name not in ("light", "heavy"):
            raise ValueError(f"stage {name!r}; expected 'light' or 'heavy'")
        return getattr(self, name)


def resolve_model(model: str) -> tuple[str, str]:
    """Classify a ``model`` entry: an existing local folder, or a hub id ``owner/name``."""
    p = Path(model)
    full = p if p.is_absolute() else PROJECT_ROOT / p
    if full.exists():
        return "local", str(full.resolve())
    if not p.is_absolute() and _HUB_ID.match(model) and not model.startswith("."):
        return "hub", model
    hint = " (the tiny cascade's weights are committed under zoo/weights; `make zoo` rebuilds them)" \
        if "zoo/weights" in model else ""
    raise ConfigError(f"model {model!r}: no such local folder ({full}) and not a hub id 'owner/name'{hint}")


def _int(where: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{where}={v!r}; expected an integer in [{lo}, {hi}]")
    return v


def _float(where: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ConfigError(f"{where}={v!r}; expected a number in [{lo}, {hi}]")
    return float(v)


def _scheduler(where: str, v: Any) -> SchedulerChoice:
    if v is None:
        return SchedulerChoice()
    if isinstance(v, str):
        v = {"name": v}
    if not isinstance(v, Mapping) or "name" not in v:
        raise ConfigError(f"{where}={v!r}; expected a scheduler name or a mapping with 'name'")
    name = v["name"]
    if name != "from_model" and name not in SCHEDULER_CLASSES:
        raise ConfigError(f"{where}.name={name!r}; expected 'from_model' or one of {sorted(SCHEDULER_CLASSES)}")
    return SchedulerChoice(name, {k: x for k, x in v.items() if k != "name"})


def _stage(src: str, key: str, v: Any) -> StageConfig:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{src}: {key} must be a mapping with keys {sorted(_STAGE_KEYS)}, got {v!r}")
    unknown = set(v) - _STAGE_KEYS
    if unknown:
        raise ConfigError(f"{src}: {key} has unknown keys {sorted(unknown)}; expected {sorted(_STAGE_KEYS)}")
    if not isinstance(v.get("model"), str) or not v["model"]:
        raise ConfigError(f"{src}: {key}.model={v.get('model')!r}; expected a local folder or hub id")
    h = _int(f"{src}: {key}.height", v.get("height"), 8, 4096)
    w = _int(f"{src}: {key}.width", v.get("width"), 8, 4096)
    if h % 8 or w % 8:
        raise ConfigError(f"{src}: {key} image size {h}x{w} px; expected multiples of 8 (the VAE's downsampling)")
    return StageConfig(
        model=v["model"], steps=_int(f"{src}: {key}.steps", v.get("steps"), 1, 1000),
        guidance_scale=_float(f"{src}: {key}.guidance_scale", v.get("guidance_scale", 0.0), 0.0, 50.0),
        scheduler=_scheduler(f"{src}: {key}.scheduler", v.get("scheduler")), height_px=h, width_px=w,
    )


def _router(source: str, v: Any) -> RouterConfig | None:
    if v is None:
        return None
    if not isinstance(v, Mapping) or set(v) != {"path"} or not isinstance(v["path"], str) or not v["path"]:
        raise ConfigError(f"{source}: router={v!r}; expected a mapping {{path: <folder with router.json>}}")
    return RouterConfig(v["path"])


def config_hash(obj: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the config's canonical JSON: comments and key order do not matter."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def parse_cascade(obj: Any, source: str = "<dict>") -> CascadeConfig:
    """Validate a decoded cascade YAML mapping; raises :class:`ConfigError` naming the bad key and value."""
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(obj).__name__}")
    unknown = set(obj) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; expected {sorted(_TOP_KEYS)}")
    for key in ("name", "light", "heavy", "discriminator", "slo_ms"):
        if key not in obj:
            raise ConfigError(f"{source}: missing key {key!r}")
    name = obj["name"]
    if not isinstance(name, str) or not re.match(r"^[\w.-]+$", name):
        raise ConfigError(f"{source}: name={name!r}; expected letters, digits, '_', '-' or '.'")
    d = obj["discriminator"]
    if not isinstance(d, Mapping) or not isinstance(d.get("path"), str):
        raise ConfigError(f"{source}: discriminator={d!r}; expected a mapping with 'path' and 'image_size'")
    loader = d.get("loader", DiscriminatorConfig.loader)
    if not isinstance(loader, str) or not _LOADER.match(loader):
        raise ConfigError(f"{source}: discriminator.loader={loader!r}; expected 'package.module:function'")
    disc = DiscriminatorConfig(d["path"], _int(f"{source}: discriminator.image_size", d.get("image_size"), 8, 4096),
                               loader)
    c = obj.get("calibration") or {}
    if not isinstance(c, Mapping):
        raise ConfigError(f"{source}: calibration={c!r}; expected a mapping")
    unknown = set(c) - {"prompts", "count", "seed", "quality"}
    if unknown:
        raise ConfigError(f"{source}: calibration has unknown keys {sorted(unknown)}; expected prompts, count, seed, quality")
    quality = c.get("quality")
    if quality is not None and not (isinstance(quality, str) and _LOADER.match(quality)):
        raise ConfigError(f"{source}: calibration.quality={quality!r}; expected 'package.module:function'")
    cal = CalibrationConfig(str(c.get("prompts", CalibrationConfig.prompts)),
                            _int(f"{source}: calibration.count", c.get("count", 256), 2, 100000),
                            _int(f"{source}: calibration.seed", c.get("seed", 20251126), 0, 2**32 - 1), quality)
    return CascadeConfig(
        name=name, slo_ms=_float(f"{source}: slo_ms", obj["slo_ms"], 1.0, 3.6e6),
        light=_stage(source, "light", obj["light"]), heavy=_stage(source, "heavy", obj["heavy"]),
        discriminator=disc, calibration=cal, source=source, router=_router(source, obj.get("router")),
        config_hash=config_hash({k: v for k, v in obj.items() if k != "description"}),
    )


def load_cascade(path: str | Path) -> CascadeConfig:
    """Read and validate a cascade YAML file (relative paths are tried from the cwd, then the project root)."""
    import yaml  # noqa: PLC0415

    p = Path(path)
    if not p.exists() and not p.is_absolute() and (PROJECT_ROOT / p).exists():
        p = PROJECT_ROOT / p
    if not p.exists():
        raise ConfigError(f"cascade config {path} does not exist (configs/ has: "
                          f"{', '.join(sorted(x.name for x in (PROJECT_ROOT / 'configs').glob('*.yaml')))})")
    try:
        obj = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    return parse_cascade(obj, str(p))
