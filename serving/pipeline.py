"""The serving-time text-to-image pipeline: tokenizers + exported networks + numpy scheduler.

Imports no diffusers/transformers (docs/interfaces.md section 2): only numpy, the
``tokenizers`` library and an :mod:`serving.engines` backend. It reproduces diffusers'
``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` ``__call__`` for text-to-image
(classifier-free guidance with the empty prompt or zeros as the negative branch, no
guidance rescale), checked image-for-image against diffusers by ``export.verify``.

Randomness: each query's initial noise (and ancestral-sampler noise) comes from its own
``numpy.random.default_rng(seed)``, so an image depends only on (prompt, seed), never on which
other queries shared its batch.

Prompt policy: prompts longer than the text encoder's context (``max_length_tokens``, 77 for
CLIP) are truncated to it, as diffusers does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from serving.engines import Engine, open_engine
from serving.schedulers import Schedule, build_schedule
from serving.stage import StageSpec, TokenizerSpec, read_stage_spec
from serving.validation import SEED_MAX



def _load_tokenizer(artifact_dir: Path, spec: TokenizerSpec):
    from tokenizers import Tokenizer  # noqa: PLC0415

    path = artifact_dir / spec.dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `make export`")
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=spec.max_length_tokens)
    tok.enable_padding(length=spec.max_length_tokens, pad_id=spec.pad_id)
    return tok


def initial_noise(seed: int, latent_shape: Sequence[int]) -> tuple[np.ndarray, np.random.Generator]:
    """Unit-variance initial latents (float32, ``latent_shape``) for one query and its generator.

    The generator is returned so that an ancestral sampler draws its step noise from the same
    per-query stream.
    """
    rng = np.random.default_rng(int(seed))
    return rng.standard_normal(tuple(latent_shape), dtype=np.float32), rng


def check_request(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    """Raise ValueError naming the bad value unless prompts are strings and seeds ints in [0, 2**32 - 1]."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds; expected one seed per prompt")
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompt {p!r} is a {type(p).__name__}; expected str")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) <= SEED_MAX:
            raise ValueError(f"seed {s!r}; expected an int in [0, {SEED_MAX}]")


class StagePipeline:
    """One exported light or heavy stage, ready to generate.

    ``generate(prompts, seeds)`` -> uint8 images (B, H, W, 3). ``generate_float`` returns the
    [0, 1] float32 images before quantization (used by verification).
    """

    def __init__(self, artifact_dir: str | Path, spec: StageSpec, engines: dict[str, Engine], tokenizers: list):
        self.artifact_dir = Path(artifact_dir)
        self.spec = spec
        self.engines = engines
        self.tokenizers = tokenizers
        self.schedule: Schedule = build_schedule(spec.scheduler, spec.steps)
        self._uncond: tuple[np.ndarray, np.ndarray | None] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.spec.height_px, self.spec.width_px, 3)

    # -- text -------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Token ids (int64, (B, max_length)) per tokenizer, truncated and padded."""
        return [np.array([e.ids for e in tok.encode_batch(list(prompts))], dtype=np.int64) for tok in self.tokenizers]

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(prompt_embeds (B, T, D), pooled_embeds (B, P) for SDXL or None)."""
        ids = self.tokenize(prompts)
        feeds = {"input_ids": ids[0]}
        if self.spec.kind == "sdxl":
            feeds["input_ids_2"] = ids[1]
        out = self.engines["text_encoder"].run(feeds)
        return out["prompt_embeds"], out.get("pooled_prompt_embeds")

    def _negative(self, batch: int, like: tuple[np.ndarray, np.ndarray | None]):
        if self._uncond is None:  # constant per stage: encode once
            if self.spec.uncond == "zeros":
                self._uncond = (np.zeros_like(like[0][:1]), None if like[1] is None else np.zeros_like(like[1][:1]))
            else:
                self._uncond = self.encode([""])
        emb, pooled = self._uncond
        return np.repeat(emb, batch, 0), None if pooled is None else np.repeat(pooled, batch, 0)

    # -- generation -------------------------------------------------------------------------
    def generate_float(self, prompts: Sequence[str], seeds: Sequence[int],
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Images in [0, 1], float32 (B, H, W, 3). ``progress(step)`` is called after each denoising step."""
        check_request(prompts, seeds)
        b = len(prompts)
        if b == 0:
            return np.zeros((0, *self.image_shape), np.float32)
        spec, sched = self.spec, self.schedule
        emb, pooled = self.encode(prompts)
        noise, rngs = zip(*(initial_noise(s, spec.latent_shape) for s in seeds))
        latents = np.stack(noise) * np.float32(sched.init_noise_sigma)
        extra: dict[str, np.ndarray] = {}
        if spec.kind == "sdxl":
            h, w = spec.height_px, spec.width_px
            extra["time_ids"] = np.tile(np.array([[h, w, 0, 0, h, w]], np.float32), (b, 1))
            extra["text_embeds"] = pooled
        if spec.do_cfg:
            neg, neg_pooled = self._negative(b, (emb, pooled))
            emb = np.concatenate([neg, emb])
            if spec.kind == "sdxl":
                extra = {"time_ids": np.concatenate([extra["time_ids"]] * 2),
                         "text_embeds": np.concatenate([neg_pooled, pooled])}
        unet = self.engines["unet"]
        for i in range(sched.num_steps):
            x = sched.scale_model_input(latents, i)
            if spec.do_cfg:
                x = np.concatenate([x, x])
            t = np.full((x.shape[0],), sched.timesteps[i], np.float32)
            out = unet.run({"sample": x.astype(np.float32, copy=False), "timestep": t,
                            "encoder_hidden_states": emb, **extra})["noise_pred"]
            if spec.do_cfg:
                uncond, cond = out[:b], out[b:]
                out = uncond + np.float32(spec.guidance_scale) * (cond - uncond)
            step_noise = np.stack([r.standard_normal(spec.latent_shape, dtype=np.float32) for r in rngs]) \
                if sched.needs_noise else None
            latents = sched.step(out, i, latents, noise=step_noise)
            if progress:
                progress(i)
        return self.decode(latents)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """VAE-decode latents (B, C, h, w) to [0, 1] float32 images (B, H, W, 3)."""
        spec = self.spec
        if spec.vae_latents_mean is not None and spec.vae_latents_std is not None:
            mean = np.array(spec.vae_latents_mean, np.float32).reshape(1, -1, 1, 1)
            std = np.array(spec.vae_latents_std, np.float32).reshape(1, -1, 1, 1)
            z = latents * std / np.float32(spec.vae_scaling_factor) + mean
        else:
            z = latents / np.float32(spec.vae_scaling_factor) + np.float32(spec.vae_shift_factor)
        img = self.engines["vae_decoder"].run({"latents": z.astype(np.float32)})["image"]
        return np.clip(img / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1).astype(np.float32)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 RGB images (B, H, W, 3) for ``prompts`` with per-query ``seeds``."""
        return to_uint8(self.generate_float(prompts, seeds))


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] float images -> uint8, rounding as diffusers' ``numpy_to_pil`` does."""
    return (images * 255).round().astype(np.uint8)


def load_stage(artifact_dir: str | Path, backend: str = "auto", threads: int | None = None,
               expected_hash: str | None = None, device_id: int | None = None) -> StagePipeline:
    """Load an exported light/heavy stage from ``artifact_dir`` (its ``stage.json`` and files).

    ``expected_hash``: refuse artifacts exported from another cascade config
    (:class:`serving.stage.StaleArtifacts`). ``threads``: ONNX Runtime intra-op threads
    (None: ``$DIFFSERVE_ORT_THREADS`` or ONNX Runtime's default). ``device_id``: the CUDA device
    every engine is built on (the Triton instance's GPU; None: the current device).
    """
    artifact_dir = Path(artifact_dir)
    spec = read_stage_spec(artifact_dir, expected_hash)
    engines = {name: open_engine({"name": name, **comp}, artifact_dir, backend, threads, device_id)
               for name, comp in spec.components.items()}
    tokenizers = [_load_tokenizer(artifact_dir, t) for t in spec.tokenizers]
    return StagePipeline(artifact_dir, spec, engines, tokenizers)
