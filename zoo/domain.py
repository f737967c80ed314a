"""The synthetic text-to-image domain of the embedded tiny cascade.

Images are 32x32 RGB pictures of coloured shapes on a plain background; captions come from a
small grammar. Everything is generated in code from a seed, so the training data, the test
prompts and the judge's ground truth are reproducible without any download.

Design (why, see ``docs/zoo.md``):

- Objects have a colour, a shape and a size word, and sit at *free* positions (no slots): a
  caption fixes what is drawn and, when it states a relation, which object is left of / above
  the other, never where.
- ``easy`` prompts have one object, ``hard`` ones two (with a relation), three (a list) or a
  count of two or three identical objects.
- **Split by composition.** Every caption has a *composition key* (for one object its size,
  colour and shape; for several objects their colour-shape pairs and the relation's axis and
  order, sizes and background left out). A stable hash of the key puts it in ``train`` (70 %),
  ``select`` (10 %, the checkpoint/discriminator selection and calibration set) or ``eval``
  (20 %, the report). The training streams only draw ``train`` compositions, so no evaluation
  caption, nor its mirrored form ("B right of A" for "A left of B"), is ever seen in training.
"""
from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE_PX = 32
_SUPERSAMPLE = 4  # draw at 4x and downscale: anti-aliased edges at 32x32

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 205, 35),
    "purple": (160, 50, 210),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "white": (235, 235, 235),
}
SIZES_PX: dict[str, int] = {"small": 8, "large": 12}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
COUNT_WORDS = {2: "two", 3: "three"}
MAX_OBJECTS = 3  # per caption; the judge counts up to MAX_COUNT of a kind (corrupted images add one)
MAX_COUNT = 4

# (colour, shape, size) in a fixed order: the judge predicts a count for each of them.
OBJECT_TYPES: tuple[tuple[str, str, str], ...] = tuple((c, s, z) for c in COLORS for s in SHAPES for z in SIZES_PX)
# (colour, shape) in a fixed order: the judge predicts where each is (for relations).
KINDS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
DIFFICULTIES = ("easy", "hard")
HARD_KINDS: dict[str, float] = {"pair": 0.5, "triple": 0.3, "twin": 0.2}
SPLITS: dict[str, tuple[float, float]] = {"train": (0.0, 0.7), "select": (0.7, 0.8), "eval": (0.8, 1.0)}
_GAP_PX = 1.0  # free pixels between objects' boxes
_MAX_TRIES = 500


@dataclasses.dataclass(frozen=True)
class Scene:
    """What a caption states: objects (colour, shape, size word) in caption order, the relation
    of objects[0] to objects[1] (``None`` when the caption states none) and the background."""

    background: str
    objects: tuple[tuple[str, str, str], ...]
    relation: str | None = None

    @property
    def difficulty(self) -> str:
        """``easy`` for one object, ``hard`` for two or three."""
        return "easy" if len(self.objects) == 1 else "hard"

    def object_counts(self) -> Counter:
        """Multiset of (colour, shape, size): what the judge compares."""
        return Counter(self.objects)


def vocabulary() -> list[str]:
    """Every word (and punctuation token) a caption can contain, sorted."""
    words = {"a", "on", "background", "and", ",", "of", "left", "right", "above", "below"}
    words |= set(COLORS) | set(BACKGROUNDS) | set(SIZES_PX) | set(COUNT_WORDS.values())
    words |= set(SHAPES) | {s + "s" for s in SHAPES}
    return sorted(words)


def caption_of(scene: Scene) -> str:
    """The grammar's caption of ``scene``."""
    bg = f"on a {scene.background} background"
    objs = scene.objects
    phrase = [f"a {z} {c} {s}" for c, s, z in objs]
    if len(objs) == 1:
        return f"{phrase[0]} {bg}"
    if scene.relation is not None:
        return f"{phrase[0]} {scene.relation} {phrase[1]} {bg}"
    if len(set(objs)) == 1:
        c, s, z = objs[0]
        return f"{COUNT_WORDS[len(objs)]} {z} {c} {s}s {bg}"
    return f"{phrase[0]}, {phrase[1]} and {phrase[2]} {bg}"


def composition_key(scene: Scene) -> str:
    """What the train/select/eval split is made on (see the module docstring)."""
    objs = scene.objects
    if len(objs) == 1:
        c, s, z = objs[0]
        return f"single|{z}|{c}|{s}"
    kinds = [f"{c} {s}" for c, s, _ in objs]
    if scene.relation is not None:
        first, second = (kinds[0], kinds[1]) if scene.relation in ("left of", "above") else (kinds[1], kinds[0])
        axis = "h" if scene.relation in ("left of", "right of") else "v"
        return f"pair|{axis}|{first}|{second}"
    if len(set(objs)) == 1:
        return f"twin|{len(objs)}|{kinds[0]}"
    return "triple|" + "|".join(sorted(kinds))


def split_of(scene: Scene) -> str:
    """``train``, ``select`` or ``eval``: a stable hash of the composition key."""
    u = (zlib.crc32(composition_key(scene).encode()) % 10_000) / 10_000
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= u < hi)


def check_hard_kinds(hard_kinds: Mapping[str, float]) -> dict[str, float]:
    """``hard_kinds`` as a dict, or ValueError naming it: finite shares >= 0 of the kinds of
    :data:`HARD_KINDS` that sum to 1 (within 1e-9: numpy's sampler refuses looser sums)."""
    shares = dict(hard_kinds)
    ok = not set(shares) - set(HARD_KINDS) and all(math.isfinite(v) and v >= 0 for v in shares.values())
    if not ok or abs(sum(shares.values()) - 1) > 1e-9:
        raise ValueError(f"hard_kinds={shares!r}; expected finite shares >= 0 of {sorted(HARD_KINDS)} summing to 1")
    return {k: float(shares.get(k, 0.0)) for k in HARD_KINDS}


def draw_scene(rng: np.random.Generator, difficulty: str, hard_kinds: Mapping[str, float] | None = None) -> Scene:
    """One scene of ``difficulty`` from the grammar, of ANY split. Training streams of models under
    test use :func:`sample_scene` instead; this is for the judge, the measuring instrument, which
    learns to read every composition from renders alone (never from a model's output).
    ``hard_kinds``: shares of the hard kinds (default :data:`HARD_KINDS`)."""
    bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]

    def obj() -> tuple[str, str, str]:
        return OBJECT_TYPES[rng.integers(len(OBJECT_TYPES))]

    if difficulty == "easy":
        return Scene(bg, (obj(),))
    shares = HARD_KINDS if hard_kinds is None else check_hard_kinds(hard_kinds)
    kinds = list(shares)
    kind = kinds[rng.choice(len(kinds), p=np.array(list(shares.values())))]
    if kind == "pair":
        a, b = obj(), obj()
        while b[:2] == a[:2]:  # distinct colour-shape kinds, so the relation names who is where
            b = obj()
        return Scene(bg, (a, b), RELATIONS[rng.integers(len(RELATIONS))])
    if kind == "twin":
        return Scene(bg, (obj(),) * int(rng.integers(2, 4)))
    objs = (obj(), obj(), obj())
    while len(set(objs)) == 1:  # three identical objects are the "twin" kind
        objs = (obj(), obj(), obj())
    return Scene(bg, objs)


def sample_scene(rng: np.random.Generator, difficulty: str, split: str = "train",
                 hard_kinds: Mapping[str, float] | None = None) -> tuple[str, Scene]:
    """Draw one (caption, scene) of ``difficulty`` (easy/hard) whose composition is in ``split``
    (hard kinds in the shares ``hard_kinds``, default :data:`HARD_KINDS`)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    while True:
        scene = draw_scene(rng, difficulty, hard_kinds)
        if split_of(scene) == split:
            return caption_of(scene), scene


_WORD_RE = re.compile(r"[a-z]+|,")


def parse_caption(caption: str) -> Scene:
    """Parse a caption of the grammar back into its :class:`Scene`.

    Raises ``ValueError`` naming the caption when it is not in the grammar.
    """
    text = " ".join(_WORD_RE.findall(caption.lower()))
    bgs, cols, shp, szs = (("|".join(x)) for x in (BACKGROUNDS, COLORS, SHAPES, SIZES_PX))
    obj = rf"a ({szs}) ({cols}) ({shp})"
    bg = rf"on a ({bgs}) background$"
    if m := re.match(rf"^{obj} {bg}", text):
        z, c, s, b = m.groups()
        return Scene(b, ((c, s, z),))
    if m := re.match(rf"^{obj} (left of|right of|above|below) {obj} {bg}", text):
        g = m.groups()
        if g[1:3] != g[5:7]:
            return Scene(g[7], ((g[1], g[2], g[0]), (g[5], g[6], g[4])), g[3])
    if m := re.match(rf"^(two|three) ({szs}) ({cols}) ({shp})s {bg}", text):
        n, z, c, s, b = m.groups()
        return Scene(b, ((c, s, z),) * (2 if n == "two" else 3))
    if m := re.match(rf"^{obj} , {obj} and {obj} {bg}", text):
        g = m.groups()
        objs = tuple((g[i + 1], g[i + 2], g[i]) for i in (0, 3, 6))
        if len(set(objs)) > 1:
            return Scene(g[9], objs)
    raise ValueError(f"caption {caption!r} is not in the tiny domain's grammar (see zoo.domain)")


def difficulty_of(caption: str) -> str:
    """``easy`` or ``hard`` for a caption of the grammar (raises ``ValueError`` otherwise)."""
    return parse_caption(caption).difficulty


def relation_offsets(relation: str, a_xy, b_xy) -> tuple[np.ndarray, np.ndarray]:
    """(along, across): the offset from ``a`` to ``b`` along the relation's axis, signed so that
    positive means ``a`` is ``relation`` ``b``, and the offset across it. Centres (..., 2) in
    pixels, x right, y down. The one geometry of a relation: :func:`place` and the judge use it."""
    d = np.asarray(b_xy, np.float64) - np.asarray(a_xy, np.float64)
    dx, dy = d[..., 0], d[..., 1]
    return {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]


def _relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a`` is ``relation`` ``b`` and the offset along that axis is at least twice the one
    across it (so the picture reads one way)."""
    along, across = relation_offsets(relation, a, b)
    return bool(along >= 0 and abs(across) * 2 <= along)


def place(scene: Scene, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """Free centres (x, y) in pixels for the scene's objects: inside the image, boxes apart by
    ``_GAP_PX``, and the stated relation (if any) shown. Rejection sampling."""
    sizes = [SIZES_PX[z] for _, _, z in scene.objects]
    for _ in range(_MAX_TRIES):
        pos: list[tuple[float, float]] = []
        for size in sizes:  # each object gets a few tries before the whole layout restarts
            lo, hi = size / 2 + 0.5, IMAGE_SIZE_PX - size / 2 - 0.5
            for _ in range(20):
                p = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
                if all(max(abs(p[0] - q[0]), abs(p[1] - q[1])) >= (size + sizes[i]) / 2 + _GAP_PX
                       for i, q in enumerate(pos)):
                    pos.append(p)
                    break
        if len(pos) == len(sizes) and (
                scene.relation is None or _relation_holds(scene.relation, pos[0], pos[1])):
            return tuple(pos)
    raise RuntimeError(f"could not place {scene!r} in {_MAX_TRIES} tries")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float, fill) -> None:
    h = size / 2.0
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_objects(background: str, objects: Sequence[tuple[str, str, str]],
                   positions: Sequence[tuple[float, float]], rng: np.random.Generator) -> np.ndarray:
    """Draw ``objects`` (colour, shape, size word) at ``positions`` on ``background``: uint8
    (32, 32, 3); +-8 colour-level jitter from ``rng``. Used for corrupted images too."""
    if len(objects) != len(positions):
        raise ValueError(f"{len(objects)} objects but {len(positions)} positions")
    s = _SUPERSAMPLE
    bg = np.clip(np.array(BACKGROUNDS[background]) + rng.integers(-8, 9, 3), 0, 255)
    img = Image.new("RGB", (IMAGE_SIZE_PX * s, IMAGE_SIZE_PX * s), tuple(int(v) for v in bg))
    draw = ImageDraw.Draw(img)
    for (color, shape, size), (cx, cy) in zip(objects, positions):
        fill = np.clip(np.array(COLORS[color]) + rng.integers(-8, 9, 3), 0, 255)
        _draw_shape(draw, shape, cx * s, cy * s, SIZES_PX[size] * s, tuple(int(v) for v in fill))
    img = img.resize((IMAGE_SIZE_PX, IMAGE_SIZE_PX), Image.BOX)
    return np.asarray(img, dtype=np.uint8)


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Render a scene at free positions (:func:`place`) to uint8 (32, 32, 3)."""
    return render_objects(scene.background, scene.objects, place(scene, rng), rng)


def sample_batch(
    rng: np.random.Generator, n: int, hard_share: float = 0.5, split: str = "train",
    hard_kinds: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``n`` (image, caption, scene) triples of ``split``; each is hard with probability ``hard_share``.

    Returns images uint8 (n, 32, 32, 3), captions, scenes.
    """
    if not 0.0 <= hard_share <= 1.0:
        raise ValueError(f"hard_share must be in [0, 1], got {hard_share!r}")
    images = np.empty((n, IMAGE_SIZE_PX, IMAGE_SIZE_PX, 3), dtype=np.uint8)
    captions, scenes = [], []
    for i in range(n):
        cap, scene = sample_scene(rng, "hard" if rng.random() < hard_share else "easy", split, hard_kinds)
        images[i] = render(scene, rng)
        captions.append(cap)
        scenes.append(scene)
    return images, captions, scenes


def eval_prompts(seed: int, n_per_difficulty: int, split: str = "eval") -> list[str]:
    """A fixed, seeded prompt set of ``split`` (default: the held-out compositions):
    ``n_per_difficulty`` easy prompts then as many hard ones."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, d, split)[0] for d in DIFFICULTIES for _ in range(n_per_difficulty)]


def counts_vector(objects: Sequence[tuple[str, str, str]] | Scene) -> np.ndarray:
    """Count of every (colour, shape, size) of :data:`OBJECT_TYPES`, int64 (n_types,)."""
    c = Counter(objects.objects if isinstance(objects, Scene) else objects)
    return np.array([c.get(t, 0) for t in OBJECT_TYPES], dtype=np.int64)
