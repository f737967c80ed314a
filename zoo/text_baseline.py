"""The text-only baseline of the report: how well the caption alone predicts "the light image is
correct", to set beside the discriminator (which sees the image).

Features of a caption (:func:`caption_features`): its bag of words over the domain's vocabulary,
and what the parsed scene states: number of objects (one-hot), relation stated and its axis, the
hard kind (pair / triple / twin), and how many objects of each colour, shape and size word. A
logistic regression (:func:`zoo.report_stats.fit_logistic`) is fitted on the SELECTION prompts
(their light images judged) and scored on the evaluation prompts, whose compositions it has
never seen.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from zoo.domain import COLORS, MAX_OBJECTS, SHAPES, SIZES_PX, Scene, parse_caption, vocabulary
from zoo.report_stats import fit_logistic, logistic_score

HARD_KIND_NAMES = ("pair", "triple", "twin")
_WORDS = re.compile(r"[a-z]+|,")


def hard_kind(scene: Scene) -> str:
    """``easy`` for one object, else ``pair`` (a relation is stated), ``twin`` (a count of
    identical objects) or ``triple`` (a list of three)."""
    if len(scene.objects) == 1:
        return "easy"
    if scene.relation is not None:
        return "pair"
    return "twin" if len(set(scene.objects)) == 1 else "triple"


def feature_names() -> list[str]:
    """Column names of :func:`caption_features`, in order."""
    return ([f"word={w}" for w in vocabulary()] + [f"objects={k}" for k in range(1, MAX_OBJECTS + 1)]
            + ["relation", "relation_horizontal"] + [f"kind={k}" for k in HARD_KIND_NAMES]
            + [f"colour={c}" for c in COLORS] + [f"shape={s}" for s in SHAPES] + [f"size={z}" for z in SIZES_PX])


def caption_features(captions: Sequence[str]) -> np.ndarray:
    """float (N, len(feature_names())) features of captions of the grammar (ValueError otherwise)."""
    vocab = {w: i for i, w in enumerate(vocabulary())}
    colours, shapes, sizes = list(COLORS), list(SHAPES), list(SIZES_PX)
    x = np.zeros((len(captions), len(feature_names())))
    for row, caption in enumerate(captions):
        scene = parse_caption(caption)
        for word in _WORDS.findall(caption.lower()):
            x[row, vocab[word]] += 1
        col = len(vocab)
        x[row, col + len(scene.objects) - 1] = 1
        col += MAX_OBJECTS
        x[row, col] = scene.relation is not None
        x[row, col + 1] = scene.relation in ("left of", "right of")
        col += 2
        kind = hard_kind(scene)
        if kind in HARD_KIND_NAMES:
            x[row, col + HARD_KIND_NAMES.index(kind)] = 1
        col += len(HARD_KIND_NAMES)
        for c, s, z in scene.objects:
            x[row, col + colours.index(c)] += 1
            x[row, col + len(colours) + shapes.index(s)] += 1
            x[row, col + len(colours) + len(shapes) + sizes.index(z)] += 1
    return x


def fit_text_baseline(captions: Sequence[str], light_ok: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """Logistic regression of ``light_ok`` on the captions' features: (weights, bias)."""
    return fit_logistic(caption_features(captions), np.asarray(light_ok, bool), l2=l2)


def text_baseline_score(captions: Sequence[str], weights: np.ndarray, bias: float) -> np.ndarray:
    """P(the light image is correct) from the caption alone."""
    return logistic_score(caption_features(captions), weights, bias)


def router_unseen_words(router) -> list[str]:
    """Domain words whose hashed unigram bucket has weight exactly 0 in ``router``
    (:class:`serving.router.TextRouter`): words its training prompts never held (a bucket shared
    with a seen word can hide one; an empty list is necessary, not sufficient, for a match)."""
    import zlib  # noqa: PLC0415

    return [w for w in vocabulary() if router.weights[zlib.crc32(w.encode()) % router.buckets] == 0.0]


def router_text_score(folder, captions: Sequence[str]) -> tuple[np.ndarray | None, str]:
    """(P(light image correct) by the router in ``folder`` = 1 - its score, a note); (None, why) when
    there is no router or it was trained on another vocabulary (retrain: ``python -m zoo.train_router``)."""
    from pathlib import Path  # noqa: PLC0415

    from serving.router import load_router  # noqa: PLC0415

    if not (Path(folder) / "router.json").is_file():
        return None, f"skipped: no router at {folder}"
    router = load_router(folder)
    unseen = router_unseen_words(router)
    if unseen:
        return None, (f"skipped: the router at {folder} never saw the domain words {unseen} (zero weight); "
                      "it predates the current domain, retrain it with python -m zoo.train_router")
    return 1.0 - router.score(captions).astype(np.float64), f"router at {folder}: 1 - P(light fails)"
