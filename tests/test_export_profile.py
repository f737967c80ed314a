"""make profile / make calibrate: the planner reads what they write; the curve math is right."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from export.calibrate import THRESHOLDS, calibrate_cascade, deferral_curve, quality_curve, served_by_light, threshold_grid
from serving.config import CalibrationConfig, load_cascade
from export.profile import profile_cascade
from planner.data import load_deferral_curve, load_project_profiles, load_quality_curve


def test_deferral_curve_counts_confidences_strictly_below_t():
    conf = np.array([0.1, 0.2, 0.2, 0.9])
    assert deferral_curve(conf, (0.0, 0.2, 0.21, 1.0)) == [(0.0, 0.0), (0.2, 0.25), (0.21, 0.75), (1.0, 1.0)]
    with pytest.raises(ValueError, match="non-empty 1-D"):
        deferral_curve(np.array([]))


def test_threshold_grid_keeps_deferral_steps_small_when_confidences_crowd_near_zero():
    rng = np.random.default_rng(0)
    conf = np.concatenate([rng.uniform(0, 0.01, 800), rng.uniform(0.01, 1, 200)])
    grid = threshold_grid(conf)
    assert set(THRESHOLDS) <= set(grid) and list(grid) == sorted(set(grid))
    f = [v for _, v in deferral_curve(conf, grid)]
    assert max(b - a for a, b in zip(f, f[1:])) <= 0.06  # the paper's grid alone: 0 -> 0.8 at t = 0.05
    coarse = [v for _, v in deferral_curve(conf)]
    assert coarse[1] >= 0.8  # what the paper's grid alone gives at t = 0.05
    with pytest.raises(ValueError, match="max_step = 0"):
        threshold_grid(conf, max_step=0)


def test_query_aware_routing_keeps_the_most_confident_on_light():
    conf = np.array([0.9, 0.1, 0.5, 0.7])
    assert served_by_light(conf, 0.5).tolist() == [True, False, False, True]
    assert served_by_light(conf, 0.0).sum() == 0 and served_by_light(conf, 1.0).all()
    with pytest.raises(ValueError, match="light_fraction=1.5"):
        served_by_light(conf, 1.5)


def test_quality_curve_scores_the_mixed_responses():
    light = np.zeros((4, 2, 2, 3), np.uint8)
    heavy = np.full((4, 2, 2, 3), 10, np.uint8)
    conf = np.array([0.9, 0.1, 0.5, 0.7])
    mean_pixel = quality_curve(light, heavy, conf, lambda im: float(im.mean()), fractions=(0.0, 0.5, 1.0))
    assert mean_pixel == [10.0, 5.0, 0.0]


def test_profile_and_calibration_files_load_in_the_planner(tiny_exported, tmp_path):
    cfg_path, repo = tiny_exported("sd")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"a red circle number {i}" for i in range(20)))
    cascade = dataclasses.replace(load_cascade(cfg_path), calibration=CalibrationConfig(str(prompts), 8, 1))
    path = profile_cascade(cascade, repo, batch_sizes=(1, 2), repeats=1, out_dir=tmp_path)
    doc = json.loads(path.read_text())
    light, heavy = load_project_profiles(path)
    assert (light.name, heavy.name) == ("light", "heavy") and light.batch_sizes == (1, 2)
    assert doc["batch_latency_ms"]["light"]["1"] > doc["stages"]["light"]["latency_ms"]["1"]["median"]  # + discriminator
    assert doc["backends"]["heavy"]["unet"] == "onnxruntime"
    written = calibrate_cascade(cascade, repo, count=8, out_dir=tmp_path)
    names = {p.name for p in written}
    assert {"deferral_curve.csv", "confidences.csv", "calibration.json"} <= names
    curve = load_deferral_curve(tmp_path / "deferral_curve.csv")
    assert curve.f(0.0) == 0.0 and curve.f(1.0) == 1.0
    rows = list(csv.DictReader((tmp_path / "confidences.csv").open()))
    assert len(rows) == 8 and all(0 < float(r["light"]) < 1 for r in rows)
    assert list(rows[0]) == ["content_id", "light", "heavy"]  # no router in the repository: no router column
    if "quality_curve.json" in names:  # only with a quality metric for this prompt source
        load_quality_curve(tmp_path / "quality_curve.json")
    else:
        assert json.loads((tmp_path / "calibration.json").read_text())["quality_curve"].startswith("skipped")


def test_calibration_with_a_router_in_the_repository_writes_its_curve_and_the_surface(tiny_exported, tmp_path,
                                                                                       monkeypatch):
    """The exported stages plus a router (artifacts tied to the config hash): calibrate scores the
    same prompts with it and writes a router curve the planner loads; the 2-D surface needs a
    quality metric (skipped without one; here the mean pixel stands in for FID)."""
    import export.calibrate as calibrate  # noqa: PLC0415
    from export import repository  # noqa: PLC0415
    from planner.hybrid_data import load_hybrid_calibration  # noqa: PLC0415
    from export.calibrate import held_apart_prompts  # noqa: PLC0415
    from planner.data import load_prompt_confidences  # noqa: PLC0415
    from serving.router import fit_router, load_router_stage  # noqa: PLC0415

    cfg_path, exported = tiny_exported("sd")
    repo = tmp_path / "repo"
    for stage in ("light", "heavy", "discriminator"):  # the session's export, untouched
        (repo / stage).mkdir(parents=True)
        (repo / stage / "1").symlink_to(exported / stage / "1")
    texts = [f"a red circle number {i}" for i in range(20)]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(texts))
    cascade = dataclasses.replace(load_cascade(cfg_path), calibration=CalibrationConfig(str(prompts), 8, 1))
    router_dir = repository.artifact_dir(repo, "router")
    fit_router(texts, np.arange(20) % 2 == 0, buckets=32).save(router_dir)
    repository.write_stage_json(router_dir, {"stage": "router", "kind": "router", "config_hash": cascade.config_hash})
    names = {p.name for p in calibrate_cascade(cascade, repo, count=8, out_dir=tmp_path / "plain")}
    assert "router_curve.csv" in names and "hybrid_surface.json" not in names  # no quality metric: no surface
    monkeypatch.setattr(calibrate, "_quality_scorer", lambda cascade, prompts: (lambda im: float(np.mean(im)), "mean"))
    names = {p.name for p in calibrate_cascade(cascade, repo, count=8, out_dir=tmp_path / "out")}
    assert {"router_curve.csv", "hybrid_surface.json"} <= names
    surface, curve = load_hybrid_calibration(tmp_path / "out")
    assert surface.metric == "mean" and curve.routed_share[-1] == 1.0
    # each prompt's router score, beside its confidences, exactly as the router scores it
    conf = load_prompt_confidences(tmp_path / "out" / "confidences.csv", "p_real")
    calibrated = held_apart_prompts(cascade, 8)
    assert conf.router_score.tolist() == load_router_stage(router_dir).score(calibrated).astype(float).tolist()
    assert curve.routed_share[0] == 0.0 and not any(conf.router_score >= curve.score_threshold[0])  # share 0: none
    assert surface.fid[-1] == (surface.fid[-1][0],) * len(surface.disc_share)  # all routed: d changes nothing
