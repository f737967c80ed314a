"""Diffusion scheduler math in numpy (no torch, no diffusers): DDIM, Euler, Euler ancestral.

The serving runtime cannot import diffusers (see docs/interfaces.md section 2), so the
samplers the shipped cascades use are re-implemented here from diffusers' own formulas, keyed by
the same scheduler config dict diffusers saves (``scheduler_config.json``, ``_class_name``
included). ``tests/test_runtime_schedulers.py`` checks every schedule and step against diffusers.

Unlike diffusers' schedulers, a :class:`Schedule` is immutable and addressed by step index, so one
schedule can serve many concurrent batches.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

SUPPORTED_CLASSES = ("DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler")
SUPPORTED_SPACINGS = ("linspace", "leading", "trailing")
SUPPORTED_PREDICTIONS = ("epsilon", "v_prediction", "sample")


class UnsupportedScheduler(ValueError):
    """The scheduler config asks for a class or option this numpy port does not implement."""


def _betas(cfg: Mapping[str, Any]) -> np.ndarray:
    """Training betas, float32, computed the way diffusers does (torch float32 linspace)."""
    n = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        return np.asarray(cfg["trained_betas"], dtype=np.float32)
    start, end = float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02))
    kind = cfg.get("beta_schedule", "linear")
    if kind == "linear":
        return np.linspace(start, end, n, dtype=np.float32)
    if kind == "scaled_linear":
        return np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float32) ** 2
    if kind == "squaredcos_cap_v2":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
        return np.asarray(betas, dtype=np.float32)
    raise UnsupportedScheduler(f"beta_schedule {kind!r}; expected linear, scaled_linear or squaredcos_cap_v2")


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """diffusers' ``rescale_zero_terminal_snr`` (Lin et al. 2023, Algorithm 1): shift and scale
    sqrt(alpha_cumprod) so the first is kept and the last is 0 (the last timestep is pure noise)."""
    sqrt_ac = np.cumprod(1.0 - betas, dtype=np.float32) ** np.float32(0.5)
    first, last = sqrt_ac[0], sqrt_ac[-1]
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    ac = sqrt_ac ** 2
    alphas = np.concatenate([ac[:1], ac[1:] / ac[:-1]])
    return (np.float32(1.0) - alphas).astype(np.float32)


def _alphas_cumprod(cfg: Mapping[str, Any], class_name: str) -> np.ndarray:
    betas = _betas(cfg)
    if not cfg.get("rescale_betas_zero_snr"):
        return np.cumprod(1.0 - betas, dtype=np.float32)
    ac = np.cumprod(1.0 - _rescale_zero_terminal_snr(betas), dtype=np.float32)
    if class_name != "DDIMScheduler":
        ac[-1] = 2.0 ** -24  # as diffusers' Euler schedulers do, so the last sigma stays finite
    return ac


def _spaced_timesteps(cfg: Mapping[str, Any], steps: int, dtype) -> np.ndarray:
    """Inference timesteps for diffusers' ``timestep_spacing`` options (descending)."""
    n = int(cfg.get("num_train_timesteps", 1000))
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing == "linspace":
        ts = np.linspace(0, n - 1, steps, dtype=np.float64 if dtype == np.int64 else np.float32)
        ts = ts.round()[::-1] if dtype == np.int64 else ts[::-1]
        return ts.copy().astype(dtype)
    if spacing == "leading":
        ratio = n // steps
        ts = (np.arange(0, steps) * ratio).round()[::-1].copy().astype(dtype)
        return ts + int(cfg.get("steps_offset", 0))
    if spacing == "trailing":
        ratio = n / steps
        return np.round(np.arange(n, 0, -ratio)).astype(dtype) - 1
    raise UnsupportedScheduler(f"timestep_spacing {spacing!r}; expected one of {SUPPORTED_SPACINGS}")


def _check_prediction(cfg: Mapping[str, Any], allowed=SUPPORTED_PREDICTIONS) -> str:
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in allowed:
        raise UnsupportedScheduler(f"prediction_type {pred!r}; expected one of {allowed}")
    return pred


@dataclasses.dataclass(frozen=True)
class Schedule:
    """An inference schedule: what the UNet sees at each step and how a step updates the latents.

    ``timesteps[i]`` (float32) is the UNet's timestep input at step ``i``; ``init_noise_sigma``
    scales unit-variance initial noise; ``needs_noise`` says whether :meth:`step` consumes fresh
    noise (ancestral samplers).
    """

    class_name: str
    timesteps: np.ndarray
    init_noise_sigma: float
    prediction_type: str
    needs_noise: bool
    # DDIM: alpha_cumprod at t and at the previous timestep, per step
    alpha_t: np.ndarray | None = None
    alpha_prev: np.ndarray | None = None
    clip_sample_range: float | None = None
    # Euler: sigmas per step plus the final one
    sigmas: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def scale_model_input(self, sample: np.ndarray, i: int) -> np.ndarray:
        """The UNet input at step ``i`` (Euler divides by sqrt(sigma^2 + 1); DDIM is identity)."""
        if self.sigmas is None:
            return sample
        return sample / np.float32((float(self.sigmas[i]) ** 2 + 1) ** 0.5)

    def step(self, model_output: np.ndarray, i: int, sample: np.ndarray,
             noise: np.ndarray | None = None) -> np.ndarray:
        """Latents after step ``i`` (float32, same shape as ``sample``).

        ``noise`` (standard normal, shape of ``sample``) is required when ``needs_noise``.
        """
        if self.needs_noise and noise is None:
            raise ValueError(f"{self.class_name} step {i} needs standard-normal noise of shape {sample.shape}")
        out = self._ddim(model_output, i, sample) if self.sigmas is None else self._euler(model_output, i, sample, noise)
        return out.astype(np.float32, copy=False)

    def _ddim(self, eps: np.ndarray, i: int, x: np.ndarray) -> np.ndarray:
        a_t, a_prev = np.float32(self.alpha_t[i]), np.float32(self.alpha_prev[i])
        b_t = np.float32(1) - a_t
        if self.prediction_type == "epsilon":
            x0 = (x - b_t ** 0.5 * eps) / a_t ** 0.5
            e = eps
        elif self.prediction_type == "sample":
            x0 = eps
            e = (x - a_t ** 0.5 * x0) / b_t ** 0.5
        else:  # v_prediction
            x0 = a_t ** 0.5 * x - b_t ** 0.5 * eps
            e = a_t ** 0.5 * eps + b_t ** 0.5 * x
        if self.clip_sample_range is not None:
            x0 = np.clip(x0, -self.clip_sample_range, self.clip_sample_range)
        return a_prev ** 0.5 * x0 + (np.float32(1) - a_prev) ** 0.5 * e

    def _euler(self, out: np.ndarray, i: int, x: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        sigma, sigma_next = np.float32(self.sigmas[i]), np.float32(self.sigmas[i + 1])
        if self.prediction_type == "epsilon":
            x0 = x - sigma * out
        elif self.prediction_type == "v_prediction":
            x0 = out * (-sigma / (sigma ** 2 + 1) ** 0.5) + x / (sigma ** 2 + 1)
        else:  # sample
            x0 = out
        derivative = (x - x0) / sigma
        if not self.needs_noise:
            return x + derivative * (sigma_next - sigma)
        sigma_up = (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5
        sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
        return x + derivative * (sigma_down - sigma) + noise * sigma_up


def build_schedule(scheduler_config: Mapping[str, Any], num_inference_steps: int) -> Schedule:
    """The schedule diffusers' ``<class>.set_timesteps(num_inference_steps)`` would produce.

    ``scheduler_config`` is a diffusers scheduler config dict with ``_class_name``. Raises
    :class:`UnsupportedScheduler` naming the class or option that is not implemented, and
    ``ValueError`` for a step count outside 1..num_train_timesteps.
    """
    cfg = dict(scheduler_config)
    name = cfg.get("_class_name")
    n_train = int(cfg.get("num_train_timesteps", 1000))
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= n_train:
        raise ValueError(f"num_inference_steps={num_inference_steps!r}; expected an int in 1..{n_train}")
    if name not in SUPPORTED_CLASSES:
        raise UnsupportedScheduler(f"scheduler class {name!r}; the numpy runtime supports {SUPPORTED_CLASSES}")
    if cfg.get("thresholding"):
        raise UnsupportedScheduler(f"{name}: thresholding=True is not supported by the numpy runtime")
    # diffusers' class defaults, for configs that omit the key
    cfg.setdefault("timestep_spacing", "leading" if name == "DDIMScheduler" else "linspace")
    ac = _alphas_cumprod(cfg, name)
    if name == "DDIMScheduler":
        pred = _check_prediction(cfg)
        ts = _spaced_timesteps(cfg, num_inference_steps, np.int64)
        final = np.float32(1.0) if cfg.get("set_alpha_to_one", True) else ac[0]
        prev = ts - n_train // num_inference_steps
        alpha_prev = np.array([ac[p] if p >= 0 else final for p in prev], dtype=np.float32)
        if pred == "epsilon" and (ac[ts] == 0).any():
            raise UnsupportedScheduler(f"{name}: prediction_type 'epsilon' with rescale_betas_zero_snr=True steps at "
                                       f"timestep {int(ts[ac[ts] == 0][0])}, where the image cannot be recovered from the noise "
                                       "prediction; use v_prediction (or another timestep_spacing)")
        clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", True) else None
        return Schedule(name, ts.astype(np.float32), 1.0, pred, False,
                        alpha_t=ac[ts].astype(np.float32), alpha_prev=alpha_prev, clip_sample_range=clip)
    # Euler family
    ancestral = name == "EulerAncestralDiscreteScheduler"
    pred = _check_prediction(cfg, ("epsilon", "v_prediction") if ancestral else SUPPORTED_PREDICTIONS)
    for opt in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        if cfg.get(opt):
            raise UnsupportedScheduler(f"{name}: {opt}=True is not supported by the numpy runtime")
    if cfg.get("interpolation_type", "linear") != "linear":
        raise UnsupportedScheduler(f"{name}: interpolation_type {cfg.get('interpolation_type')!r}; expected 'linear'")
    if cfg.get("timestep_type", "discrete") != "discrete":
        raise UnsupportedScheduler(f"{name}: timestep_type {cfg.get('timestep_type')!r}; expected 'discrete'")
    ts = _spaced_timesteps(cfg, num_inference_steps, np.float32)
    train_sigmas = np.array(((1 - ac) / ac) ** 0.5)
    sigmas = np.interp(ts, np.arange(0, len(train_sigmas)), train_sigmas)
    final_type = cfg.get("final_sigmas_type", "zero")
    if final_type == "zero":
        last = 0.0
    elif final_type == "sigma_min":
        last = float(((1 - ac[0]) / ac[0]) ** 0.5)
    else:
        raise UnsupportedScheduler(f"{name}: final_sigmas_type {final_type!r}; expected 'zero' or 'sigma_min'")
    sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
    max_sigma = float(sigmas.max())
    spacing = cfg.get("timestep_spacing", "linspace")
    init = max_sigma if spacing in ("linspace", "trailing") else (max_sigma ** 2 + 1) ** 0.5
    return Schedule(name, ts.astype(np.float32), float(np.float32(init)), pred, ancestral, sigmas=sigmas)
