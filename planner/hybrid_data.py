"""Loaders of ``make calibrate``'s files for a cascade with a prompt router -> planner types.

- ``profiles/<cascade>/router_curve.csv``: columns ``routed_share,score_threshold`` (the router
  score at or above which a prompt goes straight to heavy, per share of prompts routed) ->
  :func:`load_router_curve` -> :class:`~planner.types.RouterCurve`;
- ``profiles/<cascade>/hybrid_surface.json``: keys ``router_share`` and ``disc_share`` (grids),
  ``fid`` and ``disc_threshold`` (one row per router share, one value per discriminator share),
  optional ``metric`` -> :func:`load_hybrid_surface` -> :class:`~planner.types.HybridSurface`.

Both are written by ``export.hybrid_calibration``. Every loader raises ``ValueError`` naming the
file and what was expected.
"""
from __future__ import annotations

from pathlib import Path

from planner.data import _float, read_csv, read_json
from planner.types import HybridSurface, RouterCurve

ROUTER_CURVE_CSV = "router_curve.csv"
HYBRID_SURFACE_JSON = "hybrid_surface.json"


def load_router_curve(path: str | Path) -> RouterCurve:
    """Router score threshold vs routed share from a CSV with columns ``routed_share``, ``score_threshold``."""
    path = Path(path)
    rows = read_csv(path, ("routed_share", "score_threshold"))
    pts = sorted((_float(path, "routed_share", r["routed_share"]), _float(path, "score_threshold", r["score_threshold"]))
                 for r in rows)
    try:
        return RouterCurve(routed_share=tuple(p[0] for p in pts), score_threshold=tuple(p[1] for p in pts))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _table(path: Path, doc: dict, key: str, shape: tuple[int, int]) -> tuple[tuple[float, ...], ...]:
    rows = doc[key]
    if not isinstance(rows, list) or len(rows) != shape[0] or any(not isinstance(r, list) or len(r) != shape[1]
                                                                   for r in rows):
        raise ValueError(f"{path}: {key!r} is not {shape[0]} rows of {shape[1]} numbers (router shares x "
                         "discriminator shares)")
    return tuple(tuple(_float(path, f"{key}[{i}][{j}]", v) for j, v in enumerate(r)) for i, r in enumerate(rows))


def load_hybrid_surface(path: str | Path) -> HybridSurface:
    """The 2-D hybrid surface from JSON with keys ``router_share``, ``disc_share`` (grids), ``fid`` and
    ``disc_threshold`` (one row per router share, one value per discriminator share)."""
    path = Path(path)
    doc = read_json(path)
    keys = ("router_share", "disc_share", "fid", "disc_threshold")
    missing = [k for k in keys if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected {list(keys)}")
    grids = []
    for key in keys[:2]:
        if not isinstance(doc[key], list):
            raise ValueError(f"{path}: {key!r} = {doc[key]!r}; expected a list of shares")
        grids.append(tuple(_float(path, key, x) for x in doc[key]))
    shape = (len(grids[0]), len(grids[1]))
    try:
        return HybridSurface(grids[0], grids[1], _table(path, doc, "fid", shape),
                             _table(path, doc, "disc_threshold", shape), metric=str(doc.get("metric", "FID")))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_hybrid_calibration(directory: str | Path) -> tuple[HybridSurface, RouterCurve]:
    """``profiles/<cascade>/``: (the hybrid surface, the router curve) as ``make calibrate`` writes them
    for a cascade with a prompt router."""
    d = Path(directory)
    return load_hybrid_surface(d / HYBRID_SURFACE_JSON), load_router_curve(d / ROUTER_CURVE_CSV)
