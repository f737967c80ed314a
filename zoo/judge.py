"""The quality judge: a CNN trained on *real* domain images only, independent of the discriminator.

It predicts, for every (colour, shape, size) of :data:`zoo.domain.OBJECT_TYPES`, how many such
objects an image holds (0 to ``MAX_COUNT``), and for every (colour, shape) of
:data:`zoo.domain.KINDS` where it is (the centre of its objects' mass, in pixels).
Counting is by detecting object centres per cell (see :class:`TinyJudge`). An image is *faithful* to its prompt when

- the predicted count of every (colour, shape, size) equals the prompt's: right objects, right
  size words, nothing missing and nothing extra (an extra object of any kind is a count of 1
  where the prompt says 0);
- when the prompt states a relation, the first object's centre is on that side of the second's,
  and more along the relation's axis than across it (:func:`relation_shown`).

Its penultimate features serve an in-domain FID (:func:`zoo.metrics.fid`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from export.module_folder import read_module_folder, save_module_folder
from zoo.common import to_tensor01
from zoo.domain import (IMAGE_SIZE_PX, KINDS, MAX_COUNT, OBJECT_TYPES, Scene, counts_vector, parse_caption,
                        relation_offsets)


def relation_shown(relation: str, a_xy: np.ndarray, b_xy: np.ndarray) -> np.ndarray:
    """bool (B,): ``a`` is ``relation`` ``b`` (centres (B, 2), x right, y down): the offset along the
    relation's axis has the right sign and is at least the offset across it."""
    along, across = relation_offsets(relation, a_xy, b_xy)
    return (along > 0) & (np.abs(across) <= along)


class TinyJudge(nn.Module):
    """Fully convolutional detector: [0, 1] NCHW images -> per cell of a ``grid`` x ``grid`` lattice
    (4 x 4 px cells at 32 x 32), logits of "the centre of an object of type k is in this cell" for
    every (colour, shape, size) k plus "no centre here" (B, n_types + 1, grid, grid). Objects are
    at least 9 px apart, so a cell holds at most one centre. Counts are the cells per type; a
    kind's centre is the mean of its cells' centres. Detecting centres per cell is what makes
    duplicates and small extra objects countable after few training steps (a global count
    classifier confused 3 with 2). ``feature_dim``: width of the pooled features used for FID."""

    def __init__(self, image_size: int = IMAGE_SIZE_PX, channels: Sequence[int] = (32, 64, 128),
                 feature_dim: int = 128, n_types: int = len(OBJECT_TYPES), max_count: int = MAX_COUNT):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.grid = image_size // 2 ** (len(channels) - 1)
        self.feature = nn.Sequential(nn.Conv2d(c_in, feature_dim, 1), nn.ReLU())
        self.cells = nn.Conv2d(feature_dim, n_types + 1, 1)
        self.n_types, self.max_count, self.image_size = n_types, max_count, image_size
        self.config = {"image_size": image_size, "channels": list(channels), "feature_dim": feature_dim,
                       "n_types": n_types, "max_count": max_count}

    def features_t(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, feature_dim) of images in [0, 1] (for FID)."""
        return self.feature(self.conv(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cell logits (B, n_types + 1, grid, grid); the last class is "no object centre"."""
        return self.cells(self.feature(self.conv(x)))

    @torch.no_grad()
    def predict(self, images_uint8_nhwc: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(predicted counts int64 (B, n_types), kind centres float (B, n_kinds, 2) in pixels; NaN where
        a kind is not detected)."""
        cells = [self(to_tensor01(images_uint8_nhwc[i:i + batch_size])).argmax(1).numpy()
                 for i in range(0, len(images_uint8_nhwc), batch_size)]
        if not cells:
            return np.zeros((0, self.n_types), np.int64), np.zeros((0, len(KINDS), 2))
        label = np.concatenate(cells).reshape(-1, self.grid * self.grid)  # (B, cells), n_types = none
        onehot = label[:, :, None] == np.arange(self.n_types)[None, None, :]  # (B, cells, n_types)
        counts = np.minimum(onehot.sum(1), self.max_count).astype(np.int64)
        per_kind = onehot.reshape(len(label), -1, len(KINDS), self.n_types // len(KINDS)).any(-1)  # sizes merged
        centre = (np.arange(self.grid) + 0.5) * self.image_size / self.grid
        cx, cy = np.tile(centre, self.grid), np.repeat(centre, self.grid)  # cell index = y * grid + x
        n = per_kind.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            xy = np.stack([(per_kind * cx[None, :, None]).sum(1) / n, (per_kind * cy[None, :, None]).sum(1) / n], -1)
        return counts, xy

    def predict_counts(self, images_uint8_nhwc: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Predicted count of every object type, int64 (B, n_types)."""
        return self.predict(images_uint8_nhwc, batch_size)[0]

    def check(self, images_uint8_nhwc: np.ndarray, scenes: Sequence[Scene]) -> dict[str, np.ndarray]:
        """Per image, bool (B,) for each check: ``objects`` (every (colour, shape, size) count
        right, so no missing, wrong or extra object), ``relation`` (True where none is stated),
        and ``faithful`` (both)."""
        if len(images_uint8_nhwc) != len(scenes):
            raise ValueError(f"{len(images_uint8_nhwc)} images but {len(scenes)} scenes")
        counts, where = self.predict(images_uint8_nhwc)
        want = np.stack([counts_vector(s) for s in scenes]) if scenes else np.zeros((0, self.n_types))
        objects = (counts == want).all(axis=1)
        relation = np.ones(len(scenes), bool)
        for i, s in enumerate(scenes):
            if s.relation is not None:
                a, b = (KINDS.index(o[:2]) for o in s.objects[:2])
                relation[i] = relation_shown(s.relation, where[i:i + 1, a], where[i:i + 1, b])[0]
        return {"objects": objects, "relation": relation, "faithful": objects & relation}

    def fidelity(self, images_uint8_nhwc: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """bool (B,): whether each image shows what its prompt states (see the module docstring).

        Raises ValueError when the counts differ or a prompt is not in the domain's grammar.
        """
        if len(images_uint8_nhwc) != len(prompts):
            raise ValueError(f"{len(images_uint8_nhwc)} images but {len(prompts)} prompts")
        return self.check(images_uint8_nhwc, [parse_caption(p) for p in prompts])["faithful"]

    @torch.no_grad()
    def features(self, images_uint8_nhwc: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """float32 (B, feature_dim) penultimate features, for :func:`zoo.metrics.fid`."""
        out = [self.features_t(to_tensor01(images_uint8_nhwc[i:i + batch_size]))
               for i in range(0, len(images_uint8_nhwc), batch_size)]
        return torch.cat(out).numpy().astype(np.float32)


def save_judge(judge: TinyJudge, path: str | Path) -> None:
    """Write the judge folder (config.json + fp16 model.safetensors)."""
    save_module_folder(judge, judge.config, path)


def load_judge(path: str | Path) -> TinyJudge:
    """Load a judge folder written by :func:`save_judge`; eval mode, fp32, CPU."""
    config, state = read_module_folder(path, TinyJudge.__name__)
    judge = TinyJudge(**config)
    judge.load_state_dict(state)
    return judge.eval()
