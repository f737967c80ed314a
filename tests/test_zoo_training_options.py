"""Training options of the tiny cascade: v-prediction loss weight, the bidirectional text encoder,
warm starts, and the relation probe (with stand-in samplers built from the domain's renderer)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zoo.domain import parse_caption, render
from zoo.judge import load_judge
from zoo.models import TextEncoderConfig, build_scheduler, build_text_encoder
from zoo.relation_probe import flipped, pair_prompts, probe
from zoo.tokenizer import build_tokenizer
from zoo.train_diffusion import _loss_weight


def test_v_prediction_keeps_full_weight_at_zero_snr_where_min_snr_would_drop_it():
    snr = torch.tensor([0.0, 0.5, 1.0, 4.0, 100.0])
    w = _loss_weight("v_prediction", snr, gamma=5.0)
    # implied x0 weight = w * (snr + 1) = clamp(snr, 1, 5)
    assert torch.allclose(w * (snr + 1), torch.tensor([1.0, 1.0, 1.0, 4.0, 5.0]))
    eps = _loss_weight("epsilon", snr[1:], gamma=5.0)
    assert torch.allclose(eps * snr[1:], torch.tensor([0.5, 1.0, 4.0, 5.0]))  # min-SNR-5 on x0


def test_zero_terminal_snr_schedule_ends_in_pure_noise_and_needs_v_prediction():
    sched = build_scheduler("v_prediction", zero_terminal_snr=True)
    assert float(sched.alphas_cumprod[-1]) == 0.0
    assert float(build_scheduler("v_prediction").alphas_cumprod[-1]) > 0.0
    with pytest.raises(ValueError, match="v_prediction"):
        build_scheduler("epsilon", zero_terminal_snr=True)


def _states(encoder, tokenizer, caption: str) -> torch.Tensor:
    ids = tokenizer([caption], padding="max_length", max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids).last_hidden_state[0]


@pytest.mark.parametrize("causal", [True, False])
def test_only_the_bidirectional_encoder_lets_a_word_see_the_words_after_it(causal):
    torch.manual_seed(0)
    tok = build_tokenizer()
    enc = build_text_encoder(TextEncoderConfig(layers=2, causal=causal), tok).eval()
    a = _states(enc, tok, "a small red circle left of a large blue square on a black background")
    b = _states(enc, tok, "a small red circle right of a large blue square on a black background")
    before = (a[:5] - b[:5]).abs().max().item()  # start token .. "circle": before the relation word
    assert (before == 0.0) if causal else (before > 1e-4)


def test_a_causal_encoders_weights_warm_start_the_bidirectional_one():
    tok = build_tokenizer()
    clip = build_text_encoder(TextEncoderConfig(layers=2), tok)
    siglip = build_text_encoder(TextEncoderConfig(layers=2, causal=False), tok)
    missing, unexpected = siglip.load_state_dict(clip.state_dict(), strict=False)
    assert not unexpected and missing and all(n.startswith("head.") for n in missing)


def test_flipping_a_prompt_swaps_only_the_relation_word():
    p = "a small red circle above a large blue square on a white background"
    assert flipped(p) == "a small red circle below a large blue square on a white background"
    assert flipped(flipped(p)) == p
    prompts = pair_prompts(12)
    assert len(prompts) == 12 and all(parse_caption(q).relation for q in prompts)


def _renderer(ignore_relation: bool):
    """A stand-in text-to-image model: the domain's renderer, seeded per image; with
    ``ignore_relation`` it draws every relation as ``left of`` (a model that ignores the word)."""
    def sample(prompts, seeds):
        out = []
        for p, s in zip(prompts, seeds):
            scene = parse_caption(p)
            if ignore_relation:
                scene = dataclasses.replace(scene, relation="left of")
            out.append(render(scene, np.random.default_rng(s)))
        return np.stack(out)
    return sample


def test_relation_probe_separates_a_model_that_reads_the_word_from_one_that_ignores_it():
    judge, prompts = load_judge("zoo/weights/judge"), pair_prompts(40)
    reads = probe(_renderer(ignore_relation=False), judge, prompts)
    ignores = probe(_renderer(ignore_relation=True), judge, prompts)
    assert reads["shown"] >= 0.95 and reads["flip_follows"] >= 0.95
    assert ignores["flip_follows"] == 0.0 and ignores["flip_pixel_change"] == 0.0
    assert reads["flip_pixel_change"] > 0.5


@pytest.mark.parametrize("argv, match", [
    (["--zero-terminal-snr"], "v_prediction"),
    (["--hard-kinds", "pair"], "kind=share"),
    (["--hard-kinds", "pair=x"], "kind=share"),
    (["--hard-kinds", "pair=0.5"], "hard_kinds"),
    (["--hard-share", "1.5"], "hard-share"),
])
def test_bad_experiment_options_are_refused_before_training_starts(argv, match, capsys, tmp_path, monkeypatch):
    from zoo import train_diffusion

    monkeypatch.setattr("sys.argv", ["train_diffusion", "--role", "heavy", "--vae", str(tmp_path / "none"),
                                     "--out", str(tmp_path / "h"), *argv])
    with pytest.raises(SystemExit):
        train_diffusion.main()
    assert match in capsys.readouterr().err
    assert not (tmp_path / "h_state.pt").exists()
