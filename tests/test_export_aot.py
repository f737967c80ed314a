"""AOTInductor packages built on CPU (what CI can run): torch.export + g++ of the embedded tiny
cascade's light stage, verified against PyTorch/diffusers, loaded by the runtime's AOT engine and
served through a real tritonserver with ``backend: aot``. Not skipped: no GPU is needed."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from serving import load_stage
from serving.control import write_control
from serving.engines import AotEngine, choose_backend

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def _stage_json(repo) -> dict:
    return json.loads((repo / "light" / "1" / "artifacts" / "stage.json").read_text())


def test_export_builds_a_verified_cpu_package_per_component(tiny_aot_exported):
    _, repo, results = tiny_aot_exported
    comps = _stage_json(repo)["components"]
    for name in COMPONENTS:
        assert comps[name]["engines"] == {"aot": f"{name}.aot.cpu.pt2"}
        assert comps[name]["engine_info"]["aot"] == {"device": "cpu", "dtype": "float32", "max_batch": 32}
    checked = {(c["component"], c["backend"]) for c in results["light"]["components"] if c["passed"]}
    assert checked == {(n, b) for n in COMPONENTS for b in ("onnxruntime", "aot")}
    e2e = results["light"]["end_to_end_engines"]["aot"]
    assert e2e["passed"] and e2e["threshold_db"] == 40.0 and e2e["min_psnr_db"] >= 40.0


def test_auto_serves_the_cpu_package_on_a_machine_without_gpu(tiny_aot_exported):
    _, repo, _ = tiny_aot_exported
    art = repo / "light" / "1" / "artifacts"
    for name, comp in _stage_json(repo)["components"].items():
        assert choose_backend({"name": name, **comp}, art) == "aot"


def test_a_cfg_batch_over_the_package_limit_runs_in_chunks(tiny_aot_exported):
    # diffusers guards batch >= 64, so packages stop at 32; the UNet's CFG batch (2 x 32) runs in two chunks
    _, repo, _ = tiny_aot_exported
    art = repo / "light" / "1" / "artifacts"
    comp = _stage_json(repo)["components"]["unet"]
    aot = AotEngine(art / comp["engines"]["aot"], tuple(comp["inputs"]), tuple(comp["outputs"]), device="cpu",
                    max_batch=32)
    ort = load_stage(art, backend="onnxruntime")
    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((64, *ort.spec.latent_shape), dtype=np.float32),
             "timestep": np.linspace(999, 0, 64, dtype=np.float32),
             "encoder_hidden_states": ort.encode([f"{n} red circles" for n in range(64)])[0]}
    got, want = aot.run(feeds)["noise_pred"], ort.engines["unet"].run(feeds)["noise_pred"]
    assert got.shape == (64, *ort.spec.latent_shape)
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.triton
def test_the_light_stage_serves_through_triton_on_the_aot_backend(tiny_aot_exported, triton_server_factory, tmp_path):
    import shutil  # noqa: PLC0415

    _, exported, _ = tiny_aot_exported
    repo = shutil.copytree(exported, tmp_path / "repo")
    control = tmp_path / "control.json"
    write_control(control, {"batch_size": {"light": 4}})
    cfg = repo / "light" / "config.pbtxt"
    text = re.sub(r'(key: "backend" value: \{ string_value: )"[^"]*"', r'\1"aot"', cfg.read_text())
    text = re.sub(r'(key: "control_file" value: \{ string_value: )"[^"]*"', rf'\1"{control}"', text)
    cfg.write_text(text)
    server = triton_server_factory(repo, load_models=("light",))
    client = server.grpc_client()
    prompts, seeds = ["a red circle on the left", "two blue squares", "a"], [3, 4, 5]
    p = grpcclient.InferInput("PROMPT", [3, 1], "BYTES")
    p.set_data_from_numpy(np.array([[s.encode()] for s in prompts], dtype=object))
    s = grpcclient.InferInput("SEED", [3, 1], "INT64")
    s.set_data_from_numpy(np.array(seeds, dtype=np.int64).reshape(-1, 1))
    images = client.infer("light", [p, s]).as_numpy("IMAGE")
    client.close()
    expected = load_stage(repo / "light" / "1" / "artifacts", backend="onnxruntime").generate(prompts, seeds)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    log = (tmp_path / "tritonserver-0.log").read_text()
    assert "backends ['aot', 'aot', 'aot']" in log, log[-2000:]


def test_a_package_range_reaching_64_is_refused_with_the_reason(tmp_path):
    from export.aot import build_aot_package

    with pytest.raises(ValueError, match=r"AOT max_batch 64; expected 2..63 \(diffusers guards batch >= 64\)"):
        build_aot_package(None, tmp_path / "unet.pt2", max_batch=64)
