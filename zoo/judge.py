"""The quality judge: a CNN trained on *real* domain images only, independent of the discriminator.

It predicts, for every (colour, shape) of :data:`zoo.domain.OBJECT_TYPES`, how many
such objects an image holds (0-3). An image is *faithful* to its prompt when the predicted
multiset of (colour, shape) equals the prompt's (positions and background are not checked,
see ``zoo/README.md``). Its penultimate features serve an in-domain FID
(:func:`zoo.metrics.fid`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from export.module_folder import read_module_folder, save_module_folder
from zoo.common import to_tensor01
from zoo.domain import IMAGE_SIZE_PX, MAX_OBJECTS, OBJECT_TYPES, counts_vector, parse_caption


class TinyJudge(nn.Module):
    """Conv net: uint8-derived [0, 1] NCHW images -> count logits (B, n_types, MAX_OBJECTS + 1).

    ``feature_dim`` is the width of the penultimate layer used for FID.
    """

    def __init__(self, image_size: int = IMAGE_SIZE_PX, channels: Sequence[int] = (32, 64, 128),
                 feature_dim: int = 128, n_types: int = len(OBJECT_TYPES), max_count: int = MAX_OBJECTS):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        side = image_size // 2 ** len(channels)
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, n_types * (max_count + 1))
        self.n_types, self.max_count = n_types, max_count
        self.config = {"image_size": image_size, "channels": list(channels), "feature_dim": feature_dim,
                       "n_types": n_types, "max_count": max_count}

    def features_t(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of images in [0, 1]."""
        return self.feature(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Count logits (B, n_types, max_count + 1)."""
        return self.head(self.features_t(x)).view(-1, self.n_types, self.max_count + 1)

    @torch.no_grad()
    def predict_counts(self, images_uint8_nhwc: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Predicted count of every object type, int64 (B, n_types)."""
        out = [self(to_tensor01(images_uint8_nhwc[i:i + batch_size])).argmax(-1)
               for i in range(0, len(images_uint8_nhwc), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.n_types), np.int64)

    def fidelity(self, images_uint8_nhwc: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """bool (B,): whether each image's predicted (colour, shape) multiset equals its prompt's.

        Raises ValueError when the counts differ or a prompt is not in the domain's grammar.
        """
        if len(images_uint8_nhwc) != len(prompts):
            raise ValueError(f"{len(images_uint8_nhwc)} images but {len(prompts)} prompts")
        want = np.stack([counts_vector(parse_caption(p)) for p in prompts]) if prompts else np.zeros((0, 1))
        return (self.predict_counts(images_uint8_nhwc) == want).all(axis=1)

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
