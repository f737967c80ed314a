"""planner.data.load_cascade: the one cascade description (the paper's committed data and this
project's profiles/<cascade>/), and the paper's confidence semantics (P(fake), deferred when
1 - P(fake) < t)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from planner import data

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "benchmarks" / "data" / "diffserve"


def _paper_csv_p_fake() -> dict[int, float]:
    with (PAPER / data.PAPER_CONFIDENCE_CSV).open() as fh:
        return {int(r["content_id"]): float(r["sdturbo"]) for r in csv.DictReader(fh)}


def test_the_paper_data_is_committed_with_the_project_and_is_the_default():
    assert data.ARTIFACT_DIR.resolve() == PAPER.resolve()
    cascade = data.load_cascade(PAPER)
    assert [m.name for m in cascade.models] == ["sdturbo", "sdv15"] and cascade.slo_ms == 5000.0
    assert len(cascade.confidences.content_id) == 5000 and cascade.traces_dir.is_dir()


def test_deferral_curve_recomputed_from_the_raw_scores_matches_the_published_curve_within_0_001():
    cascade = data.load_cascade(PAPER)
    published = data.load_deferral_curve(PAPER / data.PAPER_DEFERRAL_CSV)
    worst = max(abs(cascade.confidences.deferral_fraction(t) - f)
                for t, f in zip(published.thresholds, published.deferral_fraction))
    assert worst <= 0.001
    # The planner's curve is that recomputation on a 0.01 grid, so it also agrees at the published points.
    assert cascade.deferral.thresholds[:3] == (0.0, 0.01, 0.02)
    assert max(abs(cascade.deferral.f(t) - published.f(t)) for t in published.thresholds) <= 0.001


def test_the_per_prompt_csv_is_the_mean_of_the_four_raw_p_fake_scores():
    raw = np.loadtxt(PAPER / data.PAPER_SCORES).reshape(5000, 4).mean(axis=1)
    p_fake = _paper_csv_p_fake()
    ids = np.array(sorted(p_fake))
    assert np.abs(np.array([p_fake[i] for i in ids]) - raw[ids - 1]).max() <= 5e-4  # the CSV keeps 3 digits


def test_prompts_deferred_first_are_those_the_discriminator_finds_most_fake():
    conf = data.load_cascade(PAPER).confidences
    p_fake = _paper_csv_p_fake()
    for t in (0.02, 0.05, 0.3):
        deferred = set(conf.content_id[conf.confidence < t].tolist())
        # deferred <=> 1 - P(fake) < t <=> P(fake) > 1 - t (prompts within the CSV's rounding of the edge aside)
        clear = [i for i, v in p_fake.items() if abs(v - (1 - t)) > 5e-4]
        assert all((i in deferred) == (p_fake[i] > 1 - t) for i in clear)
        assert 0 < len(deferred) < len(p_fake)


def test_project_profiles_directory_is_a_cascade_with_its_own_confidences():
    cascade = data.load_cascade(ROOT / "profiles" / "tiny", slo_ms=5000)
    assert [m.name for m in cascade.models] == ["light", "heavy"]
    assert cascade.confidences.source.endswith("P(real)")
    # calibration wrote f(t) from the same confidences: they agree point by point
    for t, f in zip(cascade.deferral.thresholds, cascade.deferral.deferral_fraction):
        assert cascade.confidences.deferral_fraction(t) == pytest.approx(f, abs=1e-6)
    with pytest.raises(ValueError, match="has no SLO; pass slo_ms"):
        data.load_cascade(ROOT / "profiles" / "tiny")


def _manifest(tmp_path, **doc):
    (tmp_path / "q.json").write_text(json.dumps({"fraction_served_by_light": [0, 1], "fid": [10, 20]}))
    (tmp_path / "p.json").write_text(json.dumps({"batch_latency_ms": {"a": {"1": 5}, "b": {"1": 50}}}))
    (tmp_path / "c.csv").write_text("content_id,a,b\n0,0.9,0.5\n1,0.2,0.5\n")
    base = {"slo_ms": 15000, "profile": "p.json", "quality_curve": "q.json",
            "confidences": {"file": "c.csv", "meaning": "p_real"}}
    base.update(doc)
    (tmp_path / "cascade.json").write_text(json.dumps({k: v for k, v in base.items() if v is not None}))
    return tmp_path


def test_manifest_without_a_curve_file_derives_f_from_the_confidences(tmp_path):
    cascade = data.load_cascade(_manifest(tmp_path))
    assert cascade.deferral.f(0.5) == 0.5 and cascade.deferral.f(1.0) == 1.0 and cascade.slo_ms == 15000
    fake = data.load_cascade(_manifest(tmp_path, confidences={"file": "c.csv", "meaning": "p_fake"}))
    assert fake.confidences.confidence.tolist() == pytest.approx([0.1, 0.8])


def test_manifest_mistakes_are_reported_naming_the_key_or_value(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['slo'\]"):
        data.load_cascade(_manifest(tmp_path, slo=3))
    with pytest.raises(ValueError, match=r"confidence meaning 'p_good'; expected one of"):
        data.load_cascade(_manifest(tmp_path, confidences={"file": "c.csv", "meaning": "p_good"}))
    with pytest.raises(ValueError, match="no slo_ms"):
        data.load_cascade(_manifest(tmp_path, slo_ms=None))
    with pytest.raises(ValueError, match=r"slo_ms = -1"):
        data.load_cascade(_manifest(tmp_path), slo_ms=-1)
    with pytest.raises(ValueError, match="no cascade.json and no deferral_curve.csv"):
        data.load_cascade(tmp_path / "nothing")
    conf = data.load_cascade(_manifest(tmp_path)).confidences
    with pytest.raises(ValueError, match="prompt id 7 has no confidence in c.csv"):
        conf.lookup(np.array([0, 7]))


def test_the_tiny_calibration_records_each_prompts_router_score_consistent_with_its_router_curve():
    """confidences.csv's router column and router_curve.csv come from the same scores: at share r
    the prompts at or above the curve's threshold are round(r N), up to prompts tied at it."""
    from planner.hybrid_data import load_router_curve  # noqa: PLC0415

    scores = data.load_cascade(ROOT / "profiles" / "tiny", slo_ms=5000).confidences.router_score
    curve = load_router_curve(ROOT / "profiles" / "tiny" / "router_curve.csv")
    for share, threshold in zip(curve.routed_share, curve.score_threshold):
        assert np.sum(scores > threshold) <= round(share * len(scores)) <= np.sum(scores >= threshold)
    assert np.sum(scores >= curve.score_threshold[0]) == 0  # share 0 routes none


def test_a_router_column_is_read_as_router_scores_and_the_paper_reader_accepts_it(tmp_path):
    path = tmp_path / "confidences.csv"
    path.write_text("content_id,light,heavy,router\n1,0.9,0.5,0.25\n0,0.2,0.5,0.75\n")
    conf = data.load_prompt_confidences(path, "p_real")
    assert conf.confidence.tolist() == [0.2, 0.9] and conf.router_score.tolist() == [0.75, 0.25]  # sorted by id
    assert (data.load_confidences(path).light_name, data.load_confidences(path).heavy_name) == ("light", "heavy")
    path.write_text("content_id,light,heavy,extra\n0,0.2,0.5,0.75\n")
    with pytest.raises(ValueError, match=r"expected content_id,<light>,<heavy>\[,router\]"):
        data.load_confidences(path)
    assert data.load_prompt_confidences(path, "p_real").router_score is None  # no router column: no scores
