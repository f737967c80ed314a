"""``make calibrate`` with a prompt router (export.hybrid_calibration) and the planner's loaders of
its files (planner.hybrid_data), on synthetic arrays: what is written is what the planner and the
live router read back, and it means what it says (shares routed, shares deferred)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from export import hybrid_calibration as hc
from planner.hybrid_data import load_hybrid_calibration, load_hybrid_surface, load_router_curve
from planner.types import HybridSurface, RouterCurve

RNG = np.random.default_rng(3)
N = 200
SCORES = RNG.permutation(N) / N + 0.001  # distinct router scores
CONF = RNG.permutation(N) / (N + 1.0)  # distinct P(real) in [0, 1)


def _images(n=N):
    """light images all 0, heavy images all 1: the mean pixel of the served set is its heavy share."""
    return np.zeros((n, 2, 2, 3), np.float32), np.ones((n, 2, 2, 3), np.float32)


def test_router_curve_threshold_routes_exactly_its_share_at_or_above_it():
    curve = hc.router_curve(SCORES)
    shares, thresholds = zip(*curve)
    assert shares == hc.ROUTER_CURVE_SHARES
    assert all(b <= a for a, b in zip(thresholds, thresholds[1:]))  # non-increasing, as RouterCurve requires
    for r, t in curve:
        assert int(np.sum(SCORES >= t)) == round(r * N)  # >=: the cascade's own comparison
    with pytest.raises(ValueError, match="expected a non-empty 1-D array of finite numbers"):
        hc.router_curve(np.array([0.1, np.nan]))


def test_disc_threshold_defers_its_share_of_the_prompts_the_router_keeps():
    table = hc.disc_thresholds(SCORES, CONF)
    for r, row in zip(hc.ROUTER_SHARES, table):
        kept = ~hc.heavy_mask(SCORES, CONF, r, 0.0)
        assert row == sorted(row)  # non-decreasing in d, as HybridSurface requires
        for d, t in zip(hc.DISC_SHARES, row):
            assert int(np.sum(CONF[kept] < t)) == round(d * kept.sum())  # <: the cascade's deferral
            assert np.array_equal(hc.heavy_mask(SCORES, CONF, r, d), ~kept | (kept & (CONF < t)))


def test_surface_scores_the_served_set_of_each_cell():
    light, heavy = _images()
    surface = hc.hybrid_surface(light, heavy, SCORES, CONF, lambda images: float(images.mean()))
    fid, share = np.array(surface["fid"]), np.array(surface["heavy_share"])
    assert fid.shape == share.shape == (11, 11)
    assert np.allclose(fid, share, atol=0.5 / N + 1e-9)  # the served set's heavy share is r + (1 - r) d
    assert fid[0, 0] == 0.0 and fid[-1, 0] == 1.0 and fid[0, -1] == 1.0


def test_written_files_load_as_the_planners_surface_and_router_curve(tmp_path):
    light, heavy = _images()
    written = hc.calibrate_hybrid(tmp_path, light, heavy, SCORES, CONF, lambda im: 10.0 * (1.0 - im.mean()),
                                  "test metric", {"cascade": "t", "prompts": N})
    assert [p.name for p in written] == ["router_curve.csv", "hybrid_surface.json"]
    surface, curve = load_hybrid_calibration(tmp_path)
    assert isinstance(surface, HybridSurface) and isinstance(curve, RouterCurve)
    assert surface.router_share == hc.ROUTER_SHARES and surface.metric == "test metric"
    assert surface.fid_at(0.0, 0.0) == pytest.approx(10.0) and surface.fid_at(1.0, 0.0) == pytest.approx(0.0)
    assert surface.disc_threshold[2] == tuple(hc.disc_thresholds(SCORES, CONF)[2])
    for r in (0.1, 0.35, 0.5):  # the live router: score >= the curve's threshold
        assert int(np.sum(SCORES >= curve.threshold_for(r))) == round(r * N)
    assert curve.threshold_for(0.0) is None


def test_without_a_quality_metric_only_the_router_curve_is_written(tmp_path, capsys):
    light, heavy = _images()
    written = hc.calibrate_hybrid(tmp_path, light, heavy, SCORES, CONF, None, "no metric named", {})
    assert [p.name for p in written] == ["router_curve.csv"] and "hybrid surface SKIPPED: no metric" in capsys.readouterr().out


def test_loaders_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match=r"hybrid_surface.json: no such file"):
        load_hybrid_surface(tmp_path / "hybrid_surface.json")
    with pytest.raises(ValueError, match=r"router_curve.csv: no such file"):
        load_router_curve(tmp_path / "router_curve.csv")
    bad = tmp_path / "router_curve.csv"
    bad.write_text("routed_share,score_threshold\n0,0.2\n0.5,0.9\n")
    with pytest.raises(ValueError, match=r"router_curve.csv: router curve thresholds .* non-increasing"):
        load_router_curve(bad)
    bad.write_text("share,threshold\n0,1\n")
    with pytest.raises(ValueError, match=r"router_curve.csv: missing column"):
        load_router_curve(bad)
    doc = {"router_share": [0.0, 1.0], "disc_share": [0.0, 1.0], "fid": [[1, 2], [3, 4]],
           "disc_threshold": [[0, 1], [0, 1]]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "fid"}))
    with pytest.raises(ValueError, match=r"s.json: missing key\(s\) \['fid'\]"):
        load_hybrid_surface(path)
    path.write_text(json.dumps({**doc, "fid": [[1, 2]]}))
    with pytest.raises(ValueError, match=r"s.json: 'fid' is not 2 rows of 2 numbers"):
        load_hybrid_surface(path)
    path.write_text(json.dumps({**doc, "disc_threshold": [[1, 0], [0, 1]]}))
    with pytest.raises(ValueError, match=r"s.json: hybrid surface thresholds at router share 0.0"):
        load_hybrid_surface(path)
    path.write_text(json.dumps({**doc, "fid": [[1, "x"], [3, 4]]}))
    with pytest.raises(ValueError, match=r"s.json: fid\[0\]\[1\] = 'x'; expected a number"):
        load_hybrid_surface(path)
