"""The serving-time discriminator: uint8 images -> P(real) (docs/interfaces.md section 2).

The exported network takes float32 NCHW RGB in [0, 1] at ``image_size_px`` and returns logits
``[B]``; confidence = sigmoid(logit). Images of another size are resized (bilinear, Pillow)
to ``image_size_px`` first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.engines import Engine, open_engine
from serving.stage import read_stage_json


class Discriminator:
    """``confidence(images_uint8_nhwc) -> float32 (B,)`` = P(real)."""

    def __init__(self, engine: Engine, image_size_px: int, config_hash: str = ""):
        self.engine = engine
        self.image_size_px = int(image_size_px)
        self.config_hash = config_hash

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) -> float32 (B, 3, S, S) in [0, 1]; raises ValueError for other shapes/dtypes."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"discriminator input {desc}; expected uint8 (B, H, W, 3)")
        s = self.image_size_px
        if images.shape[1:3] != (s, s):
            from PIL import Image  # noqa: PLC0415

            images = np.stack([np.asarray(Image.fromarray(im).resize((s, s), Image.BILINEAR)) for im in images])
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Raw logits float32 (B,)."""
        if len(images) == 0:
            return np.zeros((0,), np.float32)
        return self.engine.run({"images": self.preprocess(images)})["logits"].reshape(-1).astype(np.float32)

    def confidence(self, images: np.ndarray) -> np.ndarray:
        """P(real) per image, float32 (B,)."""
        z = self.logits(images).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def load_discriminator(artifact_dir: str | Path, backend: str = "auto", threads: int | None = None,
                       expected_hash: str | None = None, device_id: int | None = None) -> Discriminator:
    """Load ``<artifact_dir>/discriminator.onnx`` (+ ``stage.json``); see :func:`serving.load_stage`."""
    artifact_dir = Path(artifact_dir)
    obj = read_stage_json(artifact_dir, expected_hash, kind="discriminator")
    comp = obj["components"]["discriminator"]
    engine = open_engine({"name": "discriminator", **comp}, artifact_dir, backend, threads, device_id)
    return Discriminator(engine, obj["image_size_px"], obj.get("config_hash", ""))
