"""Tiny random SD and SDXL pipelines exported end to end: verified against diffusers, served by the runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest

from export import build
from serving.config import ConfigError, SchedulerChoice, StageConfig, load_cascade, parse_cascade
from export.exporter import IncompatibleShapes, UnsupportedPipeline, geometry, load_pipeline
from serving import StaleArtifacts, load_discriminator, load_stage
from export.testing import tiny_sd_pipeline


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_export_reproduces_pytorch_and_diffusers(tiny_exported, kind):
    _, repo = tiny_exported(kind)
    for stage in ("light", "heavy"):
        v = json.loads((repo / stage / "1" / "artifacts" / "verification.json").read_text())
        assert v["pipeline_class"] == ("StableDiffusionXLPipeline" if kind == "sdxl" else "StableDiffusionPipeline")
        assert all(c["onnx_checker"] == "ok" for c in v["onnx"]) and len(v["onnx"]) == 3
        for comp in v["components"]:
            assert comp["max_rel_err"] < 1e-4, comp
        assert v["tokenizers"]["mismatched_prompts"] == 0
        assert v["end_to_end"]["min_psnr_db"] >= 40.0 and v["end_to_end"]["passed"]
    d = json.loads((repo / "discriminator" / "1" / "artifacts" / "verification.json").read_text())
    assert d["components"][0]["max_rel_err"] < 1e-4


def test_image_depends_only_on_prompt_and_seed(tiny_exported):
    _, repo = tiny_exported("sd")
    heavy = load_stage(repo / "heavy" / "1" / "artifacts")
    both = heavy.generate_float(["a red circle", "two blue squares"], [7, 8])
    alone = heavy.generate_float(["two blue squares"], [8])
    np.testing.assert_allclose(both[1], alone[0], atol=1e-4)
    other_seed = heavy.generate_float(["two blue squares"], [9])
    assert np.abs(other_seed - alone).max() > 1e-2
    img = heavy.generate(["a red circle"], [7])
    assert img.dtype == np.uint8 and img.shape == (1, 32, 32, 3)


def test_long_prompts_are_truncated_to_the_text_encoder_context(tiny_exported):
    _, repo = tiny_exported("sd")
    light = load_stage(repo / "light" / "1" / "artifacts")
    n = light.spec.tokenizers[0].max_length_tokens
    ids = light.tokenize(["a red circle " * 50, "a"])[0]
    assert ids.shape == (2, n)
    assert ids[0, -1] == light.tokenizers[0].token_to_id("<|endoftext|>")


@pytest.mark.parametrize("seeds, match", [([-1], r"seed -1"), ([2**32], r"seed 4294967296"), ([1, 2], "2 seeds")])
def test_bad_seeds_are_refused(tiny_exported, seeds, match):
    _, repo = tiny_exported("sd")
    light = load_stage(repo / "light" / "1" / "artifacts")
    with pytest.raises(ValueError, match=match):
        light.generate(["a"], seeds)


def test_discriminator_runtime_scores_and_resizes(tiny_exported):
    _, repo = tiny_exported("sd")
    disc = load_discriminator(repo / "discriminator" / "1" / "artifacts")
    rng = np.random.default_rng(0)
    conf = disc.confidence(rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    assert conf.shape == (3,) and conf.dtype == np.float32 and np.all((conf > 0) & (conf < 1))
    assert disc.confidence(rng.integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)).shape == (2,)
    with pytest.raises(ValueError, match=r"expected uint8 \(B, H, W, 3\)"):
        disc.confidence(np.zeros((1, 32, 32, 3), np.float32))


def test_stale_artifacts_are_refused_and_reexported(tiny_exported, tmp_path):
    cfg_path, repo = tiny_exported("sd")
    with pytest.raises(StaleArtifacts, match="config changed since the export"):
        load_stage(repo / "light" / "1" / "artifacts", expected_hash="0000000000000000")
    cascade = load_cascade(cfg_path)
    logs: list[str] = []
    build.export_cascade(cascade, repo, log=logs.append)  # same config: nothing to do
    assert sum("up to date" in m for m in logs) == 3
    changed = tmp_path / "changed.yaml"
    changed.write_text(cfg_path.read_text().replace("slo_ms: 5000", "slo_ms: 6000"))
    new = load_cascade(changed)
    assert build.repository_status(new, repo)["light"].startswith("stale (exported from")
    logs.clear()
    build.export_cascade(new, repo, build.ExportOptions(stages=("discriminator",)), log=logs.append)
    assert any(m.startswith("WARNING discriminator: replacing artifacts stale") for m in logs)
    assert build.repository_status(new, repo)["discriminator"] == "up-to-date"
    build.export_cascade(cascade, repo, build.ExportOptions(stages=("discriminator",)), log=logs.append)


def test_unsupported_pipeline_class_and_missing_folder_are_clear_errors(tmp_path):
    (tmp_path / "sd3").mkdir()
    (tmp_path / "sd3" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    stage = StageConfig(str(tmp_path / "sd3"), 4, 1.0, SchedulerChoice(), 32, 32)
    with pytest.raises(UnsupportedPipeline, match="StableDiffusion3Pipeline"):
        load_pipeline(stage)
    with pytest.raises(ConfigError, match="no such local folder"):
        load_pipeline(StageConfig(str(tmp_path / "absent"), 4, 1.0, SchedulerChoice(), 32, 32))


def test_image_size_the_unet_cannot_downsample_is_refused():
    pipe = tiny_sd_pipeline()
    with pytest.raises(IncompatibleShapes, match=r"latents 17x16"):
        geometry(pipe, StageConfig("tiny", 1, 1.0, SchedulerChoice(), 34, 32))


def test_cli_status_reports_an_exported_repository(tiny_exported, capsys):
    from export.cli import main

    cfg_path, repo = tiny_exported("sd")
    assert main(["status", "--cascade", str(cfg_path), "--repo", str(repo)]) == 0
    assert capsys.readouterr().out.count("up-to-date") == 3
    assert main(["export", "--cascade", str(repo / "nope.yaml"), "--repo", str(repo)]) == 2


def test_ancestral_sampler_matches_diffusers_with_the_same_step_noise(tiny_exported, tmp_path):
    cfg_path, _ = tiny_exported("sd")
    text = cfg_path.read_text().replace("name: ddim", "name: euler_ancestral")
    assert "euler_ancestral" in text
    edited = tmp_path / "ancestral.yaml"
    edited.write_text(text)
    results = build.export_cascade(load_cascade(edited), tmp_path / "repo", build.ExportOptions(stages=("light",)),
                                   log=lambda _m: None)
    e2e = results["light"]["end_to_end"]
    assert e2e["passed"] and e2e["min_psnr_db"] >= 40.0
    spec = json.loads((tmp_path / "repo" / "light" / "1" / "artifacts" / "stage.json").read_text())
    assert spec["scheduler"]["_class_name"] == "EulerAncestralDiscreteScheduler"


def test_a_runtime_that_diverges_from_diffusers_fails_verification_and_keeps_old_artifacts(
        tiny_exported, tmp_path, monkeypatch):
    cfg_path, _ = tiny_exported("sd")
    cascade = load_cascade(cfg_path)
    repo = tmp_path / "repo"
    build.export_cascade(cascade, repo, build.ExportOptions(stages=("light",), verify=False), log=lambda _m: None)
    before = (repo / "light" / "1" / "artifacts" / "stage.json").read_text()
    from export import exporter

    real = exporter.scheduler_config

    def wrong_spacing(pipe):  # the runtime would sample other timesteps than diffusers
        return {**real(pipe), "timestep_spacing": "leading"}

    monkeypatch.setattr(exporter, "scheduler_config", wrong_spacing)
    with pytest.raises(build.VerificationFailed, match=r"light: end-to-end PSNR .* dB < 40"):
        build.export_cascade(cascade, repo, build.ExportOptions(stages=("light",), force=True), log=lambda _m: None)
    assert (repo / "light" / "1" / "artifacts" / "stage.json").read_text() == before


def _export_verified(tmp_path, pipe, name: str, steps: int, guidance_scale: float, scheduler) -> dict:
    """Save ``pipe``, export it as the light stage of a one-pipeline cascade, return its verification."""
    pipe.save_pretrained(tmp_path / name)
    stage = {"model": str(tmp_path / name), "steps": steps, "guidance_scale": guidance_scale, "height": 32,
             "width": 32, "scheduler": scheduler}
    cascade = parse_cascade({"name": name, "slo_ms": 5000, "light": stage, "heavy": stage,
                             "discriminator": {"path": "unused", "image_size": 32}}, str(tmp_path / "c.yaml"))
    return build.export_cascade(cascade, tmp_path / "repo", build.ExportOptions(stages=("light",)),
                                log=lambda _m: None)["light"]


def test_sd_pipeline_with_a_tiny_autoencoder_exports_like_sdxs(tmp_path):
    result = _export_verified(tmp_path, tiny_sd_pipeline(vae="tiny"), "sdxs-like", 1, 0.0,
                              {"name": "ddim", "timestep_spacing": "trailing", "set_alpha_to_one": True})
    assert result["end_to_end"]["min_psnr_db"] >= 40.0
    assert max(c["max_rel_err"] for c in result["components"]) < 1e-4


def test_retrained_weights_make_the_repository_stale(tiny_exported, tmp_path):
    cfg_path, exported = tiny_exported("sd")
    cascade = load_cascade(cfg_path)
    assert build.repository_status(cascade, exported)["light"] == "up-to-date"
    weights = next(p for p in (cfg_path.parent / "light" / "unet").iterdir() if p.suffix == ".safetensors")
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of the UNet changed
        assert build.repository_status(cascade, exported)["light"] == "stale (weights changed since export)"
        assert build.repository_status(cascade, exported)["heavy"] == "up-to-date"
    finally:
        weights.write_bytes(original)
    assert build.repository_status(cascade, exported)["light"] == "up-to-date"


def test_a_bidirectional_text_encoder_with_v_prediction_and_zero_terminal_snr_exports_verified(tmp_path):
    """The options the tiny heavy model was tried with (docs/zoo.md, "Relations"): a SiglipTextModel
    text encoder and a v-prediction DDIM over a zero-terminal-SNR schedule, through export + verify."""
    import torch
    from diffusers import DDIMScheduler
    from transformers import SiglipTextConfig, SiglipTextModel

    pipe = tiny_sd_pipeline(seed=3)
    c = pipe.text_encoder.config
    torch.manual_seed(0)
    pipe.text_encoder = SiglipTextModel(SiglipTextConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        max_position_embeddings=c.max_position_embeddings, projection_size=c.hidden_size)).eval()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction",
                                               rescale_betas_zero_snr=True, timestep_spacing="trailing")
    result = _export_verified(tmp_path, pipe, "bidirectional-v", 3, 3.0, "from_model")
    assert result["end_to_end"]["min_psnr_db"] >= 40.0
    assert max(c["max_rel_err"] for c in result["components"]) < 1e-4
