"""GPU pinning on the orchestrator side, without a GPU: every load on a GPU node names its GPUs,
and GPU ids honour CUDA_VISIBLE_DEVICES."""
from __future__ import annotations

import json

import pytest

from client.errors import ModelLoadFailed
from orchestrator import devices
from orchestrator.node import TritonNode, repository_config
from orchestrator.placement import NodeSpec
from tests.triton_fakes import FakeTriton, stage_config

SMI = ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)",
       "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb2222-0000-0000-0000-000000000000)",
       "  MIG 3g.40gb     Device  0: (UUID: MIG-cccc3333-0000-0000-0000-000000000000)",
       "GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-dddd4444-0000-0000-0000-000000000000)",
       "GPU 3: NVIDIA H100 80GB HBM3 (UUID: GPU-eeee5555-0000-0000-0000-000000000000)"]


@pytest.mark.parametrize("cuda_visible, physical", [
    (None, [0, 1, 2, 3]),            # unset: every GPU
    ("", []),                        # empty: none
    ("2,3", [2, 3]),                 # tritonserver's device 0 is physical GPU 2
    ("3, 1", [3, 1]),                # CUDA's order, not nvidia-smi's
    ("GPU-dddd4444,0", [2, 0]),      # UUID prefixes
    ("0,-1,2", [0]),                 # the list ends at the first entry that names no GPU
    ("1,7", [1]),                    # an index past the last GPU too
    ("1,1,2", [1]),                  # and a repeated one
    ("-1", []),
    ("GPU-", []),                    # a prefix that names several GPUs names none
])
def test_visible_gpus_follow_cuda_visible_devices(cuda_visible, physical):
    assert devices.visible_gpus(SMI, cuda_visible) == physical


def test_detect_gpus_numbers_the_visible_gpus_as_tritonserver_does(monkeypatch):
    class Done:
        stdout = "\n".join(SMI) + "\n"

    monkeypatch.setattr(devices.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: Done())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert devices.detect_gpus() == (0, 1)  # two GPUs, which tritonserver calls 0 and 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.detect_gpus() == (0, 1, 2, 3)
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    assert devices.detect_gpus() == ()


class PinCheckingTriton(FakeTriton):
    """Refuses unpinned GPU loads (what Triton would do with them: one instance on every visible GPU)."""

    def load_model(self, model, config=None, headers=None):
        cfg = json.loads(config) if config else repository_config(self.repo, model)
        for g in cfg["instance_group"]:
            if g.get("kind") == "KIND_GPU":
                assert g.get("gpus"), f"{model}: a GPU load without gpus: {g}"
        super().load_model(model, config, headers)


@pytest.fixture
def gpu_node(tmp_path):
    for name in ("light", "heavy", "discriminator"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(stage_config(name, "KIND_GPU", dynamic_batching=True))
    (tmp_path / "cascade").mkdir()
    (tmp_path / "cascade" / "config.pbtxt").write_text(stage_config("cascade", dynamic_batching=True))
    node = TritonNode(NodeSpec("127.0.0.1:1", "gpu", (0, 1, 2, 3)), "http://127.0.0.1:2/metrics",
                      model_repository=tmp_path, timeout_s=1.0)
    node.client = PinCheckingTriton(tmp_path)
    return node


def test_the_first_load_of_a_gpu_stage_names_the_planned_gpus_in_one_load(gpu_node):
    gpu_node.set_instances("heavy", (2, 3))
    assert [(m, c["instance_group"]) for m, c in gpu_node.client.loads] == [
        ("heavy", [{"kind": "KIND_GPU", "count": 1, "gpus": [2, 3]}])]
    loaded = gpu_node.client.loads[0][1]
    assert loaded["input"][0]["name"] == "PROMPT" and loaded["parameters"]["stage"]["string_value"] == "heavy"


def test_every_later_load_names_its_gpus_too(gpu_node):
    gpu_node.set_instances("light", (0,))
    gpu_node.set_instances("light", (0, 1))
    gpu_node.set_instances("light", (1,), bump_generation=True)
    assert [c["instance_group"][0]["gpus"] for _, c in gpu_node.client.loads] == [[0], [0, 1], [1]]


def test_a_load_outside_a_plan_is_pinned_to_the_nodes_first_gpu(gpu_node):
    gpu_node.load_default("discriminator")
    gpu_node.load_default("cascade")  # a CPU model: loaded with its own config
    (_, disc), (_, cascade) = gpu_node.client.loads
    assert disc["instance_group"] == [{"kind": "KIND_GPU", "count": 1, "gpus": [0]}]
    assert cascade["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]


def test_a_gpu_node_without_the_repository_configs_refuses_to_load_unpinned(gpu_node, tmp_path):
    gpu_node.model_repository = tmp_path / "elsewhere"
    with pytest.raises(ModelLoadFailed, match="no .*elsewhere/heavy/config.pbtxt; a GPU node needs"):
        gpu_node.set_instances("heavy", (0,))
    assert gpu_node.client.loads == []
