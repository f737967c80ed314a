"""Loaders: the DiffServe paper's artifact files and this project's calibration outputs -> planner types.

Paper files (``benchmarks/data/diffserve/``, copied from the paper's artifact; see the README there):

- ``profile_a100_sdturbo_sdv15.csv``: columns ``,Model,Accel,batchsize,avg_runtime,...``; the
  A100 rows are ``Accel == onnxruntime_gpu_ampere``; runtimes are whole-pipeline batch latencies
  in ms -> :func:`load_paper_profiles` -> (light, heavy) :class:`ModelProfile`.
- ``deferral_curve_sdturbo_sdv15.csv``: columns ``,t,f_t`` -> :func:`load_deferral_curve`.
- ``fid_curve_sdturbo_sdv15.json``: keys ``fraction_served_by_light``, ``fid`` ->
  :func:`load_quality_curve`.
- ``confidence_sdturbo_sdv15.csv``: ``content_id,<light>,<heavy>``, each the mean of the
  discriminator's P(fake) over the prompt's 4 images -> :func:`load_confidences`.
- ``discriminator_scores_sdturbo.txt.gz``: the 20,000 raw P(fake) values (5,000 prompts x 4).

This project's own files use the same schema (docs/interfaces.md section 2):
``profiles/<cascade>/<device>.json`` with a top-level ``batch_latency_ms`` object
``{model_name: {batch_size_as_string: ms}}`` (model order = light -> heavy) ->
:func:`load_project_profiles`; ``profiles/<cascade>/deferral_curve.csv`` and
``quality_curve.json`` -> the same curve loaders; :func:`load_calibration` reads all three.
With a prompt router, ``router_curve.csv`` and ``hybrid_surface.json`` -> :mod:`planner.hybrid_data`.

:func:`load_cascade` reads either layout into one :class:`CascadeData` (profiles, f(t), quality
curve, SLO, per-prompt confidences with their direction): a directory with a ``cascade.json``
manifest (the paper's data ships one), or a ``profiles/<cascade>/`` directory as calibration
writes it. The simulator and the planner's tools read cascades through it.

Every loader raises ``ValueError`` naming the file and the offending value when the content is
not what is expected (missing column, non-numeric cell, unknown model).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from planner.types import DeferralCurve, ModelProfile, QualityCurve

#: The paper's artifact files, committed with the project; override with $DIFFSERVE_ARTIFACT.
ARTIFACT_DIR = Path(os.environ.get("DIFFSERVE_ARTIFACT",
                                   Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "diffserve"))
PAPER_PROFILE_CSV = "profile_a100_sdturbo_sdv15.csv"
PAPER_DEFERRAL_CSV = "deferral_curve_sdturbo_sdv15.csv"
PAPER_FID_JSON = "fid_curve_sdturbo_sdv15.json"
PAPER_CONFIDENCE_CSV = "confidence_sdturbo_sdv15.csv"
PAPER_SCORES = "discriminator_scores_sdturbo.txt.gz"
A100_ACCEL = "onnxruntime_gpu_ampere"
ROUTER_COLUMN = "router"  # confidences.csv: each prompt's router score (calibration with a prompt router)


def _float(path: Path, what: str, raw: object) -> float:
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {what} = {raw!r}; expected a number") from None


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV file with a header that has the ``required`` columns (ValueError naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        return list(reader)


def load_paper_profiles(
    path: str | Path | None = None,
    models: tuple[str, str] = ("sdturbo", "sdv15"),
    accel: str = A100_ACCEL,
    column: str = "avg_runtime",
) -> tuple[ModelProfile, ModelProfile]:
    """Batch-latency profiles (ms per batch) of the paper's light and heavy model on one A100.

    Returns (light, heavy) with ``quality_rank`` 0 and 1. ``column`` picks the statistic
    (``avg_runtime``, ``50th_pct``, ``90th_pct``, ``95th_pct``; identical in the published file).
    """
    path = Path(path) if path is not None else ARTIFACT_DIR / PAPER_PROFILE_CSV
    rows = read_csv(path, ("Model", "Accel", "batchsize", column))
    out = []
    for rank, name in enumerate(models):
        lat: dict[int, float] = {}
        for r in rows:
            if r["Model"] == name and r["Accel"] == accel:
                b = int(_float(path, f"batchsize of {name}", r["batchsize"]))
                lat[b] = _float(path, f"{column} of {name} batch {b}", r[column])
        if not lat:
            known = sorted({(r["Model"], r["Accel"]) for r in rows})
            raise ValueError(f"{path}: no rows for model {name!r} on {accel!r}; rows have {known}")
        out.append(ModelProfile(name=name, batch_latency_ms=lat, quality_rank=rank))
    return out[0], out[1]


def load_deferral_curve(path: str | Path | None = None) -> DeferralCurve:
    """f(t) from a CSV with columns ``t`` and ``f_t`` (the paper's and calibration's schema)."""
    path = Path(path) if path is not None else ARTIFACT_DIR / PAPER_DEFERRAL_CSV
    rows = read_csv(path, ("t", "f_t"))
    pts = sorted((_float(path, "t", r["t"]), _float(path, "f_t", r["f_t"])) for r in rows)
    return DeferralCurve(thresholds=tuple(p[0] for p in pts), deferral_fraction=tuple(p[1] for p in pts))


def load_quality_curve(path: str | Path | None = None) -> QualityCurve:
    """FID vs light share from JSON with keys ``fraction_served_by_light`` and ``fid``."""
    path = Path(path) if path is not None else ARTIFACT_DIR / PAPER_FID_JSON
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    for key in ("fraction_served_by_light", "fid"):
        if key not in doc:
            raise ValueError(f"{path}: missing key {key!r}; keys are {sorted(doc)}")
    xs = [_float(path, "fraction_served_by_light", x) for x in doc["fraction_served_by_light"]]
    ys = [_float(path, "fid", y) for y in doc["fid"]]
    if len(xs) != len(ys):
        raise ValueError(f"{path}: {len(xs)} fractions but {len(ys)} FIDs; expected equal lengths")
    pts = sorted(zip(xs, ys))
    return QualityCurve(light_fraction=tuple(p[0] for p in pts), fid=tuple(p[1] for p in pts), metric="FID")


@dataclasses.dataclass(frozen=True)
class Confidences:
    """Per-prompt values of a ``content_id,<light>,<heavy>`` file, as written (no direction applied:
    the paper's are mean P(fake), this project's P(real); see :class:`PromptConfidences`)."""

    content_id: np.ndarray  # int64 (n,)
    light: np.ndarray  # float64 (n,)
    heavy: np.ndarray  # float64 (n,)
    light_name: str
    heavy_name: str

    def deferral_fraction(self, threshold: float) -> float:
        """Share of prompts whose light-column value is below ``threshold`` (f(t) when the values are P(real))."""
        return float(np.mean(self.light < threshold)) if len(self.light) else 0.0


def load_confidences(path: str | Path | None = None) -> Confidences:
    """The paper's per-prompt confidences: CSV ``content_id,<light>,<heavy>``."""
    path = Path(path) if path is not None else ARTIFACT_DIR / PAPER_CONFIDENCE_CSV
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    with Path(path).open(newline="") as fh:
        header = next(csv.reader(fh), [])
    if len(header) not in (3, 4) or header[0] != "content_id" or header[3:] not in ([], [ROUTER_COLUMN]):
        raise ValueError(f"{path}: header {header}; expected content_id,<light>,<heavy>[,{ROUTER_COLUMN}]")
    header = header[:3]
    rows = read_csv(path, tuple(header))
    ids = np.array([int(_float(path, "content_id", r[header[0]])) for r in rows], dtype=np.int64)
    light = np.array([_float(path, header[1], r[header[1]]) for r in rows], dtype=np.float64)
    heavy = np.array([_float(path, header[2], r[header[2]]) for r in rows], dtype=np.float64)
    return Confidences(content_id=ids, light=light, heavy=heavy, light_name=header[1], heavy_name=header[2])


def read_json(path: Path):
    """The JSON document at ``path``; ValueError naming the file when it is missing or not JSON."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def load_project_profiles(path: str | Path) -> tuple[ModelProfile, ...]:
    """This project's ``profiles/<cascade>/<device>.json`` -> profiles ordered light -> heavy.

    Reads the top-level ``batch_latency_ms`` object ``{model: {"<batch>": ms}}``; the JSON object
    order is the light -> heavy order (``quality_rank`` = position).
    """
    path = Path(path)
    doc = read_json(path)
    table = doc.get("batch_latency_ms") if isinstance(doc, dict) else None
    if not isinstance(table, dict) or len(table) < 2:
        raise ValueError(f"{path}: expected a top-level 'batch_latency_ms' object with >= 2 models")
    out = []
    for rank, (name, per_batch) in enumerate(table.items()):
        if not isinstance(per_batch, dict) or not per_batch:
            raise ValueError(f"{path}: batch_latency_ms[{name!r}] = {per_batch!r}; expected {{batch: ms}}")
        lat = {}
        for b, ms in per_batch.items():
            try:
                bi = int(b)
            except ValueError:
                raise ValueError(f"{path}: batch size {b!r} of {name!r}; expected an integer") from None
            lat[bi] = _float(path, f"latency of {name} batch {b}", ms)
        out.append(ModelProfile(name=name, batch_latency_ms=lat, quality_rank=rank))
    return tuple(out)


def load_calibration(directory: str | Path, device: str) -> tuple[tuple[ModelProfile, ...], DeferralCurve, QualityCurve]:
    """``profiles/<cascade>/``: (profiles from ``<device>.json``, f(t), quality curve)."""
    d = Path(directory)
    return (
        load_project_profiles(d / f"{device}.json"),
        load_deferral_curve(d / "deferral_curve.csv"),
        load_quality_curve(d / "quality_curve.json"),
    )


def load_paper() -> tuple[tuple[ModelProfile, ModelProfile], DeferralCurve, QualityCurve]:
    """The paper's A100 cascade: ((sdturbo, sdv15) profiles, f(t), FID curve)."""
    return load_paper_profiles(), load_deferral_curve(), load_quality_curve()


# ---- one cascade description: profiles, f(t), quality curve, SLO, per-prompt confidences ------------

CONFIDENCE_MEANINGS = ("p_real", "p_fake")
MANIFEST = "cascade.json"
_MANIFEST_KEYS = {"name", "description", "slo_ms", "profile", "deferral_curve", "quality_curve", "confidences",
                  "deferral_from_confidences_step", "traces"}


@dataclasses.dataclass(frozen=True, eq=False)
class PromptConfidences:
    """Per-prompt confidence in the light model's image, oriented as the cascade uses it: at
    threshold t a prompt is deferred to the heavy model when its confidence is < t.

    ``content_id`` is sorted and unique. A discriminator that scores P(real) (this project's)
    gives the confidence as is; one that scores P(fake) (the paper's) gives 1 - P(fake), as the
    paper's artifact computes it. ``source`` names the file and the conversion.
    """

    content_id: np.ndarray  # int64 (n,)
    confidence: np.ndarray  # float64 (n,)
    source: str = ""
    # The prompt router's score per prompt (float64 (n,); a prompt with score >= the router
    # threshold skips light), from a ``router`` column; None: no router was calibrated.
    router_score: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids, conf = self.content_id, self.confidence
        if ids.ndim != 1 or ids.shape != conf.shape or len(ids) == 0:
            raise ValueError(f"{self.source}: {ids.shape} content ids and {conf.shape} confidences; "
                             "expected equal non-empty 1-D arrays")
        if np.any(np.diff(ids) <= 0):
            raise ValueError(f"{self.source}: content ids must be sorted and unique")
        if not np.all(np.isfinite(conf)):
            raise ValueError(f"{self.source}: confidences must be finite")
        r = self.router_score
        if r is not None and (r.shape != ids.shape or not np.all(np.isfinite(r))):
            raise ValueError(f"{self.source}: router scores of shape {r.shape}; expected one finite number per "
                             f"prompt {ids.shape}")

    def deferral_fraction(self, threshold: float) -> float:
        """f(t) of these prompts: the share whose confidence is < ``threshold``."""
        return float(np.mean(self.confidence < threshold))

    def positions(self, prompt_id: np.ndarray) -> np.ndarray:
        """Index of each prompt id in ``content_id`` (int64, same shape); ValueError naming an unknown id."""
        prompt_id = np.asarray(prompt_id, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.content_id, prompt_id), len(self.content_id) - 1)
        missing = self.content_id[pos] != prompt_id
        if np.any(missing):
            bad = int(prompt_id[np.argmax(missing)])
            raise ValueError(f"prompt id {bad} has no confidence in {self.source}; expected ids "
                             f"{int(self.content_id[0])}..{int(self.content_id[-1])}")
        return pos

    def lookup(self, prompt_id: np.ndarray) -> np.ndarray:
        """Confidence of each prompt id (float64, same shape); ValueError naming an unknown id."""
        return self.confidence[self.positions(prompt_id)]


def load_prompt_confidences(path: str | Path, meaning: str, column: str | None = None, images_per_prompt: int = 1,
                            first_content_id: int = 0) -> PromptConfidences:
    """Per-prompt confidences from a ``content_id,<light>,...`` CSV (``column``: default the
    second; a ``router`` column, as calibration writes it with a prompt router, gives each
    prompt's router score) or from a file of raw scores, one per line (``.gz`` allowed),
    ``images_per_prompt`` consecutive scores per prompt (averaged), prompts numbered from
    ``first_content_id``.

    ``meaning`` is what the values are: ``p_real`` (kept) or ``p_fake`` (confidence = 1 - value).
    """
    path = Path(path)
    if meaning not in CONFIDENCE_MEANINGS:
        raise ValueError(f"{path}: confidence meaning {meaning!r}; expected one of {CONFIDENCE_MEANINGS}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    router = None
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        column = column or (header[1] if len(header) > 1 else "")
        rows = read_csv(path, ("content_id", column))
        ids = np.array([int(_float(path, "content_id", r["content_id"])) for r in rows], dtype=np.int64)
        values = np.array([_float(path, column, r[column]) for r in rows], dtype=np.float64)
        if ROUTER_COLUMN in header and column != ROUTER_COLUMN:
            router = np.array([_float(path, ROUTER_COLUMN, r[ROUTER_COLUMN]) for r in rows], dtype=np.float64)
        what = f"{path.name} column {column!r}"
    else:
        if images_per_prompt < 1:
            raise ValueError(f"{path}: images_per_prompt = {images_per_prompt}; expected >= 1")
        try:
            raw = np.loadtxt(path, dtype=np.float64, ndmin=1)
        except ValueError as e:
            raise ValueError(f"{path}: expected one number per line ({e})") from None
        if raw.size == 0 or raw.size % images_per_prompt:
            raise ValueError(f"{path}: {raw.size} scores; expected a non-zero multiple of {images_per_prompt} "
                             "(images_per_prompt)")
        values = raw.reshape(-1, images_per_prompt).mean(axis=1)
        ids = first_content_id + np.arange(len(values), dtype=np.int64)
        what = f"{path.name} (mean of {images_per_prompt} per prompt)"
    if np.any((values < 0) | (values > 1)) or not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: values outside [0, 1]; expected probabilities ({meaning})")
    order = np.argsort(ids, kind="stable")
    conf = 1.0 - values if meaning == "p_fake" else values
    return PromptConfidences(ids[order], conf[order], f"{what}, {'1 - P(fake)' if meaning == 'p_fake' else 'P(real)'}",
                             router_score=None if router is None else router[order])


def deferral_from_confidences(confidences: PromptConfidences, step: float = 0.01) -> DeferralCurve:
    """f(t) = share of prompts with confidence < t, at t = 0, step, 2 step, ..., 1."""
    if not 0 < step <= 1:
        raise ValueError(f"deferral grid step {step}; expected in (0, 1]")
    ts = sorted({round(k * step, 9) for k in range(int(np.floor(1.0 / step + 1e-9)) + 1)} | {1.0})
    return DeferralCurve(thresholds=tuple(ts), deferral_fraction=tuple(confidences.deferral_fraction(t) for t in ts))


@dataclasses.dataclass(frozen=True, eq=False)
class CascadeData:
    """Everything a simulation or a plan needs to know about one cascade.

    ``models``: profiles ordered light -> heavy; ``deferral``: the f(t) the planner plans with;
    ``published_deferral``: the curve file's f(t) when ``deferral`` was recomputed from the
    confidences (kept to check one against the other); ``confidences``: per-prompt confidences
    (None: only f(t) is known); ``traces_dir``: where the cascade's trace files are (or None).
    """

    name: str
    models: tuple[ModelProfile, ...]
    deferral: DeferralCurve
    quality: QualityCurve
    slo_ms: float
    confidences: PromptConfidences | None = None
    published_deferral: DeferralCurve | None = None
    traces_dir: Path | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"cascade {self.name!r}: {len(self.models)} model profiles; expected >= 2 (light, heavy)")
        if not (isinstance(self.slo_ms, (int, float)) and np.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise ValueError(f"cascade {self.name!r}: slo_ms = {self.slo_ms!r}; expected a finite number > 0")

    @property
    def light(self) -> ModelProfile:
        return self.models[0]

    @property
    def heavy(self) -> ModelProfile:
        return self.models[-1]


def load_cascade(path: str | Path, device: str | None = None, slo_ms: float | None = None) -> CascadeData:
    """The cascade described by ``path``: a directory (or the file itself) with a ``cascade.json``
    manifest, or a ``profiles/<cascade>/`` directory as ``export profile`` / ``export calibrate``
    write it (``device``: which ``<device>.json``, default the only one). ``slo_ms`` overrides
    the manifest's; a profiles directory has none, so it must be given there.
    """
    p = Path(path)
    manifest = p if p.is_file() else p / MANIFEST
    if manifest.is_file():
        return _from_manifest(manifest, slo_ms)
    if p.is_dir() and (p / "deferral_curve.csv").is_file():
        return _from_profiles_dir(p, device, slo_ms)
    raise ValueError(f"{p}: no {MANIFEST} and no deferral_curve.csv; expected a cascade directory "
                     f"(a {MANIFEST} manifest, or profiles/<cascade>/ written by `export profile` and `export calibrate`)")


def _profile_device(d: Path, device: str | None) -> Path:
    if device:
        return d / f"{device}.json"
    found = sorted(q for q in d.glob("*.json") if q.name != MANIFEST and '"batch_latency_ms"' in q.read_text())
    if len(found) != 1:
        raise ValueError(f"{d}: expected exactly one profile JSON (with batch_latency_ms), found "
                         f"{[q.name for q in found]}; pass the device")
    return found[0]


def _from_profiles_dir(d: Path, device: str | None, slo_ms: float | None) -> CascadeData:
    if slo_ms is None:
        raise ValueError(f"{d}: a profiles directory has no SLO; pass slo_ms (the simulator's --slo-ms)")
    conf_csv = d / "confidences.csv"
    return CascadeData(
        name=d.name, models=load_project_profiles(_profile_device(d, device)),
        deferral=load_deferral_curve(d / "deferral_curve.csv"), quality=load_quality_curve(d / "quality_curve.json"),
        slo_ms=float(slo_ms), confidences=load_prompt_confidences(conf_csv, "p_real") if conf_csv.is_file() else None,
        source=str(d))


def _manifest_profiles(m: Path, spec: object) -> tuple[ModelProfile, ...]:
    """``profile``: a project profile JSON file name, or {file, models, accel, column} for the paper's CSV."""
    if isinstance(spec, str):
        return load_project_profiles(m.parent / spec)
    if not isinstance(spec, dict) or "file" not in spec:
        raise ValueError(f"{m}: profile = {spec!r}; expected a file name or an object with 'file'")
    models = spec.get("models")
    if not (isinstance(models, list) and len(models) == 2 and all(isinstance(x, str) for x in models)):
        raise ValueError(f"{m}: profile.models = {models!r}; expected [light, heavy] model names of the CSV")
    return load_paper_profiles(m.parent / spec["file"], tuple(models), spec.get("accel", A100_ACCEL),
                               spec.get("column", "avg_runtime"))


def _from_manifest(m: Path, slo_ms: float | None) -> CascadeData:
    try:
        doc = json.loads(m.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{m}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or set(doc) - _MANIFEST_KEYS:
        raise ValueError(f"{m}: unknown keys {sorted(set(doc) - _MANIFEST_KEYS) if isinstance(doc, dict) else doc!r}; "
                         f"expected some of {sorted(_MANIFEST_KEYS)}")
    for key in ("profile", "quality_curve"):
        if key not in doc:
            raise ValueError(f"{m}: missing key {key!r}")
    conf = None
    if "confidences" in doc:
        c = doc["confidences"]
        if not isinstance(c, dict) or "file" not in c or "meaning" not in c:
            raise ValueError(f"{m}: confidences = {c!r}; expected an object with 'file' and 'meaning' "
                             f"({' or '.join(CONFIDENCE_MEANINGS)})")
        conf = load_prompt_confidences(m.parent / c["file"], c["meaning"], c.get("column"),
                                       int(c.get("images_per_prompt", 1)), int(c.get("first_content_id", 0)))
    published = load_deferral_curve(m.parent / doc["deferral_curve"]) if "deferral_curve" in doc else None
    step = doc.get("deferral_from_confidences_step")
    if step is not None or published is None:
        if conf is None:
            raise ValueError(f"{m}: f(t) has to come from somewhere; expected 'deferral_curve' or 'confidences'")
        deferral = deferral_from_confidences(conf, float(step or 0.01))
    else:
        deferral = published
    slo = slo_ms if slo_ms is not None else doc.get("slo_ms")
    if slo is None:
        raise ValueError(f"{m}: no slo_ms; add it to the manifest or pass slo_ms (the simulator's --slo-ms)")
    return CascadeData(
        name=str(doc.get("name", m.parent.name)), models=_manifest_profiles(m, doc["profile"]), deferral=deferral,
        quality=load_quality_curve(m.parent / doc["quality_curve"]), slo_ms=float(slo), confidences=conf,
        published_deferral=published if deferral is not published else None,
        traces_dir=(m.parent / doc["traces"]) if "traces" in doc else None, source=str(m))
