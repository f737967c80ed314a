"""The prompt router: a difficulty score from the prompt's text alone, before any image is made.

HADIS (arXiv 2509.00642) sends prompts it predicts to be hard straight to the heavy model, so
they skip the light model and the discriminator. The router here is a logistic regression over
hashed word n-grams plus the prompt's length in words: it needs no tokenizer model, runs in
microseconds with numpy, and is trained per cascade (labels: whether the light model's image of
a prompt was good enough, e.g. judged correct). ``score`` is P(light fails) in [0, 1]; the
cascade routes a prompt to heavy when its score >= the control state's router threshold.

Artifact format (``router.json``)::

    {"format": "hashed-ngram-logistic/1", "buckets": 512, "ngrams": 2,
     "weights": [...buckets + 1 floats: one per bucket, then the length weight], "bias": -1.2,
     "length_scale": 16.0}
"""
from __future__ import annotations

import dataclasses
import json
import re
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

FORMAT = "hashed-ngram-logistic/1"
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokens(text: str) -> list[str]:
    """Lower-cased words, numbers and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def featurize(prompts: Sequence[str], buckets: int, ngrams: int, length_scale: float) -> np.ndarray:
    """(N, buckets + 1) float32: hashed n-gram counts (n = 1..ngrams, crc32 mod buckets), then length / length_scale.

    crc32 rather than Python's ``hash``: the same prompt lands in the same bucket in every process.
    """
    x = np.zeros((len(prompts), buckets + 1), np.float32)
    for i, prompt in enumerate(prompts):
        words = tokens(prompt)
        for n in range(1, ngrams + 1):
            for k in range(len(words) - n + 1):
                x[i, zlib.crc32(" ".join(words[k:k + n]).encode()) % buckets] += 1.0
        x[i, buckets] = len(words) / length_scale
    return x


@dataclasses.dataclass(frozen=True)
class TextRouter:
    """A trained router: ``score(prompts)`` = P(the light model fails on the prompt)."""

    weights: np.ndarray
    bias: float
    buckets: int = 512
    ngrams: int = 2
    length_scale: float = 16.0

    def __post_init__(self):
        if np.shape(self.weights) != (self.buckets + 1,):
            raise ValueError(f"router weights have shape {np.shape(self.weights)}; expected ({self.buckets + 1},)")

    def logits(self, prompts: Sequence[str]) -> np.ndarray:
        return featurize(prompts, self.buckets, self.ngrams, self.length_scale) @ self.weights + self.bias

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """float32 (N,) in [0, 1]: higher = more likely the light model fails (send to heavy)."""
        return (1.0 / (1.0 + np.exp(-self.logits(prompts)))).astype(np.float32)

    def to_json(self) -> dict:
        return {"format": FORMAT, "buckets": self.buckets, "ngrams": self.ngrams, "length_scale": self.length_scale,
                "weights": [float(w) for w in self.weights], "bias": float(self.bias)}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "router.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()) + "\n")
        return path


def load_router(folder: str | Path) -> TextRouter:
    """Read ``router.json`` from ``folder``; ValueError naming the file when it is not a router artifact."""
    path = Path(folder) / "router.json"
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a router artifact ({exc})") from exc
    if obj.get("format") != FORMAT:
        raise ValueError(f"{path}: format {obj.get('format')!r}; expected {FORMAT!r}")
    return TextRouter(np.asarray(obj["weights"], np.float64), float(obj["bias"]), int(obj["buckets"]),
                      int(obj["ngrams"]), float(obj["length_scale"]))


def fit_router(prompts: Sequence[str], light_fails: np.ndarray, buckets: int = 512, ngrams: int = 2,
               length_scale: float = 16.0, l2: float = 1e-3, steps: int = 400, lr: float = 0.5) -> TextRouter:
    """Logistic regression by full-batch gradient descent (numpy; a few thousand prompts take seconds).

    ``light_fails``: bool (N,), True where the light model's image of the prompt was not good enough.
    """
    y = np.asarray(light_fails, np.float64)
    if y.shape != (len(prompts),) or len(prompts) < 2:
        raise ValueError(f"{len(prompts)} prompts and labels of shape {y.shape}; expected one label per prompt, >= 2")
    x = featurize(prompts, buckets, ngrams, length_scale).astype(np.float64)
    w, b = np.zeros(x.shape[1]), float(np.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6)))
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        grad = p - y
        w -= lr * (x.T @ grad / len(y) + l2 * w)
        b -= lr * float(grad.mean())
    return TextRouter(w, b, buckets, ngrams, length_scale)


def load_router_stage(artifact_dir: str | Path, expected_hash: str | None = None) -> TextRouter:
    """The exported router stage (``router.json`` + ``stage.json`` of kind ``router``) in ``artifact_dir``.

    ``expected_hash``: the cascade config's hash; another hash in ``stage.json`` raises StaleArtifacts.
    """
    from serving.stage import read_stage_json  # noqa: PLC0415

    read_stage_json(artifact_dir, expected_hash, kind="router")
    return load_router(artifact_dir)
