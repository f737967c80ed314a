"""Image discriminators of the cascade: confidence that an image is *real* (P(real)).

A discriminator folder holds ``config.json`` (``{"_class_name": ..., "image_size": ..., ...}``)
and ``model.safetensors`` (see docs/interfaces.md). The module takes float32 NCHW RGB images in
[0, 1] at ``image_size`` and returns logits ``[B]``; confidence = ``sigmoid(logit)``. It uses
plain conv/pool/linear ops only, so it exports to ONNX with a dynamic batch axis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from export.module_folder import read_module_folder, save_module_folder


class TinyDiscriminator(nn.Module):
    """Small CNN real-vs-generated classifier for ``image_size`` x ``image_size`` RGB images.

    Per level: (conv3x3 + BatchNorm + ReLU) x 2 + 2x2 average pool; then global average pool
    and a linear layer to one logit. (Without normalisation it stalled at chance in training;
    BatchNorm folds into the convolutions in the ONNX export, eval mode.)
    """

    def __init__(self, image_size: int = 32, channels: Sequence[int] = (32, 64, 128), input_pool: int = 1):
        super().__init__()
        if input_pool < 1 or image_size % (input_pool * 2 ** len(channels)):
            raise ValueError(
                f"image_size {image_size} must be divisible by input_pool {input_pool} x 2**{len(channels)}"
            )
        # input_pool > 1 averages the image down first: the network then judges layout and shape
        # (what a wrong image gets wrong) rather than pixel texture (which every generated image has).
        layers, c_in = ([nn.AvgPool2d(input_pool)] if input_pool > 1 else []), 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.AvgPool2d(2)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, 1)
        self.image_size = image_size
        self.config = {"image_size": image_size, "channels": list(channels), "input_pool": input_pool}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B] of P(real) for float32 NCHW images in [0, 1] at ``image_size``."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected images of shape (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}"
            )
        return self.head(self.pool(self.body(images)).flatten(1)).squeeze(1)


_CLASSES = {TinyDiscriminator.__name__: TinyDiscriminator}


def save_discriminator(model: TinyDiscriminator, path: str | Path) -> None:
    """Write ``config.json`` + fp16 ``model.safetensors`` under ``path``."""
    save_module_folder(model, model.config, path)


def load_discriminator(path: str | Path) -> torch.nn.Module:
    """Load a discriminator folder; returns the module in eval mode, fp32, on CPU.

    Raises FileNotFoundError when files are missing and ValueError for an unknown ``_class_name``.
    """
    import json

    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: expected a discriminator folder (config.json + model.safetensors)")
    name = json.loads(cfg_file.read_text()).get("_class_name")
    if name not in _CLASSES:
        raise ValueError(f"{cfg_file}: unknown discriminator _class_name {name!r}; expected one of {sorted(_CLASSES)}")
    config, state = read_module_folder(path, name)
    model = _CLASSES[name](**config)
    model.load_state_dict(state)
    return model.eval()
