"""Train the heavy or the light text-to-image model of the tiny cascade; reproducible from a seed.

- heavy: a UNet with classifier-free-guidance dropout, sampled with 25 DDIM steps and CFG; the
  role's base recipe is epsilon prediction with min-SNR weighting, and the published model goes
  on from it to v-prediction and the relation phases (``zoo.build.HEAVY_PHASES``);
- light: a smaller epsilon-prediction UNet (same recipe, no CFG dropout) sampled with TWO DDIM
  steps and no CFG: often right on one object; on multi-object prompts it is often unsure, and
  two steps of an unsure epsilon model show it as visible artefacts (blurred or garbled shapes,
  halos) that the real-vs-generated discriminator can see.

Options for experiments (docs/zoo.md, "relations"): ``--prediction-type v_prediction
--zero-terminal-snr`` (v-prediction over a zero-terminal-SNR schedule, which the serving runtime
supports too), ``--bidirectional-text`` (SiglipTextModel instead of CLIPTextModel) and
``--init-from <role>_state.pt`` (a warm start: weights only, fresh optimizer), ``--hard-share`` /
``--hard-kinds`` (the prompt mix) and ``--high-noise-share`` / ``--high-noise-min-t`` (how many
timesteps come from the pure-noise end, where only the text can place the objects: the
direction of a relation is learnt there). The published heavy model is a chain of such runs
(``zoo.build.HEAVY_PHASES``).

Both train the text encoder (CLIP; SigLIP with ``--bidirectional-text``) jointly with the UNet, keep an EMA of the weights, and save a
``StableDiffusionPipeline`` folder (EMA weights) every ``checkpoint_every`` steps, so training
can stop at any time with usable weights. ``--resume`` continues from the saved state.
Usage: ``python -m zoo.train_diffusion --role heavy --vae runs/tiny/vae --out runs/tiny/heavy``
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline
from tqdm import tqdm

from zoo.common import pick_device, seed_everything, to_tensor01
from zoo.domain import check_hard_kinds, eval_prompts, sample_batch
from zoo.models import TextEncoderConfig, UNetConfig, build_scheduler, build_text_encoder, build_unet
from zoo.sampling import SAMPLING, generate
from zoo.tokenizer import build_tokenizer


@dataclasses.dataclass(frozen=True)
class DiffusionTrainConfig:
    """One role's architecture and schedule. ``one_step``: train only at the last timestep
    (a one-step x0 regressor; the light model of the first committed cascade, kept as an option)."""

    unet: UNetConfig
    text: TextEncoderConfig
    prediction_type: str
    one_step: bool
    zero_terminal_snr: bool = False
    steps: int = 20000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    hard_share: float = 0.7
    hard_kinds: tuple[tuple[str, float], ...] | None = None  # shares of pair/triple/twin (None: domain.HARD_KINDS)
    # Share of samples drawn at high noise (t >= high_noise_min_t), where the text decides which
    # objects appear: the slow-to-learn part on a CPU budget; the rest is uniform over t.
    high_noise_share: float = 0.5
    high_noise_min_t: int = 600
    checkpoint_every: int = 250
    eval_every: int = 500
    seed: int = 3


ROLES: dict[str, DiffusionTrainConfig] = {
    # Heavy: cross-attention at every level (16x16 too), so the text can say where objects go,
    # and a 3-layer text encoder (relations bind two objects in word order).
    "heavy": DiffusionTrainConfig(UNetConfig(channels=(32, 64, 64), cross_attention=(True, True, True)),
                                  TextEncoderConfig(layers=3), "epsilon", False, seed=3),
    "light": DiffusionTrainConfig(UNetConfig(channels=(16, 32, 32)), TextEncoderConfig(), "epsilon", False,
                                  cfg_dropout=0.0, seed=4),
}


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)


def _pipeline(vae, text_encoder, tokenizer, unet, scheduler) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _evaluate(pipe, role: str, judge_path: Path | None, n_per_difficulty: int = 32) -> dict:
    """Judge fidelity by difficulty on the selection split (skipped without a judge): compositions
    neither the training stream nor the report's evaluation set contains."""
    if judge_path is None or not (judge_path / "config.json").is_file():
        return {}
    from zoo.judge import load_judge

    judge = load_judge(judge_path)
    prompts = eval_prompts(seed=123, n_per_difficulty=n_per_difficulty, split="select")
    images = generate(pipe, prompts, list(range(len(prompts))), SAMPLING[role])
    ok = judge.fidelity(images, prompts)
    return {"fidelity_easy": float(ok[:n_per_difficulty].mean()), "fidelity_hard": float(ok[n_per_difficulty:].mean())}


def _loss_weight(prediction_type: str, snr: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weight that gives the implied x0 error the weight clamp(snr, ., gamma).

    epsilon: min-SNR-gamma (Hang et al. 2023), min(snr, gamma) / snr. v_prediction: the x0
    weight is floored at 1 instead of min-SNR's snr, which vanishes at high noise (and is 0 at a
    zero terminal SNR): there the v target is (almost) -x0, the text-conditioned layout prior,
    which an epsilon loss weighs by snr ~ 0 and so barely trains (docs/zoo.md, "relations")."""
    if prediction_type == "epsilon":
        return torch.clamp(snr, max=gamma) / snr
    return torch.clamp(snr, min=1.0, max=gamma) / (snr + 1)


def _denoising_loss(cfg: DiffusionTrainConfig, scheduler, unet, text_states: torch.Tensor, latents: torch.Tensor,
                    snr: torch.Tensor) -> torch.Tensor:
    """The batch's denoising loss at sampled timesteps (a share drawn from the high-noise end, which
    the few-step light sampler starts from), weighted by :func:`_loss_weight`."""
    device = latents.device
    noise = torch.randn_like(latents)
    if cfg.one_step:
        t = torch.full((len(latents),), scheduler.config.num_train_timesteps - 1, device=device)
    else:
        n_t = scheduler.config.num_train_timesteps
        t = torch.randint(0, n_t, (len(latents),), device=device)
        high = torch.randint(cfg.high_noise_min_t, n_t, (len(latents),), device=device)
        t = torch.where(torch.rand(len(latents), device=device) < cfg.high_noise_share, high, t)
    pred = unet(scheduler.add_noise(latents, noise, t), t, text_states).sample
    target = {"epsilon": noise, "sample": latents}.get(cfg.prediction_type)
    if target is None:  # v_prediction
        target = scheduler.get_velocity(latents, noise, t)
    per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
    if cfg.min_snr_gamma > 0 and cfg.prediction_type != "sample":
        per_sample = per_sample * _loss_weight(cfg.prediction_type, snr[t], cfg.min_snr_gamma)
    return per_sample.mean()


def _warm_start(state_file: Path, text_encoder, unet, ema_te, ema_unet) -> None:
    """Load the weights of another run's ``<role>_state.pt`` (not its optimizer or step; the EMA
    starts at the weights). A causal (CLIP) encoder's weights load into the bidirectional one
    (SigLIP) but for its pooling head, which the pipeline does not use."""
    st = torch.load(state_file, weights_only=False)
    for m, k in ((text_encoder, "te"), (unet, "unet"), (ema_te, "te"), (ema_unet, "unet")):
        missing, unexpected = m.load_state_dict(st[k], strict=False)
        if unexpected or any(not n.startswith("head.") for n in missing):
            raise ValueError(f"{state_file}: {k} does not fit (missing {missing}, unexpected {unexpected})")


def train(role: str, cfg: DiffusionTrainConfig, vae_path: Path, out: Path, device: torch.device,
          judge_path: Path | None, resume: bool, keep_snapshots: bool = False, init_from: Path | None = None) -> None:
    """Train ``role`` for ``cfg.steps`` steps, checkpointing the EMA pipeline to ``out``.

    ``keep_snapshots``: also keep every checkpoint as ``<out>_snap_<step>`` (for select_checkpoint).
    """
    rng = seed_everything(cfg.seed)
    tokenizer = build_tokenizer()
    vae = AutoencoderKL.from_pretrained(vae_path).to(device).eval().requires_grad_(False)
    text_encoder = build_text_encoder(cfg.text, tokenizer).to(device)
    unet = build_unet(cfg.unet, cfg.text.hidden_dim).to(device)
    scheduler = build_scheduler(cfg.prediction_type, cfg.zero_terminal_snr)
    ema_te, ema_unet = copy.deepcopy(text_encoder).eval(), copy.deepcopy(unet).eval()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    lr_at = lambda s: min(1.0, (s + 1) / cfg.warmup_steps)  # noqa: E731 (warmup, then constant)
    state_file = out.parent / f"{out.name}_state.pt"
    start = 0
    if init_from is not None:
        _warm_start(init_from, text_encoder, unet, ema_te, ema_unet)
    if resume and state_file.is_file():
        st = torch.load(state_file, weights_only=False)
        for m, k in ((text_encoder, "te"), (unet, "unet"), (ema_te, "ema_te"), (ema_unet, "ema_unet"), (opt, "opt")):
            m.load_state_dict(st[k])
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        start = st["step"]
    alphas = scheduler.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    empty_ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids.to(device)
    log = open(out.parent / f"{out.name}.log.jsonl", "a")
    t0 = time.time()
    for step in (bar := tqdm(range(start, cfg.steps), desc=role, initial=start, total=cfg.steps)):
        images, captions, _ = sample_batch(rng, cfg.batch_size, hard_share=cfg.hard_share,
                                           hard_kinds=dict(cfg.hard_kinds) if cfg.hard_kinds else None)
        with torch.no_grad():
            x = to_tensor01(images, device) * 2 - 1
            latents = vae.encode(x).latent_dist.sample() * vae.config.scaling_factor
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        if cfg.cfg_dropout > 0:
            drop = torch.rand(len(ids), device=device) < cfg.cfg_dropout
            ids = torch.where(drop[:, None], empty_ids, ids)
        loss = _denoising_loss(cfg, scheduler, unet, text_encoder(ids).last_hidden_state, latents, snr)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_te, text_encoder, decay)
        _ema_update(ema_unet, unet, decay)
        done = step + 1
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {"step": done, "loss": loss.item(), "elapsed_s": time.time() - t0}
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            pipe = _pipeline(vae, ema_te, tokenizer, ema_unet, scheduler)
            pipe.save_pretrained(out)
            if keep_snapshots:
                pipe.save_pretrained(out.parent / f"{out.name}_snap_{done}")
            torch.save({"te": text_encoder.state_dict(), "unet": unet.state_dict(), "ema_te": ema_te.state_dict(),
                        "ema_unet": ema_unet.state_dict(), "opt": opt.state_dict(), "step": done,
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, state_file)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                pipe.set_progress_bar_config(disable=True)
                record.update(_evaluate(pipe, role, judge_path))
            log.write(json.dumps(record) + "\n")
            log.flush()
        elif step % 25 == 0:
            log.write(json.dumps(record) + "\n")
            log.flush()


def parse_hard_kinds(text: str) -> dict[str, float]:
    """``pair=0.8,triple=0.1,twin=0.1`` -> shares (ValueError naming the text when malformed)."""
    try:
        shares = {k.strip(): float(v) for k, v in (kv.split("=") for kv in text.split(","))}
    except ValueError:
        raise ValueError(f"--hard-kinds {text!r}; expected kind=share pairs, e.g. pair=0.8,triple=0.1,twin=0.1") from None
    return check_hard_kinds(shares)


def _with_options(cfg: DiffusionTrainConfig, a: argparse.Namespace) -> DiffusionTrainConfig:
    """``cfg`` with the experiment options of the command line, checked before anything loads."""
    if a.prediction_type is not None:
        cfg = dataclasses.replace(cfg, prediction_type=a.prediction_type)
    if a.zero_terminal_snr is not None:
        cfg = dataclasses.replace(cfg, zero_terminal_snr=a.zero_terminal_snr)
    build_scheduler(cfg.prediction_type, cfg.zero_terminal_snr)  # refuses zero terminal SNR without v
    if a.hard_share is not None:
        if not 0.0 <= a.hard_share <= 1.0:
            raise ValueError(f"--hard-share {a.hard_share}; expected a share in [0, 1]")
        cfg = dataclasses.replace(cfg, hard_share=a.hard_share)
    if a.hard_kinds is not None:
        cfg = dataclasses.replace(cfg, hard_kinds=tuple(parse_hard_kinds(a.hard_kinds).items()))
    if a.bidirectional_text:
        cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, causal=False))
    if a.high_noise_share is not None:
        if not 0.0 <= a.high_noise_share <= 1.0:
            raise ValueError(f"--high-noise-share {a.high_noise_share}; expected a share in [0, 1]")
        cfg = dataclasses.replace(cfg, high_noise_share=a.high_noise_share)
    if a.high_noise_min_t is not None:
        if not 0 <= a.high_noise_min_t < 1000:
            raise ValueError(f"--high-noise-min-t {a.high_noise_min_t}; expected a timestep in [0, 1000)")
        cfg = dataclasses.replace(cfg, high_noise_min_t=a.high_noise_min_t)
    return cfg


def experiment_parser() -> argparse.ArgumentParser:
    """The experiment options (no help flag: a parent of :func:`main`'s parser and the parser of
    :func:`phase_config`, so ``zoo.build``'s phases and the overlap replay read them the same way)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--prediction-type", choices=("epsilon", "v_prediction", "sample"), default=None)
    p.add_argument("--zero-terminal-snr", action="store_true", default=None)
    p.add_argument("--bidirectional-text", action="store_true", help="SiglipTextModel instead of CLIPTextModel")
    p.add_argument("--hard-share", type=float, default=None, help="share of hard prompts in a batch")
    p.add_argument("--hard-kinds", default=None, help="shares of the hard kinds, e.g. pair=0.8,triple=0.1,twin=0.1")
    p.add_argument("--high-noise-share", type=float, default=None, help="share of timesteps drawn from the high-noise end")
    p.add_argument("--high-noise-min-t", type=int, default=None, help="where the high-noise end starts (0-999)")
    return p


class _RaisingParser(argparse.ArgumentParser):
    """A parser that raises ValueError instead of printing usage and exiting."""

    def error(self, message: str):
        raise ValueError(message)


def phase_config(role: str, options: Sequence[str]) -> DiffusionTrainConfig:
    """``role``'s config with the experiment ``options`` (command-line words) applied; ValueError
    naming the bad option."""
    parser = _RaisingParser(add_help=False, allow_abbrev=False, parents=[experiment_parser()])
    try:
        a, rest = parser.parse_known_args(list(options))
    except ValueError as e:
        raise ValueError(f"train_diffusion options {list(options)!r}: {e}") from None
    if rest:
        raise ValueError(f"train_diffusion options {list(options)!r}: unknown {rest!r}")
    return _with_options(ROLES[role], a)


def main() -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, parents=[experiment_parser()], allow_abbrev=False)
    p.add_argument("--role", choices=sorted(ROLES), required=True)
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--judge", type=Path, default=None, help="judge folder for periodic fidelity logging")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init-from", type=Path, default=None, help="a <role>_state.pt to start the weights from")
    p.add_argument("--keep-snapshots", action="store_true", help="keep every checkpoint as <out>_snap_<step>")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = ROLES[a.role]
    if a.steps is not None:
        cfg = dataclasses.replace(cfg, steps=a.steps)
    if a.seed is not None:
        cfg = dataclasses.replace(cfg, seed=a.seed)
    try:
        cfg = _with_options(cfg, a)
    except ValueError as e:
        p.error(str(e))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    train(a.role, cfg, a.vae, a.out, pick_device(a.device), a.judge, a.resume, a.keep_snapshots, a.init_from)


if __name__ == "__main__":
    main()
