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
    (["--high-noise-share", "-0.1"], "high-noise-share"),
    (["--high-noise-min-t", "1000"], "high-noise-min-t"),
])
def test_bad_experiment_options_are_refused_before_training_starts(argv, match, capsys, tmp_path, monkeypatch):
    from zoo import train_diffusion

    monkeypatch.setattr("sys.argv", ["train_diffusion", "--role", "heavy", "--vae", str(tmp_path / "none"),
                                     "--out", str(tmp_path / "h"), *argv])
    with pytest.raises(SystemExit):
        train_diffusion.main()
    assert match in capsys.readouterr().err
    assert not (tmp_path / "h_state.pt").exists()


def test_phase_config_applies_a_phases_options_to_the_role_and_names_bad_ones():
    from zoo.train_diffusion import ROLES, phase_config

    cfg = phase_config("heavy", ["--prediction-type", "v_prediction", "--zero-terminal-snr", "--bidirectional-text",
                                 "--hard-kinds", "pair=1,triple=0,twin=0", "--high-noise-min-t", "960"])
    assert cfg.prediction_type == "v_prediction" and cfg.zero_terminal_snr and not cfg.text.causal
    assert dict(cfg.hard_kinds)["pair"] == 1.0 and cfg.high_noise_min_t == 960
    assert cfg.unet == ROLES["heavy"].unet and phase_config("heavy", []) == ROLES["heavy"]
    with pytest.raises(ValueError, match="--no-such-option"):
        phase_config("heavy", ["--no-such-option"])
    with pytest.raises(ValueError, match="unknown"):  # no abbreviations: a phase says what it sets
        phase_config("heavy", ["--hard-s", "0.3"])
    with pytest.raises(ValueError, match="invalid float"):
        phase_config("heavy", ["--hard-share", "x"])


@pytest.mark.parametrize("n_noise", [0, 1, 3])
def test_pure_noise_probe_needs_an_even_number_of_noises_to_split_in_halves(n_noise):
    from zoo.relation_probe import pure_noise_flip_change

    with pytest.raises(ValueError, match="n_noise"):
        pure_noise_flip_change(None, ["a small red circle left of a large blue square on a black background"], n_noise)


def test_heavy_chain_starts_each_phase_from_the_previous_ones_state_and_ends_in_work_heavy(tmp_path):
    from zoo.build import HEAVY_PHASES, Phase, STEPS, heavy_commands

    phases = (Phase("a", 5), Phase("b", 7, ("--bidirectional-text",)), Phase("c", 2))
    cmds = heavy_commands(tmp_path, "cpu", "2", phases)
    outs = [c[c.index("--out") + 1] for c in cmds]
    assert outs == [str(tmp_path / "heavy_a"), str(tmp_path / "heavy_b"), str(tmp_path / "heavy")]
    assert "--init-from" not in cmds[0]
    assert cmds[1][cmds[1].index("--init-from") + 1] == str(tmp_path / "heavy_a_state.pt")
    assert cmds[2][cmds[2].index("--init-from") + 1] == str(tmp_path / "heavy_b_state.pt")
    assert "--bidirectional-text" in cmds[1] and "--bidirectional-text" not in cmds[2]
    assert STEPS["heavy"] == sum(p.steps for p in HEAVY_PHASES)


def test_the_overlap_replay_of_a_chain_restarts_each_phases_stream_with_its_prompt_mix():
    from zoo.domain import parse_caption as parse
    from zoo.report_overlap import _capped, _chain_stream
    from zoo.train_diffusion import phase_config

    assert _capped([3, 4, 5], 5) == [3, 2, 0] and _capped([3, 4], 100) == [3, 4]
    base, pairs = phase_config("heavy", []), phase_config("heavy", ["--hard-share", "1", "--hard-kinds",
                                                                   "pair=1,triple=0,twin=0"])
    stream = _chain_stream("heavy", [(base, 2), (pairs, 2)])
    n = base.batch_size * 2
    assert len(stream["captions"]) == 2 * n and len(stream["config"]["phases"]) == 2
    assert all(parse(c).relation is not None for c in stream["captions"][n:])  # the pair phase draws pairs only
    assert not all(parse(c).relation is not None for c in stream["captions"][:n])
