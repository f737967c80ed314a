"""The numpy schedulers reproduce diffusers' DDIM / Euler / Euler-ancestral schedules and steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

from serving.schedulers import UnsupportedScheduler, build_schedule

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
CLASSES = {"DDIMScheduler": DDIMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler,
           "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler}


def _pair(cls_name: str, steps: int, **kw):
    cls = CLASSES[cls_name]
    ref = cls(**SD_BETAS, **kw)
    ref.set_timesteps(steps)
    return ref, build_schedule({**ref.config, "_class_name": cls_name}, steps)


def _run_both(ref, ours, shape=(2, 4, 8, 8), seed=0):
    """Run every step of both samplers on the same random 'model outputs' (and ancestral noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * ref.init_noise_sigma
    xn = x.numpy().copy()
    worst = 0.0
    for i, t in enumerate(ref.timesteps):
        worst = max(worst, float(np.abs(ref.scale_model_input(x, t).numpy() - ours.scale_model_input(xn, i)).max()))
        out = torch.randn(shape, generator=g)
        if ours.needs_noise:
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(1000 + i))
            x = ref.step(out, t, x, generator=torch.Generator().manual_seed(1000 + i)).prev_sample
            xn = ours.step(out.numpy(), i, xn, noise=noise.numpy())
        else:
            x = ref.step(out, t, x).prev_sample
            xn = ours.step(out.numpy(), i, xn)
        worst = max(worst, float(np.abs(x.numpy() - xn).max()) / max(1.0, float(x.abs().max())))
    return worst


@pytest.mark.parametrize("cls_name", list(CLASSES))
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_schedule_timesteps_and_noise_scale_match_diffusers(cls_name, spacing, steps):
    ref, ours = _pair(cls_name, steps, timestep_spacing=spacing)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy().astype(np.float32), rtol=0, atol=1e-3)
    assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-5)


@pytest.mark.parametrize("cls_name", list(CLASSES))
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_denoising_steps_match_diffusers(cls_name, spacing, prediction):
    ref, ours = _pair(cls_name, 4, timestep_spacing=spacing, prediction_type=prediction)
    assert _run_both(ref, ours) < 1e-4


@pytest.mark.parametrize("cls_name", list(CLASSES))
@pytest.mark.parametrize("steps", [1, 2, 25])
def test_zero_terminal_snr_v_prediction_matches_diffusers(cls_name, steps):
    ref, ours = _pair(cls_name, steps, timestep_spacing="trailing", prediction_type="v_prediction",
                      rescale_betas_zero_snr=True)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy().astype(np.float32), rtol=0, atol=1e-3)
    assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-5)
    # Euler's first sigma is 4096 here (diffusers clamps the last alpha_cumprod to 2**-24): the
    # first step cancels latents of magnitude ~1e4 in float32 on both sides, so the two agree to
    # float32's resolution at that scale (~1e-3), not to 1e-4.
    assert _run_both(ref, ours) < (1e-4 if cls_name == "DDIMScheduler" else 2e-3)


def test_ddim_epsilon_at_a_pure_noise_timestep_is_refused_not_run():
    cfg = {"_class_name": "DDIMScheduler", **SD_BETAS, "rescale_betas_zero_snr": True,
           "timestep_spacing": "trailing", "prediction_type": "epsilon"}
    with pytest.raises(UnsupportedScheduler, match="v_prediction"):
        build_schedule(cfg, 4)
    build_schedule({**cfg, "timestep_spacing": "leading"}, 4)  # never reaches t = 999: fine


def test_ddim_sample_prediction_and_clipping_match_diffusers():
    ref, ours = _pair("DDIMScheduler", 3, prediction_type="sample", clip_sample=True, clip_sample_range=0.5,
                      set_alpha_to_one=True, timestep_spacing="trailing")
    assert ours.clip_sample_range == 0.5
    assert _run_both(ref, ours) < 1e-4


def test_ancestral_step_without_noise_is_refused():
    _, ours = _pair("EulerAncestralDiscreteScheduler", 2)
    with pytest.raises(ValueError, match="needs standard-normal noise"):
        ours.step(np.zeros((1, 4, 2, 2), np.float32), 0, np.zeros((1, 4, 2, 2), np.float32))


@pytest.mark.parametrize("cfg, match", [
    ({"_class_name": "PNDMScheduler"}, "PNDMScheduler"),
    ({"_class_name": "DDIMScheduler", "thresholding": True}, "thresholding"),
    ({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}, "use_karras_sigmas"),
    ({"_class_name": "DDIMScheduler", "timestep_spacing": "quadratic"}, "quadratic"),
    ({"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}, "sigmoid"),
])
def test_unsupported_scheduler_options_are_named_in_the_error(cfg, match):
    with pytest.raises(UnsupportedScheduler, match=match):
        build_schedule(cfg, 4)


def test_step_count_outside_training_range_is_refused():
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        build_schedule({"_class_name": "DDIMScheduler"}, 0)
