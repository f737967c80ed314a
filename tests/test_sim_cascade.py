"""A new cascade from files alone: python -m benchmarks.sim on a cascade described in a temp dir."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.sim.__main__ import main


def _write_cascade(d):
    """An SDXL-Lightning -> SDXL-like cascade: other model names, SLO 15 s, raw P(fake) scores
    (2 images per prompt), no published f(t) (recomputed from the scores), its own trace."""
    (d / "traces").mkdir(parents=True)
    (d / "profile.json").write_text(json.dumps({"batch_latency_ms": {
        "sdxl_lightning": {"1": 400, "2": 700, "4": 1300, "8": 2500},
        "sdxl": {"1": 6000, "2": 11000, "4": 21000}}}))
    (d / "fid.json").write_text(json.dumps({"fraction_served_by_light": [0.0, 0.5, 1.0], "fid": [20.0, 19.0, 24.0]}))
    rng = np.random.default_rng(0)
    (d / "scores.txt").write_text("\n".join(f"{v:.6f}" for v in rng.beta(4, 1, 400)))  # 200 prompts x 2 images
    arrivals = np.sort(rng.uniform(0, 120_000, 240))  # 2 qps for 2 minutes
    (d / "traces" / "steady.txt").write_text("".join(f"{t:.1f},{rng.integers(0, 200)}\n" for t in arrivals))
    (d / "cascade.json").write_text(json.dumps({
        "name": "sdxl_pair", "slo_ms": 15000, "profile": "profile.json", "quality_curve": "fid.json",
        "confidences": {"file": "scores.txt", "meaning": "p_fake", "images_per_prompt": 2},
        "traces": "traces"}))


def test_a_cascade_described_by_files_in_a_folder_is_simulated_with_no_code_change(tmp_path):
    _write_cascade(tmp_path / "cascade")
    out = tmp_path / "out"
    main(["--only", "paper", "--cascade", str(tmp_path / "cascade"), "--trace", "steady", "--workers", "8",
          "--policies", "clipper-light,clipper-heavy,diffserve,quality,static", "--static-light-batch", "2",
          "--static-heavy-batch", "1", "--out", str(out)])
    doc = json.loads((out / "paper" / "results.json").read_text())
    assert doc["config"]["inputs"]["models"] == ["sdxl_lightning", "sdxl"]
    assert doc["config"]["inputs"]["slo_ms"] == 15000 and doc["config"]["inputs"]["queries"] == 240
    runs = {n: r["summary"] for n, r in doc["policies"].items()}
    assert runs["clipper-light"]["light_share"] == 1.0 and runs["clipper-heavy"]["light_share"] == 0.0
    # 2 qps fits: the planned cascades serve within the 15-s SLO and mix both models
    assert runs["quality"]["violation_ratio"] < 0.01 and 0.0 < runs["quality"]["light_share"] < 1.0
    assert runs["quality"]["p99_latency_ms"] > 5000  # heavy batches of 6+ s: only a 15-s SLO admits them
    assert (out / "paper" / "bars.png").stat().st_size > 0


def test_a_bad_cascade_folder_is_refused_naming_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="no cascade.json and no deferral_curve.csv"):
        main(["--only", "paper", "--cascade", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"--workers|num_workers = 0; expected >= 1"):
        main(["--only", "paper", "--workers", "0", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="trace 'nope': no such file"):
        main(["--only", "paper", "--trace", "nope", "--out", str(tmp_path / "out")])
