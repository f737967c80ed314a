"""``make gpu-check`` without a GPU: it says so and exits 0; its pure parts (pinned instance groups,
reading the instances' devices back from the server log)."""
from __future__ import annotations

import torch

from benchmarks import gpu_check


def test_without_a_gpu_it_says_so_and_exits_0(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    assert "no NVIDIA GPU visible to torch (CUDA): nothing built, served or measured" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # no result pretending a measurement


def test_two_instances_per_stage_each_on_a_named_gpu():
    assert gpu_check.instance_groups("cuda", 1) == ("instance_group [ { kind: KIND_GPU count: 1 gpus: [ 0 ] }, "
                                                    "{ kind: KIND_GPU count: 1 gpus: [ 0 ] } ]")
    assert "gpus: [ 0 ] }, { kind: KIND_GPU count: 1 gpus: [ 1 ]" in gpu_check.instance_groups("cuda", 8)
    assert gpu_check.instance_groups("cpu", 0) == "instance_group [ { kind: KIND_CPU count: 2 } ]"


def test_pinning_is_read_back_from_the_stage_models_log_lines():
    log = "\n".join(
        f'I1126 12:00:00.0 1 stage_model.py:1] "{m}: {what} from /r/{m}/1/artifacts (backends {b}, GPU {g}) in 2.0 s"'
        for m, what, b in (("light", "StableDiffusionPipeline 4 steps", "['tensorrt', 'tensorrt', 'tensorrt']"),
                           ("heavy", "StableDiffusionPipeline 25 steps", "['aot', 'aot', 'aot']"),
                           ("discriminator", "discriminator", "['onnxruntime']")) for g in (0, 1))
    instances = [{"model": m, "device": d} for m, d in gpu_check.pinned_instances(log)]
    assert len(instances) == 6 and gpu_check.pinning_ok(instances, "cuda", 2)
    assert not gpu_check.pinning_ok(instances, "cuda", 1)  # one GPU: both instances must say GPU 0
    assert not gpu_check.pinning_ok(instances[:-1], "cuda", 2)  # a missing instance
