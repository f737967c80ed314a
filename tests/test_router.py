"""The prompt router (serving.router) and the hybrid routing evaluation (zoo.hybrid)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from serving.router import TextRouter, featurize, fit_router, load_router, load_router_stage, tokens
from serving.stage import StageSpecError, StaleArtifacts
from zoo import hybrid


def test_features_are_stable_across_processes_and_count_ngrams():
    x = featurize(["a red circle", "A RED circle"], buckets=64, ngrams=2, length_scale=3.0)
    assert np.array_equal(x[0], x[1])  # lower-cased; crc32 buckets, not Python's salted hash
    assert x[0, :64].sum() == 3 + 2 and x[0, 64] == pytest.approx(1.0)
    assert tokens("two red squares, and a circle") == ["two", "red", "squares", ",", "and", "a", "circle"]


def test_a_router_learns_which_words_make_prompts_hard():
    rng = np.random.default_rng(0)
    prompts = [("a red circle and a blue square" if rng.random() < 0.5 else "a red circle") for _ in range(400)]
    fails = np.array(["and" in p for p in prompts]) & (rng.random(400) < 0.9)
    router = fit_router(prompts, fails, buckets=64)
    s = router.score(["a red circle and a blue square", "a red circle"])
    assert s[0] > 0.7 > 0.2 > s[1]


def test_a_saved_router_loads_back_identically_and_bad_artifacts_are_named(tmp_path):
    router = fit_router(["a b", "c d e"], np.array([True, False]), buckets=16, steps=10)
    router.save(tmp_path)
    again = load_router(tmp_path)
    assert np.allclose(again.score(["a b", "x"]), router.score(["a b", "x"]))
    (tmp_path / "router.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="router.json: format 'other'"):
        load_router(tmp_path)
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(17,\)"):
        TextRouter(np.zeros(3), 0.0, buckets=16)


def test_the_router_stage_refuses_artifacts_of_another_config(tmp_path):
    fit_router(["a", "b"], np.array([True, False]), buckets=8, steps=2).save(tmp_path)
    with pytest.raises(StageSpecError, match="stage.json does not exist"):
        load_router_stage(tmp_path)
    (tmp_path / "stage.json").write_text(json.dumps({"format_version": 1, "kind": "discriminator"}))
    with pytest.raises(StageSpecError, match="expected a format-1 router stage"):
        load_router_stage(tmp_path)
    (tmp_path / "stage.json").write_text(json.dumps({"format_version": 1, "kind": "router", "config_hash": "old"}))
    assert load_router_stage(tmp_path, expected_hash="old").buckets == 8
    with pytest.raises(StaleArtifacts, match="re-run `make export`"):
        load_router_stage(tmp_path, expected_hash="new")


def test_hybrid_routes_the_top_router_share_then_defers_the_least_confident_of_the_rest():
    score = np.array([0.9, 0.1, 0.8, 0.2, 0.3])
    conf = np.array([0.5, 0.05, 0.9, 0.01, 0.6])
    # r = 0.4 -> 2 routed (0, 2); d = 0.34 of the other 3 -> 1 deferred: the least confident (3)
    assert hybrid.heavy_mask(score, conf, 0.4, 0.34).tolist() == [True, False, True, True, False]
    assert hybrid.heavy_mask(score, conf, 0.0, 0.4).tolist() == [False, True, False, True, False]
    assert hybrid.split(0.5, 0.2) == pytest.approx(0.375) and hybrid.split(0.3, 0.4) == 0.0
    with pytest.raises(ValueError, match="expected one of each"):
        hybrid.heavy_mask(score, conf[:2], 0.1, 0.1)


def test_hybrid_split_is_chosen_on_calibration_and_can_lose_on_evaluation():
    # calibration: the router is right, the discriminator wrong; evaluation: the other way round.
    light_ok = np.array([False, True, True, True])
    good = {"light_ok": light_ok, "heavy_ok": np.ones(4, bool), "router_score": np.array([1.0, 0, 0, 0]),
            "confidence": np.array([1.0, 0.0, 0.5, 0.5])}
    bad = {**good, "router_score": np.array([0.0, 1, 1, 1]), "confidence": np.array([0.0, 1, 1, 1])}
    out = hybrid.curves(bad, good, rule="within_one_se_largest", shares=[0.25])
    assert out["hybrid_router_share"][0] > 0  # the calibration set says: route
    assert out["discriminator"] == [1.0] and out["hybrid"] == [0.75]  # ... which is worse here
    assert out["hybrid_at_least_the_better_everywhere"] is False


def _flat_surface_set(n: int = 200) -> dict:
    """A calibration set where hybrid's split hardly matters at h = 0.5: the router's top half holds
    every light failure but one, which only the discriminator finds (and one prompt heavy gets wrong)."""
    light_ok = np.ones(n, bool)
    light_ok[: n // 4] = False  # 50 light failures, all in the router's top half ...
    light_ok[n // 2] = False  # ... but one, the least confident image of the rest
    heavy_ok = np.ones(n, bool)
    heavy_ok[n // 2 + 1] = False
    router_score = np.linspace(1.0, 0.0, n)
    confidence = np.full(n, 0.5)
    confidence[n // 2] = 0.0
    return {"light_ok": light_ok, "heavy_ok": heavy_ok, "router_score": router_score, "confidence": confidence}


def test_within_one_standard_error_the_larger_cheaper_router_share_wins():
    s = _flat_surface_set()
    candidates, served_ok = hybrid.served_correct(s, 0.5)
    fidelity = served_ok.mean(axis=1)
    assert candidates[-1] == 0.5 and fidelity[-1] == pytest.approx(0.995) and fidelity.max() == 1.0
    # router-only is one prompt in 200 behind the best split (SE of the best: 0) ...
    assert hybrid.best_router_share(**s, heavy_share=0.5, rule="argmax_smallest") < 0.5
    # ... but add two prompts nobody serves right and the best is 0.990 with a standard error of
    # 0.007: router-only (0.985) is within it, and it is the cheaper choice
    noisy = {k: np.concatenate([v, v[:2]]) for k, v in s.items()}
    noisy["light_ok"][-2:], noisy["heavy_ok"][-2:] = False, False
    assert hybrid.best_router_share(**noisy, heavy_share=0.5) == 0.5
    assert hybrid.best_router_share(**noisy, heavy_share=0.5, rule="argmax_smallest") < 0.5


def test_a_router_share_better_by_more_than_one_standard_error_is_kept():
    from zoo.router_share import within_one_se_largest

    candidates = np.array([0.0, 0.25, 0.5])
    served_ok = np.ones((3, 400), bool)
    served_ok[0, :40] = False  # 0.90
    served_ok[2, :20] = False  # 0.95: 5 points behind the best (1.0, standard error 0)
    assert within_one_se_largest(candidates, served_ok) == 0.25
    served_ok[1, :12] = False  # best 0.97, SE 0.0085: 0.95 is still more than one SE behind
    assert within_one_se_largest(candidates, served_ok) == 0.25
    served_ok[1, :17] = False  # best 0.9575, SE 0.010: 0.95 is within it -> the larger r
    assert within_one_se_largest(candidates, served_ok) == 0.5
    with pytest.raises(ValueError, match=r"served_ok has shape \(3, 0\); expected \(3, N >= 1\)"):
        within_one_se_largest(candidates, served_ok[:, :0])


def test_the_half_split_check_counts_shares_where_the_choice_loses_on_held_out_prompts():
    from zoo.router_share import argmax_smallest, candidate_router_shares, half_split_check

    assert candidate_router_shares(0.12, 0.05).tolist() == [0.0, 0.05, 0.1, 0.12]
    # r = 0.5 is right on every prompt, r = 0 on none: every split picks 0.5, which ties router-only
    candidates = np.array([0.0, 0.5])
    served_ok = np.stack([np.zeros(10, bool), np.ones(10, bool)])
    out = half_split_check([(candidates, served_ok)], argmax_smallest, strata=np.arange(10) >= 5, n_splits=3)
    assert out == {"n_splits": 3, "shares_behind_per_split": 0.0, "shares_strictly_ahead_per_split": 0.0,
                   "mean_margin_over_better_baseline": 0.0}


def test_the_router_share_rule_is_the_one_less_often_behind_on_calibration_half_splits():
    from zoo.router_share import RULE, choose_rule

    def check(behind, margin):
        return {"shares_behind_per_split": behind, "mean_margin_over_better_baseline": margin}

    assert choose_rule({"within_one_se_largest": check(16.0, -0.01), "argmax_smallest": check(2.9, 0.002)}) \
        == "argmax_smallest"
    assert choose_rule({"within_one_se_largest": check(0.74, 0.0008), "argmax_smallest": check(5.1, -0.0007)}) \
        == "within_one_se_largest"
    tie = {"argmax_smallest": check(1.0, 0.001), "within_one_se_largest": check(1.0, 0.001)}
    assert choose_rule(tie) == RULE  # the cheaper split when the check cannot tell them apart
    with pytest.raises(ValueError, match="median"):
        choose_rule({"median": check(0.0, 0.0)})


def test_hybrid_runs_the_rule_its_own_calibration_half_splits_chose():
    from zoo.router_share import choose_rule

    rng = np.random.default_rng(3)
    cal = {"light_ok": rng.random(300) < 0.6, "heavy_ok": rng.random(300) < 0.8, "router_score": rng.random(300),
           "confidence": rng.random(300)}
    cal["router_score"][~cal["light_ok"]] += 0.3  # a router that knows something
    result = hybrid.routing_result(cal, cal)
    sel = result["router_share_selection"]
    assert sel["rule"] == choose_rule({name: sel[name]["half_split"] for name in hybrid.RULES})
    assert result["hybrid_router_share"] == [
        hybrid.best_router_share(**cal, heavy_share=h, rule=sel["rule"]) for h in result["heavy_share"]]
