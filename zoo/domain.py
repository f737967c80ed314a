"""The synthetic text-to-image domain of the embedded tiny cascade.

Images are 32x32 RGB pictures of coloured shapes on a plain background; captions come from a
small grammar. Everything is generated in code from a seed, so the training data, the test
prompts and the judge's ground truth are reproducible without any download.

Design choices (why, see ``zoo/README.md``):

- Objects sit in fixed *slots* that depend only on how many objects there are and on the
  relation word, so a model can learn layouts quickly; a +-1 px jitter and a small colour
  jitter keep real images from being pixel-identical.
- ``easy`` prompts have one object (with a size word), ``hard`` prompts two or three objects
  (a relation, a count, or a list). What the quality judge checks is the *multiset of
  (colour, shape)* in the picture, not positions: exact spatial binding takes hours to learn
  on a CPU, object sets do not.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE_PX = 32
_SUPERSAMPLE = 4  # draw at 4x and downscale: anti-aliased edges at 32x32

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 205, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "white": (235, 235, 235),
}
SIZES_PX: dict[str, int] = {"small": 12, "large": 20}
MULTI_OBJECT_SIZE_PX = 12
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
COUNT_WORDS = {2: "two", 3: "three"}
MAX_OBJECTS = 3

# (colour, shape) pairs in a fixed order: the judge predicts a count for each of them.
OBJECT_TYPES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
DIFFICULTIES = ("easy", "hard")
# Hard prompt kinds and their share among hard prompts.
HARD_KINDS: dict[str, float] = {"pair": 0.45, "twin": 0.15, "triple": 0.2, "twin_plus": 0.2}

# Slot centres (x, y) in pixels of the 32x32 image, by layout.
_SLOTS: dict[str, tuple[tuple[float, float], ...]] = {
    "single": ((16.0, 16.0),),
    "row": ((8.5, 16.0), (23.5, 16.0)),
    "column": ((16.0, 8.5), (16.0, 23.5)),
    "triangle": ((8.5, 9.0), (23.5, 9.0), (16.0, 23.5)),
}


@dataclasses.dataclass(frozen=True)
class Scene:
    """What a caption describes.

    ``objects`` are (colour, shape) pairs in slot order; ``layout`` names the slot set;
    ``size_px`` is the object size in pixels of the 32x32 image.
    """

    background: str
    objects: tuple[tuple[str, str], ...]
    layout: str
    size_px: int

    @property
    def difficulty(self) -> str:
        """``easy`` for one object, ``hard`` for two or three."""
        return "easy" if len(self.objects) == 1 else "hard"

    def object_counts(self) -> Counter:
        """Multiset of (colour, shape): what the quality judge compares."""
        return Counter(self.objects)


def vocabulary() -> list[str]:
    """Every word (and punctuation token) a caption can contain, sorted."""
    words = {"a", "on", "background", "and", ",", "of", "left", "right", "above", "below"}
    words |= set(COLORS) | set(BACKGROUNDS) | set(SIZES_PX) | set(COUNT_WORDS.values())
    words |= set(SHAPES) | {s + "s" for s in SHAPES}
    return sorted(words)


def _phrase(color: str, shape: str) -> str:
    return f"a {color} {shape}"


def _caption(kind: str, background: str, objs: Sequence[tuple[str, str]], extra: str) -> str:
    bg = f"on a {background} background"
    if kind == "single":
        (c, s), = objs
        return f"a {extra} {c} {s} {bg}"
    if kind == "pair":
        return f"{_phrase(*objs[0])} {extra} {_phrase(*objs[1])} {bg}"
    if kind == "twin":
        c, s = objs[0]
        return f"{COUNT_WORDS[len(objs)]} {c} {s}s {bg}"
    if kind == "triple":
        return f"{_phrase(*objs[0])}, {_phrase(*objs[1])} and {_phrase(*objs[2])} {bg}"
    if kind == "twin_plus":
        c, s = objs[0]
        return f"two {c} {s}s and {_phrase(*objs[2])} {bg}"
    raise ValueError(f"unknown prompt kind {kind!r}; expected one of single, {', '.join(HARD_KINDS)}")


def sample_scene(rng: np.random.Generator, difficulty: str) -> tuple[str, Scene]:
    """Draw one (caption, scene) of the given difficulty (``easy`` or ``hard``)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]

    def rand_obj() -> tuple[str, str]:
        return OBJECT_TYPES[rng.integers(len(OBJECT_TYPES))]

    if difficulty == "easy":
        size = list(SIZES_PX)[rng.integers(len(SIZES_PX))]
        obj = rand_obj()
        return _caption("single", bg, [obj], size), Scene(bg, (obj,), "single", SIZES_PX[size])
    kinds = list(HARD_KINDS)
    kind = kinds[rng.choice(len(kinds), p=np.array(list(HARD_KINDS.values())))]
    if kind == "pair":
        a, b = rand_obj(), rand_obj()
        while b == a:  # two identical objects are the "twin" kind
            b = rand_obj()
        rel = RELATIONS[rng.integers(len(RELATIONS))]
        # Slot order: left-to-right or top-to-bottom.
        first, second = (a, b) if rel in ("left of", "above") else (b, a)
        layout = "row" if rel in ("left of", "right of") else "column"
        return _caption("pair", bg, [a, b], rel), Scene(bg, (first, second), layout, MULTI_OBJECT_SIZE_PX)
    if kind == "twin":
        n = int(rng.integers(2, 4))
        objs = [rand_obj()] * n
        layout = "row" if n == 2 else "triangle"
        return _caption("twin", bg, objs, ""), Scene(bg, tuple(objs), layout, MULTI_OBJECT_SIZE_PX)
    if kind == "triple":
        objs = [rand_obj(), rand_obj(), rand_obj()]
        return _caption("triple", bg, objs, ""), Scene(bg, tuple(objs), "triangle", MULTI_OBJECT_SIZE_PX)
    a, b = rand_obj(), rand_obj()
    while b == a:
        b = rand_obj()
    objs = [a, a, b]
    return _caption("twin_plus", bg, objs, ""), Scene(bg, tuple(objs), "triangle", MULTI_OBJECT_SIZE_PX)


_WORD_RE = re.compile(r"[a-z]+|,")


def parse_caption(caption: str) -> Scene:
    """Parse a caption of the grammar back into its :class:`Scene`.

    Raises ``ValueError`` naming the caption when it is not in the grammar.
    """
    words = _WORD_RE.findall(caption.lower())
    text = " ".join(words)
    bgs = "|".join(BACKGROUNDS)
    cols = "|".join(COLORS)
    shp = "|".join(SHAPES)
    obj = rf"a ({cols}) ({shp})"
    patterns = {
        "single": rf"^a ({'|'.join(SIZES_PX)}) ({cols}) ({shp}) on a ({bgs}) background$",
        "pair": rf"^{obj} (left of|right of|above|below) {obj} on a ({bgs}) background$",
        "twin": rf"^(two|three) ({cols}) ({shp})s on a ({bgs}) background$",
        "triple": rf"^{obj} , {obj} and {obj} on a ({bgs}) background$",
        "twin_plus": rf"^two ({cols}) ({shp})s and {obj} on a ({bgs}) background$",
    }
    for kind, pat in patterns.items():
        m = re.match(pat, text)
        if not m:
            continue
        g = m.groups()
        if kind == "single":
            return Scene(g[3], ((g[1], g[2]),), "single", SIZES_PX[g[0]])
        if kind == "pair":
            a, rel, b = (g[0], g[1]), g[2], (g[3], g[4])
            first, second = (a, b) if rel in ("left of", "above") else (b, a)
            layout = "row" if rel in ("left of", "right of") else "column"
            return Scene(g[5], (first, second), layout, MULTI_OBJECT_SIZE_PX)
        if kind == "twin":
            n = 2 if g[0] == "two" else 3
            return Scene(g[3], ((g[1], g[2]),) * n, "row" if n == 2 else "triangle", MULTI_OBJECT_SIZE_PX)
        if kind == "triple":
            objs = ((g[0], g[1]), (g[2], g[3]), (g[4], g[5]))
            return Scene(g[6], objs, "triangle", MULTI_OBJECT_SIZE_PX)
        a, b = (g[0], g[1]), (g[2], g[3])
        return Scene(g[4], (a, a, b), "triangle", MULTI_OBJECT_SIZE_PX)
    raise ValueError(f"caption {caption!r} is not in the tiny domain's grammar (see zoo.domain)")


def difficulty_of(caption: str) -> str:
    """``easy`` or ``hard`` for a caption of the grammar (raises ``ValueError`` otherwise)."""
    return parse_caption(caption).difficulty


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float, fill) -> None:
    h = size / 2.0
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Render a scene to a uint8 array (32, 32, 3); jitter (+-1 px, +-8 colour levels) from ``rng``."""
    s = _SUPERSAMPLE
    bg = np.clip(np.array(BACKGROUNDS[scene.background]) + rng.integers(-8, 9, 3), 0, 255)
    img = Image.new("RGB", (IMAGE_SIZE_PX * s, IMAGE_SIZE_PX * s), tuple(int(v) for v in bg))
    draw = ImageDraw.Draw(img)
    slots = _SLOTS[scene.layout]
    if len(slots) != len(scene.objects):
        raise ValueError(f"layout {scene.layout!r} has {len(slots)} slots, scene has {len(scene.objects)} objects")
    for (color, shape), (cx, cy) in zip(scene.objects, slots):
        dx, dy = rng.integers(-1, 2, 2)
        fill = np.clip(np.array(COLORS[color]) + rng.integers(-8, 9, 3), 0, 255)
        _draw_shape(draw, shape, (cx + dx) * s, (cy + dy) * s, scene.size_px * s, tuple(int(v) for v in fill))
    img = img.resize((IMAGE_SIZE_PX, IMAGE_SIZE_PX), Image.BOX)
    return np.asarray(img, dtype=np.uint8)


def sample_batch(
    rng: np.random.Generator, n: int, hard_share: float = 0.5
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``n`` (image, caption, scene) triples; each is hard with probability ``hard_share``.

    Returns images uint8 (n, 32, 32, 3), captions, scenes.
    """
    if not 0.0 <= hard_share <= 1.0:
        raise ValueError(f"hard_share must be in [0, 1], got {hard_share!r}")
    images = np.empty((n, IMAGE_SIZE_PX, IMAGE_SIZE_PX, 3), dtype=np.uint8)
    captions, scenes = [], []
    for i in range(n):
        diff = "hard" if rng.random() < hard_share else "easy"
        cap, scene = sample_scene(rng, diff)
        images[i] = render(scene, rng)
        captions.append(cap)
        scenes.append(scene)
    return images, captions, scenes


def eval_prompts(seed: int, n_per_difficulty: int) -> list[str]:
    """A fixed, seeded test set: ``n_per_difficulty`` easy prompts then as many hard ones."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, d)[0] for d in DIFFICULTIES for _ in range(n_per_difficulty)]


def counts_vector(scene: Scene) -> np.ndarray:
    """Count of every (colour, shape) of :data:`OBJECT_TYPES` in the scene, int64 (n_types,)."""
    c = scene.object_counts()
    return np.array([c.get(t, 0) for t in OBJECT_TYPES], dtype=np.int64)
