"""Corrupted renders of a prompt's scene: what the judge must reject (its test suite).

Each corruption returns the objects and positions of a picture that differs from the prompt in
exactly one stated way, or ``None`` when the corruption does not apply (a relation flip on a
prompt without a relation). Pure functions of (scene, positions, rng); rendering is
:func:`zoo.domain.render_objects`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from zoo.domain import COLORS, IMAGE_SIZE_PX, SHAPES, SIZES_PX, Scene

Objects = tuple[tuple[str, str, str], ...]
Positions = tuple[tuple[float, float], ...]
Picture = tuple[Objects, Positions]


def _other(rng: np.random.Generator, options, current: str) -> str:
    choices = [o for o in options if o != current]
    return choices[rng.integers(len(choices))]


def colour_swap(scene: Scene, pos: Positions, rng: np.random.Generator) -> Picture:
    """One object drawn in another colour."""
    i = int(rng.integers(len(scene.objects)))
    c, s, z = scene.objects[i]
    objs = list(scene.objects)
    objs[i] = (_other(rng, COLORS, c), s, z)
    return tuple(objs), pos


def shape_swap(scene: Scene, pos: Positions, rng: np.random.Generator) -> Picture:
    """One object drawn as another shape."""
    i = int(rng.integers(len(scene.objects)))
    c, s, z = scene.objects[i]
    objs = list(scene.objects)
    objs[i] = (c, _other(rng, SHAPES, s), z)
    return tuple(objs), pos


def size_swap(scene: Scene, pos: Positions, rng: np.random.Generator) -> Picture:
    """One object drawn in the other size (positions kept; a grown object may touch a neighbour)."""
    i = int(rng.integers(len(scene.objects)))
    c, s, z = scene.objects[i]
    objs = list(scene.objects)
    objs[i] = (c, s, _other(rng, SIZES_PX, z))
    half = SIZES_PX[objs[i][2]] / 2 + 0.5
    p = list(pos)
    p[i] = tuple(float(np.clip(v, half, IMAGE_SIZE_PX - half)) for v in pos[i])
    return tuple(objs), tuple(p)


def object_dropped(scene: Scene, pos: Positions, rng: np.random.Generator) -> Picture:
    """One object left out."""
    i = int(rng.integers(len(scene.objects)))
    keep = [j for j in range(len(scene.objects)) if j != i]
    return tuple(scene.objects[j] for j in keep), tuple(pos[j] for j in keep)


def extra_small_object(scene: Scene, pos: Positions, rng: np.random.Generator) -> Picture:
    """One more small object of a random colour and shape, in free space (the light model's artefact)."""
    size = SIZES_PX["small"]
    sizes = [SIZES_PX[z] for _, _, z in scene.objects]
    lo, hi = size / 2 + 0.5, IMAGE_SIZE_PX - size / 2 - 0.5
    for _ in range(2000):
        p = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        if all(max(abs(p[0] - q[0]), abs(p[1] - q[1])) >= (size + s) / 2 + 1.0 for q, s in zip(pos, sizes)):
            obj = (list(COLORS)[rng.integers(len(COLORS))], SHAPES[rng.integers(len(SHAPES))], "small")
            return scene.objects + (obj,), pos + (p,)
    raise RuntimeError(f"no free space for an extra object in {scene!r}")


def relation_flipped(scene: Scene, pos: Positions, rng: np.random.Generator) -> Picture | None:
    """The two related objects trade places (``None`` when the prompt states no relation)."""
    if scene.relation is None:
        return None
    return scene.objects, (pos[1], pos[0]) + pos[2:]


CORRUPTIONS: dict[str, Callable[[Scene, Positions, np.random.Generator], Picture | None]] = {
    "colour_swap": colour_swap,
    "shape_swap": shape_swap,
    "size_swap": size_swap,
    "object_dropped": object_dropped,
    "extra_small_object": extra_small_object,
    "relation_flipped": relation_flipped,
}
