"""The synthetic domain, its tokenizer and the small pure helpers of the tiny cascade."""
from __future__ import annotations

import numpy as np
import pytest

from zoo import domain
from zoo.metrics import fid
from zoo.tokenizer import MAX_LENGTH_TOKENS, build_tokenizer
from zoo.train_discriminator import roc_auc


def test_same_seed_gives_identical_images_and_captions():
    a = domain.sample_batch(np.random.default_rng(7), 32)
    b = domain.sample_batch(np.random.default_rng(7), 32)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_every_sampled_caption_parses_back_to_its_scene():
    _, captions, scenes = domain.sample_batch(np.random.default_rng(0), 500)
    for cap, scene in zip(captions, scenes):
        assert domain.parse_caption(cap) == scene


def test_difficulty_is_easy_for_one_object_and_hard_for_several():
    assert domain.difficulty_of("a large red circle on a gray background") == "easy"
    assert domain.difficulty_of("a red circle left of a blue square on a white background") == "hard"
    assert domain.difficulty_of("two green triangles and a red square on a black background") == "hard"


def test_relation_word_decides_the_slot_order():
    left = domain.parse_caption("a red circle left of a blue square on a white background")
    right = domain.parse_caption("a red circle right of a blue square on a white background")
    assert left.objects == (("red", "circle"), ("blue", "square"))
    assert right.objects == (("blue", "square"), ("red", "circle"))
    assert left.object_counts() == right.object_counts()


def test_caption_outside_the_grammar_is_rejected_with_the_caption_named():
    with pytest.raises(ValueError, match="purple elephant"):
        domain.parse_caption("a purple elephant on a gray background")


def test_bad_difficulty_and_share_are_rejected():
    with pytest.raises(ValueError, match="medium"):
        domain.sample_scene(np.random.default_rng(0), "medium")
    with pytest.raises(ValueError, match="1.5"):
        domain.sample_batch(np.random.default_rng(0), 4, hard_share=1.5)


def test_render_draws_the_object_colour_on_the_background():
    scene = domain.parse_caption("a large red square on a black background")
    img = domain.render(scene, np.random.default_rng(0)).astype(int)
    assert img.shape == (32, 32, 3) and img.dtype == np.int64
    assert img[16, 16, 0] > 180 and img[16, 16, 2] < 80  # centre is red
    assert img[1, 1].max() < 40  # corner is background


def test_eval_prompts_are_half_easy_then_half_hard():
    prompts = domain.eval_prompts(seed=1, n_per_difficulty=20)
    diffs = [domain.difficulty_of(p) for p in prompts]
    assert diffs == ["easy"] * 20 + ["hard"] * 20


def test_every_domain_word_is_a_single_token_and_captions_fit_the_max_length():
    tok = build_tokenizer()
    for w in domain.vocabulary():
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    long_caption = "a red circle, a blue square and a green triangle on a white background"
    assert len(tok(long_caption).input_ids) <= MAX_LENGTH_TOKENS


def test_fid_is_zero_for_identical_sets_and_grows_with_a_mean_shift():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)
    assert fid(x, x + 1.0) == pytest.approx(8.0, rel=0.05)


def test_fid_rejects_mismatched_feature_widths():
    with pytest.raises(ValueError, match="same D"):
        fid(np.zeros((4, 3)), np.zeros((4, 5)))


def test_roc_auc_of_perfect_random_and_inverted_scores():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.array([0.1, 0.2]), np.array([1, 1]))
