"""planner.data loaders (the paper's artifact files and this project's schema) and type validation."""
from __future__ import annotations

import json
import math

import pytest

from planner import Allocation, DeferralCurve, Instance, ModelProfile, QualityCurve, data

def test_paper_profiles_are_the_a100_rows():
    light, heavy = data.load_paper_profiles()
    assert (light.name, heavy.name) == ("sdturbo", "sdv15")
    assert light.batch_sizes == (1, 2, 4, 8, 16, 32)
    assert light.latency_ms(1) == 100 and light.latency_ms(32) == 1560
    assert heavy.latency_ms(4) == 3680 and heavy.latency_ms(32) == 25350
    assert heavy.throughput_qps(4) == pytest.approx(4 / 3.68)


def test_paper_curves_load_with_their_shape():
    f = data.load_deferral_curve()
    assert f.f(0.0) == 0.0 and f.f(0.05) == pytest.approx(0.36) and f.f(1.0) == 1.0
    q = data.load_quality_curve()
    assert q.fid_at(0.4) == pytest.approx(16.79) and q.fid_at(0.0) == pytest.approx(18.55)
    assert min(q.fid) == q.fid_at(0.4)  # the U: 40 % light beats all heavy


def test_paper_confidences_give_an_empirical_deferral_curve():
    c = data.load_confidences()
    assert len(c.content_id) == 5000 and (c.light_name, c.heavy_name) == ("sdturbo", "sdv15")
    assert 0.0 <= c.deferral_fraction(0.5) <= 1.0
    assert c.deferral_fraction(0.0) == 0.0 and c.deferral_fraction(1.01) == 1.0


def test_project_calibration_files_round_trip(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "cpu.json").write_text(
        json.dumps({"device": "cpu", "batch_latency_ms": {"light": {"1": 10.0, "4": 25.0}, "heavy": {"1": 90.0}}})
    )
    (d / "deferral_curve.csv").write_text(",t,f_t\n0,0.0,0.0\n1,0.5,0.4\n2,1.0,1.0\n")
    (d / "quality_curve.json").write_text(json.dumps({"fraction_served_by_light": [0.0, 1.0], "fid": [30.0, 40.0]}))
    models, f, q = data.load_calibration(d, "cpu")
    assert [m.name for m in models] == ["light", "heavy"]
    assert models[0].batch_latency_ms == {1: 10.0, 4: 25.0} and models[1].quality_rank == 1
    assert f.f(0.25) == pytest.approx(0.2)
    assert q.fid_at(0.5) == pytest.approx(35.0)


def test_loaders_name_the_file_and_the_bad_value(tmp_path):
    bad = tmp_path / "prof.csv"
    bad.write_text(",Model,Accel,batchsize,avg_runtime\n0,sdturbo,onnxruntime_gpu_ampere,1,fast\n")
    with pytest.raises(ValueError, match=r"prof\.csv.*'fast'.*number"):
        data.load_paper_profiles(bad)
    with pytest.raises(ValueError, match=r"no rows for model 'sdv15'"):
        bad.write_text(",Model,Accel,batchsize,avg_runtime\n0,sdturbo,onnxruntime_gpu_ampere,1,100\n")
        data.load_paper_profiles(bad)
    curve = tmp_path / "f.csv"
    curve.write_text("t,fraction\n0,0\n")
    with pytest.raises(ValueError, match=r"f\.csv.*missing column.*f_t"):
        data.load_deferral_curve(curve)
    with pytest.raises(ValueError, match="no such file"):
        data.load_quality_curve(tmp_path / "missing.json")
    prof = tmp_path / "dev.json"
    prof.write_text(json.dumps({"batch_latency_ms": {"light": {"one": 3}, "heavy": {"1": 5}}}))
    with pytest.raises(ValueError, match=r"batch size 'one'"):
        data.load_project_profiles(prof)


def test_types_reject_bad_values_naming_them():
    with pytest.raises(ValueError, match=r"batch 0 latency"):
        ModelProfile("m", {0: 10.0})
    with pytest.raises(ValueError, match=r"latency -1"):
        ModelProfile("m", {1: -1})
    with pytest.raises(ValueError, match="non-decreasing"):
        DeferralCurve((0.0, 0.5, 1.0), (0.0, 0.6, 0.5))
    with pytest.raises(ValueError, match=r"f\(1.0\) = 1.5"):
        DeferralCurve((0.0, 1.0), (0.0, 1.5))
    with pytest.raises(ValueError, match="strictly increasing"):
        QualityCurve((0.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError, match=r"workers\['a'\] = -1"):
        Allocation(workers={"a": -1}, batch_size={})
    light, heavy = ModelProfile("l", {1: 1.0}), ModelProfile("h", {1: 2.0}, 1)
    curves = dict(deferral=DeferralCurve((0.0, 1.0), (0.0, 1.0)), quality=QualityCurve((0.0, 1.0), (1.0, 2.0)))
    with pytest.raises(ValueError, match="demand_qps.*-1"):
        Instance(models=(light, heavy), demand_qps=-1, slo_ms=10, num_workers=1, **curves)
    with pytest.raises(ValueError, match="demand_qps.*nan"):
        Instance(models=(light, heavy), demand_qps=math.nan, slo_ms=10, num_workers=1, **curves)
    with pytest.raises(ValueError, match="num_workers.*0"):
        Instance(models=(light, heavy), demand_qps=1, slo_ms=10, num_workers=0, **curves)
    with pytest.raises(ValueError, match="unique"):
        Instance(models=(light, light), demand_qps=1, slo_ms=10, num_workers=1, **curves)
    with pytest.raises(ValueError, match=r"queue_delay_ms\['h'\] = -5"):
        Instance(models=(light, heavy), demand_qps=1, slo_ms=10, num_workers=1, queue_delay_ms={"h": -5}, **curves)
    with pytest.raises(ValueError, match="light model before the heavy"):
        Instance(models=(light, heavy), demand_qps=1, slo_ms=10, num_workers=1,
                 pair_curves={("h", "l"): (curves["deferral"], curves["quality"])}, **curves)
