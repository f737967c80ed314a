"""The synthetic domain (v2: free positions, sizes, relations shown, split by composition), its
tokenizer and the small pure helpers of the tiny cascade."""
from __future__ import annotations

import numpy as np
import pytest

from zoo import domain
from zoo.metrics import fid
from zoo.tokenizer import MAX_LENGTH_TOKENS, build_tokenizer
from zoo.train_discriminator import roc_auc

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _along_across(relation: str, a_xy, b_xy) -> tuple[float, float]:
    """Offset of b from a along the relation's axis (positive: a is on the stated side) and across it.
    Written out here, independently of the domain's and the judge's own geometry (y grows downwards)."""
    dx, dy = b_xy[0] - a_xy[0], b_xy[1] - a_xy[1]
    return {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]


def _pair(relation: str, first=("red", "circle", "small"), second=("blue", "square", "large")) -> domain.Scene:
    return domain.Scene("black", (first, second), relation)


def _colour_centroid(image: np.ndarray, colour: str) -> tuple[float, float]:
    """Centre (x, y) in pixels of the pixels close to ``colour`` (jitter is +-8 per channel)."""
    dist = np.abs(image.astype(int) - np.array(domain.COLORS[colour])).max(axis=-1)
    ys, xs = np.nonzero(dist <= 30)
    assert len(xs) >= 10, f"fewer than 10 {colour} pixels in the render"
    return float(xs.mean() + 0.5), float(ys.mean() + 0.5)


def test_same_seed_gives_identical_images_and_captions():
    a = domain.sample_batch(np.random.default_rng(7), 32)
    b = domain.sample_batch(np.random.default_rng(7), 32)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


@pytest.mark.parametrize("split", list(domain.SPLITS))
def test_every_sampled_caption_parses_back_to_its_scene(split):
    _, captions, scenes = domain.sample_batch(np.random.default_rng(0), 300, split=split)
    for cap, scene in zip(captions, scenes):
        assert domain.parse_caption(cap) == scene
        assert domain.caption_of(scene) == cap


def test_hard_prompts_include_every_kind_of_the_grammar():
    rng = np.random.default_rng(1)
    scenes = [domain.sample_scene(rng, "hard")[1] for _ in range(300)]
    assert any(s.relation is not None for s in scenes)  # pair with a relation
    assert any(s.relation is None and len(set(s.objects)) == 1 for s in scenes)  # "two/three ..."
    assert any(s.relation is None and len(set(s.objects)) > 1 for s in scenes)  # list of three


def test_difficulty_is_easy_for_one_object_and_hard_for_several():
    assert domain.difficulty_of("a large red circle on a gray background") == "easy"
    assert domain.difficulty_of("a small red circle left of a large blue square on a white background") == "hard"
    assert domain.difficulty_of("two small green triangles on a black background") == "hard"
    assert domain.difficulty_of(
        "a small red circle, a large blue diamond and a small purple square on a gray background") == "hard"


def test_parse_keeps_caption_order_and_the_relation_word():
    scene = domain.parse_caption("a small red circle right of a large blue square on a white background")
    assert scene.objects == (("red", "circle", "small"), ("blue", "square", "large"))
    assert scene.relation == "right of" and scene.background == "white"


@pytest.mark.parametrize("relation", domain.RELATIONS)
def test_placed_positions_show_the_stated_relation_for_many_seeds(relation):
    scene = _pair(relation)
    for seed in range(200):
        a, b = domain.place(scene, np.random.default_rng(seed))
        along, across = _along_across(relation, a, b)
        assert along > 0 and abs(across) * 2 <= along, (seed, a, b)


@pytest.mark.parametrize("relation", domain.RELATIONS)
def test_rendered_pictures_show_the_stated_relation(relation):
    # Measured on the pixels, not on place()'s return value: what a viewer (or the judge) sees.
    scene = _pair(relation, ("red", "triangle", "small"), ("yellow", "diamond", "large"))
    for seed in range(40):
        image = domain.render(scene, np.random.default_rng(seed))
        along, across = _along_across(relation, _colour_centroid(image, "red"), _colour_centroid(image, "yellow"))
        assert along > abs(across), (seed, along, across)


def test_placed_objects_are_inside_the_image_and_apart():
    scene = domain.Scene("gray", (("red", "circle", "large"), ("blue", "square", "large"), ("green", "diamond", "small")))
    for seed in range(100):
        pos = domain.place(scene, np.random.default_rng(seed))
        sizes = [domain.SIZES_PX[z] for _, _, z in scene.objects]
        for (x, y), size in zip(pos, sizes):
            assert size / 2 <= x <= domain.IMAGE_SIZE_PX - size / 2 and size / 2 <= y <= domain.IMAGE_SIZE_PX - size / 2
        for i in range(len(pos)):
            for j in range(i):
                gap = max(abs(pos[i][0] - pos[j][0]), abs(pos[i][1] - pos[j][1])) - (sizes[i] + sizes[j]) / 2
                assert gap >= 1.0, (seed, pos)


def test_free_positions_differ_between_draws_of_the_same_caption():
    scene = domain.parse_caption("a small green diamond above a large purple circle on a black background")
    draws = [domain.place(scene, np.random.default_rng(seed)) for seed in range(50)]
    assert len(set(draws)) == 50
    xs = np.array([d[0][0] for d in draws])
    assert xs.max() - xs.min() > domain.IMAGE_SIZE_PX / 2  # spread over the picture, not jitter around a slot
    images = [domain.render(scene, np.random.default_rng(seed)) for seed in range(2)]
    assert not np.array_equal(*images)


@pytest.mark.parametrize("split", list(domain.SPLITS))
def test_sample_scene_returns_only_compositions_of_the_requested_split(split):
    rng = np.random.default_rng(5)
    for difficulty in domain.DIFFICULTIES:
        for _ in range(200):
            _, scene = domain.sample_scene(rng, difficulty, split)
            assert domain.split_of(scene) == split
    assert all(domain.split_of(domain.parse_caption(p)) == split for p in domain.eval_prompts(3, 50, split=split))


def _caption_of_key(key: str) -> str:
    _, axis, first, second = key.split("|")
    rel = "left of" if axis == "h" else "above"
    return f"a small {first} {rel} a large {second} on a gray background"


def test_split_shares_of_composition_keys_are_roughly_seventy_ten_twenty():
    # Every pair composition (kinds ordered by the relation's axis): 20 x 19 ordered kinds x 2 axes.
    kinds = [f"{c} {s}" for c, s in domain.KINDS]
    keys = [f"pair|{axis}|{a}|{b}" for axis in "hv" for a in kinds for b in kinds if a != b]
    u = [domain.split_of(domain.parse_caption(_caption_of_key(k))) for k in keys]
    shares = {s: u.count(s) / len(u) for s in domain.SPLITS}
    expected = {"train": 0.7, "select": 0.1, "eval": 0.2}  # 760 keys: +-0.05 is over 3 binomial SDs
    assert all(abs(shares[s] - expected[s]) < 0.05 for s in expected), shares


def test_train_select_and_eval_composition_keys_are_disjoint():
    rng = np.random.default_rng(11)
    keys = {s: {domain.composition_key(domain.sample_scene(rng, d, s)[1]) for d in domain.DIFFICULTIES for _ in range(400)}
            for s in domain.SPLITS}
    assert all(keys.values())
    assert not keys["train"] & keys["select"] and not keys["train"] & keys["eval"] and not keys["select"] & keys["eval"]


def test_no_evaluation_caption_nor_its_mirror_occurs_in_the_training_stream():
    _, train_captions, _ = domain.sample_batch(np.random.default_rng(0), 5000)  # the default split is train
    train = set(train_captions)
    eval_scenes = [domain.parse_caption(p) for p in domain.eval_prompts(2024, 300)]
    mirrors = [domain.caption_of(domain.Scene(s.background, s.objects[::-1], OPPOSITE[s.relation]))
               for s in eval_scenes if s.relation is not None]
    assert mirrors and not (set(map(domain.caption_of, eval_scenes)) | set(mirrors)) & train


@pytest.mark.parametrize("relation", domain.RELATIONS)
def test_mirrored_captions_share_a_composition_key(relation):
    a, b = ("red", "circle", "small"), ("blue", "square", "large")
    scene = domain.Scene("white", (a, b), relation)
    mirror = domain.Scene("black", (b, a), OPPOSITE[relation])
    assert domain.composition_key(scene) == domain.composition_key(mirror)
    assert domain.split_of(scene) == domain.split_of(mirror)
    # the flipped relation with the same order is another composition, and so is the other axis
    assert domain.composition_key(domain.Scene("white", (a, b), OPPOSITE[relation])) != domain.composition_key(scene)
    other_axis = {"left of": "above", "right of": "below", "above": "left of", "below": "right of"}[relation]
    assert domain.composition_key(domain.Scene("white", (a, b), other_axis)) != domain.composition_key(scene)


def test_composition_key_of_several_objects_ignores_sizes_and_background():
    base = domain.parse_caption("a small red circle, a large blue square and a small green diamond on a gray background")
    other = domain.parse_caption("a large green diamond, a small red circle and a large blue square on a white background")
    assert domain.composition_key(base) == domain.composition_key(other)


@pytest.mark.parametrize("caption", [
    "a purple elephant on a gray background",  # unknown shape
    "a red circle on a gray background",  # size word missing
    "a small red circle left of a large red circle on a white background",  # relation between one kind
    "a small red circle, a small red circle and a small red circle on a gray background",  # a count, said as a list
    "a small red circle near a small blue square on a gray background",  # unknown relation
])
def test_caption_outside_the_grammar_is_rejected_with_the_caption_named(caption):
    with pytest.raises(ValueError, match=caption.split(" on ")[0]):
        domain.parse_caption(caption)


def test_bad_split_difficulty_and_share_are_rejected_naming_the_value():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="medium"):
        domain.sample_scene(rng, "medium")
    with pytest.raises(ValueError, match="'test'"):
        domain.sample_scene(rng, "easy", split="test")
    with pytest.raises(ValueError, match="validation"):
        domain.eval_prompts(1, 2, split="validation")
    with pytest.raises(ValueError, match="1.5"):
        domain.sample_batch(rng, 4, hard_share=1.5)


def test_render_draws_the_object_colour_and_size_on_the_background():
    rng = np.random.default_rng(0)
    img = domain.render_objects("black", [("red", "square", "large")], [(16.0, 16.0)], rng).astype(int)
    assert img.shape == (32, 32, 3)
    assert img[16, 16, 0] > 180 and img[16, 16, 2] < 80  # centre is red
    assert img[1, 1].max() < 40  # corner is background
    red_px = {z: int((domain.render_objects("black", [("red", "square", z)], [(16.0, 16.0)], rng)[..., 0] > 120).sum())
              for z in domain.SIZES_PX}
    assert red_px == {"small": 8 * 8, "large": 12 * 12}


def test_render_objects_rejects_mismatched_objects_and_positions():
    with pytest.raises(ValueError, match="2 objects but 1 positions"):
        domain.render_objects("black", [("red", "square", "large")] * 2, [(16.0, 16.0)], np.random.default_rng(0))


def test_eval_prompts_are_half_easy_then_half_hard():
    prompts = domain.eval_prompts(seed=1, n_per_difficulty=20)
    diffs = [domain.difficulty_of(p) for p in prompts]
    assert diffs == ["easy"] * 20 + ["hard"] * 20


def test_every_domain_word_is_a_single_token_and_the_longest_caption_fits_the_max_length():
    tok = build_tokenizer()
    for w in domain.vocabulary():
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    # The longest form of the grammar: a list of three objects (18 words, all one token each).
    longest = "a large purple triangle, a large yellow diamond and a large green square on a white background"
    assert domain.parse_caption(longest).difficulty == "hard"
    n_longest = len(tok(longest).input_ids)
    assert n_longest == 18 + 2 <= MAX_LENGTH_TOKENS
    _, captions, _ = domain.sample_batch(np.random.default_rng(2), 300, hard_share=1.0)
    assert max(len(tok(c).input_ids) for c in captions) <= n_longest


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


def test_hard_kind_shares_steer_the_stream_and_bad_shares_are_named():
    rng = np.random.default_rng(0)
    _, _, scenes = domain.sample_batch(rng, 200, hard_share=1.0, hard_kinds={"pair": 1.0})
    assert all(s.relation is not None for s in scenes)
    default = domain.sample_batch(np.random.default_rng(1), 50, hard_share=0.7)[1]
    explicit = domain.sample_batch(np.random.default_rng(1), 50, hard_share=0.7, hard_kinds=domain.HARD_KINDS)[1]
    assert default == explicit  # the default stream is the one the committed weights were trained on
    for bad in ({"pair": 0.5}, {"pair": 1.5, "triple": -0.5}, {"quad": 1.0}, {"pair": float("nan")},
                {"pair": 0.3333333, "triple": 0.3333333, "twin": 0.3333333}):
        with pytest.raises(ValueError, match="hard_kinds"):
            domain.sample_batch(rng, 4, hard_share=1.0, hard_kinds=bad)
