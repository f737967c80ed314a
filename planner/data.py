"""Loaders: the DiffServe paper's artifact files and this project's calibration outputs -> planner types.

Paper files (``/work/shared/data/diffserve-artifact/``, see the README there):

- ``profile_a100_sdturbo_sdv15.csv``: columns ``,Model,Accel,batchsize,avg_runtime,...``; the
  A100 rows are ``Accel == onnxruntime_gpu_ampere``; runtimes are whole-pipeline batch latencies
  in ms -> :func:`load_paper_profiles` -> (light, heavy) :class:`ModelProfile`.
- ``deferral_curve_sdturbo_sdv15.csv``: columns ``,t,f_t`` -> :func:`load_deferral_curve`.
- ``fid_curve_sdturbo_sdv15.json``: keys ``fraction_served_by_light``, ``fid`` ->
  :func:`load_quality_curve`.
- ``confidence_sdturbo_sdv15.csv``: ``content_id,<light>,<heavy>`` -> :func:`load_confidences`.

This project's own files use the same schema (docs/interfaces.md section 2):
``profiles/<cascade>/<device>.json`` with a top-level ``batch_latency_ms`` object
``{model_name: {batch_size_as_string: ms}}`` (model order = light -> heavy) ->
:func:`load_project_profiles`; ``profiles/<cascade>/deferral_curve.csv`` and
``quality_curve.json`` -> the same curve loaders; :func:`load_calibration` reads all three.

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

#: Where the paper's artifact lives on this machine; override with $DIFFSERVE_ARTIFACT.
ARTIFACT_DIR = Path(os.environ.get("DIFFSERVE_ARTIFACT", "/work/shared/data/diffserve-artifact"))
PAPER_PROFILE_CSV = "profile_a100_sdturbo_sdv15.csv"
PAPER_DEFERRAL_CSV = "deferral_curve_sdturbo_sdv15.csv"
PAPER_FID_JSON = "fid_curve_sdturbo_sdv15.json"
PAPER_CONFIDENCE_CSV = "confidence_sdturbo_sdv15.csv"
A100_ACCEL = "onnxruntime_gpu_ampere"


def _float(path: Path, what: str, raw: object) -> float:
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {what} = {raw!r}; expected a number") from None


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
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
    rows = _read_csv(path, ("Model", "Accel", "batchsize", column))
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
    rows = _read_csv(path, ("t", "f_t"))
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
    """Per-prompt discriminator confidence (P(real)) of the light and the heavy model's image."""

    content_id: np.ndarray  # int64 (n,)
    light: np.ndarray  # float64 (n,)
    heavy: np.ndarray  # float64 (n,)
    light_name: str
    heavy_name: str

    def deferral_fraction(self, threshold: float) -> float:
        """Share of prompts whose light-image confidence is below ``threshold`` (empirical f(t))."""
        return float(np.mean(self.light < threshold)) if len(self.light) else 0.0


def load_confidences(path: str | Path | None = None) -> Confidences:
    """The paper's per-prompt confidences: CSV ``content_id,<light>,<heavy>``."""
    path = Path(path) if path is not None else ARTIFACT_DIR / PAPER_CONFIDENCE_CSV
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    with Path(path).open(newline="") as fh:
        header = next(csv.reader(fh), [])
    if len(header) != 3 or header[0] != "content_id":
        raise ValueError(f"{path}: header {header}; expected content_id,<light>,<heavy>")
    rows = _read_csv(path, tuple(header))
    ids = np.array([int(_float(path, "content_id", r[header[0]])) for r in rows], dtype=np.int64)
    light = np.array([_float(path, header[1], r[header[1]]) for r in rows], dtype=np.float64)
    heavy = np.array([_float(path, header[2], r[header[2]]) for r in rows], dtype=np.float64)
    return Confidences(content_id=ids, light=light, heavy=heavy, light_name=header[1], heavy_name=header[2])


def load_project_profiles(path: str | Path) -> tuple[ModelProfile, ...]:
    """This project's ``profiles/<cascade>/<device>.json`` -> profiles ordered light -> heavy.

    Reads the top-level ``batch_latency_ms`` object ``{model: {"<batch>": ms}}``; the JSON object
    order is the light -> heavy order (``quality_rank`` = position).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
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
