"""``make demo``'s router option: which prompts go straight to heavy, and a bad share refused."""
from __future__ import annotations

import json

import numpy as np

from benchmarks import demo
from serving.router import fit_router


def test_router_split_sends_the_top_share_of_router_scores_straight_to_heavy(tmp_path):
    art = tmp_path / "router" / "1" / "artifacts"
    art.mkdir(parents=True)
    prompts = [f"crowded scene {i}" for i in range(20)] + [f"plain thing {i}" for i in range(20)]
    fit_router(prompts, np.array([True] * 20 + [False] * 20), buckets=64).save(art)
    (art / "stage.json").write_text(json.dumps({"format_version": 1, "kind": "router", "stage": "router"}))
    asked = ["crowded scene 1", "plain thing 1", "crowded scene 2", "plain thing 2"]
    routed, threshold = demo.router_split(tmp_path, asked, 0.5)
    assert routed.tolist() == [True, False, True, False] and np.isfinite(threshold)
    assert demo.router_split(tmp_path, asked, 1.0)[0].all()


def test_a_router_share_outside_zero_to_one_is_refused_before_anything_starts(capsys, tmp_path):
    for share in ("0", "1.5", "nan"):
        assert demo.main(["--router-share", share, "--model-repository", str(tmp_path)]) == 2
        assert "--router-share" in capsys.readouterr().err
