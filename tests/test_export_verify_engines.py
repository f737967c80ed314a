"""Export verifies what will serve: an engine built ahead of time that returns NaN/inf, or strays
from the fp32 reference, fails the export with the stage and the component named. The engines are
planted (ONNX Runtime under the ``aot`` name, outputs corrupted) so that no compile is needed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export import build, engine_builds
from serving import engines
from serving.config import load_cascade


def _plant(monkeypatch, corrupt) -> list[str]:
    """Make ``--cpu-aot`` "build" placeholder packages, served by ONNX Runtime with ``corrupt(component, outputs)``.
    Returns the list of components "built" (appended to as the export runs)."""
    builds: list[str] = []

    def fake_build(comp, out_dir: Path):
        builds.append(comp.name)
        (out_dir / f"{comp.name}.aot.cpu.pt2").write_bytes(b"planted")
        return {"aot": f"{comp.name}.aot.cpu.pt2"}, {"aot": {"device": "cpu", "dtype": "float32", "max_batch": 32}}

    class PlantedAot:
        backend = "aot"

        def __init__(self, path, input_names, output_names, **_kwargs):
            self.component = Path(path).name.split(".")[0]
            self.ort = engines.OrtEngine(Path(path).parent / f"{self.component}.onnx")
            self.input_names, self.output_names = tuple(input_names), tuple(output_names)

        def run(self, feeds):
            return corrupt(self.component, self.ort.run(feeds))

    monkeypatch.setattr(engine_builds, "cpu_aot_package", fake_build)
    monkeypatch.setattr(engines, "AotEngine", PlantedAot)
    return builds


def _export_light(cfg_path, repo):
    return build.export_cascade(load_cascade(cfg_path), repo, build.ExportOptions(stages=("light",), cpu_aot=True),
                                log=lambda _m: None)


def test_nan_and_low_psnr_engines_fail_the_export_naming_stage_and_component(tiny_exported, tmp_path, monkeypatch):
    cfg_path, _ = tiny_exported("sd")

    def corrupt(component, outs):
        if component == "unet":  # one overflowed value, as fp16 UNets/VAEs produce
            outs["noise_pred"] = outs["noise_pred"].copy()
            outs["noise_pred"].flat[0] = np.nan
        if component == "vae_decoder":  # ~20 dB: finite but far from the fp32 module
            img = outs["image"]
            noise = np.random.default_rng(0).standard_normal(img.shape).astype(np.float32)
            outs["image"] = img + 0.1 * float(img.max() - img.min()) * noise
        return outs

    _plant(monkeypatch, corrupt)
    with pytest.raises(build.VerificationFailed) as err:
        _export_light(cfg_path, tmp_path / "repo")
    message = str(err.value)
    assert "light: component unet on aot (float32): 2 NaN/inf output values" in message  # batch 2 and batch 1
    assert "light: component vae_decoder on aot (float32): PSNR" in message and "< 30 dB" in message
    assert "light: end to end on aot: 3 of 3 images have NaN/inf pixels" in message
    assert "component text_encoder" not in message and "on onnxruntime" not in message
    assert not (tmp_path / "repo" / "light" / "1" / "artifacts").exists()  # nothing half-verified swapped in


def test_an_engine_that_passes_alone_but_fails_end_to_end_is_blamed(tiny_exported, tmp_path, monkeypatch):
    cfg_path, _ = tiny_exported("sd")

    def corrupt(component, outs):
        if component == "vae_decoder":  # a colour shift: ~36 dB on the component, under 40 dB on the images
            outs["image"] = outs["image"] + 0.015 * float(outs["image"].max() - outs["image"].min())
        return outs

    _plant(monkeypatch, corrupt)
    with pytest.raises(build.VerificationFailed, match=r"light: end to end on aot: min PSNR [\d.]+ dB < 40 dB against "
                                                       r"fp32 diffusers; caused by vae_decoder$"):
        _export_light(cfg_path, tmp_path / "repo")


def test_sound_engines_pass_and_a_stage_sharing_weights_reuses_them(tiny_exported, tmp_path, monkeypatch):
    import yaml

    cfg_path, _ = tiny_exported("sd")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["heavy"]["model"] = cfg["light"]["model"]  # one weights folder, two stages: build each engine once
    shared = tmp_path / "shared.yaml"
    shared.write_text(yaml.safe_dump(cfg))
    builds = _plant(monkeypatch, lambda _component, outs: outs)
    results = build.export_cascade(load_cascade(shared), tmp_path / "repo",
                                   build.ExportOptions(stages=("light", "heavy"), cpu_aot=True), log=lambda _m: None)
    for stage in ("light", "heavy"):
        assert {(c["component"], c["backend"]) for c in results[stage]["components"]} == {
            (n, b) for n in ("text_encoder", "unet", "vae_decoder") for b in ("onnxruntime", "aot")}
        assert results[stage]["end_to_end_engines"]["aot"]["passed"] and results[stage]["end_to_end"]["passed"]
        assert (tmp_path / "repo" / stage / "1" / "artifacts" / "unet.aot.cpu.pt2").read_bytes() == b"planted"
    assert sorted(builds) == ["text_encoder", "unet", "vae_decoder"]


def test_cpu_and_cuda_aot_packages_for_one_component_are_refused(monkeypatch):
    from export import gpu
    from serving.config import ConfigError

    monkeypatch.setattr(gpu, "cuda_available", lambda: True)
    monkeypatch.setattr(gpu, "tensorrt_available", lambda: False)
    with pytest.raises(ConfigError, match="one AOT package per component; add --gpu-engines off"):
        engine_builds.check_engine_options(build.ExportOptions(cpu_aot=True))
    engine_builds.check_engine_options(build.ExportOptions(cpu_aot=True, gpu_engines="off"))


def test_an_up_to_date_stage_without_the_requested_packages_is_not_skipped(tiny_exported):
    _, repo = tiny_exported("sd")  # exported without --cpu-aot
    assert engine_builds.missing_engines(repo, "light", build.ExportOptions(cpu_aot=True, gpu_engines="off")) == [
        "text_encoder", "unet", "vae_decoder"]
    assert engine_builds.missing_engines(repo, "light", build.ExportOptions(gpu_engines="off")) == []
