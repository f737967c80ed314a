"""CPU slots behave like devices: each stage instance on a CPU node runs with a fixed share of the
cores (``ort_threads`` = cores // slots), set on every load the orchestrator makes, the same on
every load so a change of instance_group alone stays in place; GPU nodes keep the repository's
value; ``export profile`` times at the same share."""
from __future__ import annotations

import json
import re
import time

import pytest

from export.profile import profile_threads
from orchestrator import node as node_module
from orchestrator.node import TritonNode
from orchestrator.placement import NodeSpec
from serving.model_config import config_parameters, cpu_slot_threads, with_threads
from tests.triton_fakes import FakeTriton, stage_config


def _stage(name: str, kind: str = "KIND_CPU", image_px: int = 8) -> str:
    return stage_config(name, kind, image_px=image_px, parameters={"stage": name, "ort_threads": "0"})


@pytest.mark.parametrize("cores, slots, threads", [(2, 2, 1), (2, 1, 2), (16, 4, 4), (7, 2, 3), (2, 3, 1), (1, 8, 1)])
def test_a_cpu_slot_gets_an_even_share_of_the_cores_and_at_least_one_thread(cores, slots, threads):
    assert cpu_slot_threads(cores, slots) == threads


@pytest.mark.parametrize("cores, slots", [(0, 2), (2, 0), (4, -1)])
def test_a_core_or_slot_count_below_one_is_refused_naming_both(cores, slots):
    with pytest.raises(ValueError, match=f"cores={cores}, cpu_slots={slots}; expected integers >= 1"):
        cpu_slot_threads(cores, slots)


def test_with_threads_sets_the_parameter_only_where_the_model_has_it():
    stage = {"parameters": {"stage": {"string_value": "light"}, "ort_threads": {"string_value": "0"}}}
    assert config_parameters(with_threads(stage, 3))["ort_threads"] == "3"
    assert stage["parameters"]["ort_threads"] == {"string_value": "0"}  # a copy: the input is not changed
    cascade = {"parameters": {"stage": {"string_value": "cascade"}}}
    assert with_threads(cascade, 3) == cascade




def _node(tmp_path, kind: str, slots, **kw) -> TritonNode:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("light", "heavy", "discriminator"):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "config.pbtxt").write_text(_stage(name, f"KIND_{kind.upper()}"))
    (tmp_path / "cascade").mkdir(exist_ok=True)
    (tmp_path / "cascade" / "config.pbtxt").write_text(stage_config("cascade"))
    node = TritonNode(NodeSpec("127.0.0.1:1", kind, tuple(slots)), "http://127.0.0.1:2/metrics", timeout_s=1.0,
                      model_repository=tmp_path, **kw)
    node.client = FakeTriton(tmp_path)
    return node


def _threads(loads) -> list[tuple[str, str | None]]:
    return [(m, config_parameters(c).get("ort_threads")) for m, c in loads]


def test_every_load_on_a_cpu_node_carries_the_slots_thread_share(tmp_path, monkeypatch):
    monkeypatch.setattr(node_module, "available_cores", lambda: 8)
    node = _node(tmp_path, "cpu", range(4))  # 8 cores, 4 slots: 2 threads per instance
    assert node.threads == 2
    node.set_instances("light", (0,))
    node.set_instances("light", (0, 1))
    node.set_instances("light", (1,), bump_generation=True)
    node.load_default("discriminator")
    node.load_default("cascade")  # no ort_threads parameter: loaded once, as the repository has it
    # A first load takes the served config as it is, then reloads once with the share.
    assert _threads(node.client.loads) == [("light", "0"), ("light", "2"), ("light", "2"), ("light", "2"),
                                           ("light", "2"), ("discriminator", "0"), ("discriminator", "2"),
                                           ("cascade", None)]
    assert [c["instance_group"][0]["count"] for m, c in node.client.loads[2:5]] == [1, 2, 1]


def test_a_cpu_node_loads_the_served_config_not_its_model_repository_setting(tmp_path, monkeypatch):
    """The orchestrator's --model-repository defaults to the project's; a CPU node may serve a copy."""
    monkeypatch.setattr(node_module, "available_cores", lambda: 2)
    node = _node(tmp_path / "served", "cpu", range(2))
    other = tmp_path / "elsewhere" / "heavy"
    other.mkdir(parents=True)
    (other / "config.pbtxt").write_text(_stage("heavy", image_px=4))
    node.model_repository = tmp_path / "elsewhere"
    node.set_instances("heavy", (0, 1))
    assert all(c["output"][0]["dims"] == ["8", "8", "3"] for _, c in node.client.loads)
    assert _threads(node.client.loads)[-1] == ("heavy", "1")


def test_cpu_threads_overrides_the_share_and_zero_means_every_core(tmp_path):
    node = _node(tmp_path, "cpu", range(2), cpu_threads=0)
    node.set_instances("heavy", (0, 1))
    assert _threads(node.client.loads) == [("heavy", "0"), ("heavy", "0")] and node.threads == 0
    with pytest.raises(ValueError, match="cpu_threads=-1; expected an integer >= 0"):
        _node(tmp_path, "cpu", range(2), cpu_threads=-1)


def test_gpu_nodes_keep_the_repositorys_thread_count(tmp_path):
    node = _node(tmp_path, "gpu", (0, 1), cpu_threads=3)
    node.set_instances("heavy", (0, 1))
    node.load_default("discriminator")
    assert node.threads is None
    assert _threads(node.client.loads) == [("heavy", "0"), ("discriminator", "0")]


def test_the_orchestrator_cli_takes_cpu_threads_per_node_from_the_nodes_file(tmp_path):
    from orchestrator import __main__ as cli  # noqa: PLC0415

    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps([
        {"url": "127.0.0.1:1", "metrics_url": "http://127.0.0.1:2/metrics", "slots": "cpu:2", "cpu_threads": 5},
        {"url": "127.0.0.1:3", "metrics_url": "http://127.0.0.1:4/metrics", "slots": "cpu:2"}]))
    args = cli.parser().parse_args(["run", "--nodes-file", str(nodes_file), "--cpu-threads", "7"])
    nodes = cli.build_nodes(args)
    try:
        assert [n.threads for n in nodes] == [5, 7]
    finally:
        for n in nodes:
            n.close()


def test_profile_threads_default_to_one_cpu_slots_share(monkeypatch):
    import export.profile as profile  # noqa: PLC0415

    monkeypatch.delenv("DIFFSERVE_ORT_THREADS", raising=False)
    monkeypatch.setattr(profile, "available_cores", lambda: 8)
    assert profile_threads(None, cpu_slots=4, on_gpu=False) == 2
    assert profile_threads(None, cpu_slots=4, on_gpu=True) == 0  # GPU: the runtime's default, as before
    assert profile_threads(3, cpu_slots=4, on_gpu=False) == 3
    monkeypatch.setenv("DIFFSERVE_ORT_THREADS", "6")
    assert profile_threads(None, cpu_slots=4, on_gpu=False) == 6
    monkeypatch.setenv("DIFFSERVE_ORT_THREADS", "many")
    with pytest.raises(ValueError, match="DIFFSERVE_ORT_THREADS='many'; expected an integer >= 0"):
        profile_threads(None, cpu_slots=4, on_gpu=False)


@pytest.mark.triton
def test_a_cpu_slot_change_with_the_thread_share_stays_an_in_place_update(triton_server_factory, tmp_path):
    """Real Triton: the stand-in light stage with an ``ort_threads`` parameter; growing its
    instance group keeps the running stub process (in place), and every load carries the share."""
    from tests.conftest import build_cascade_repository  # noqa: PLC0415
    from tests.orchestrator_support import ADMIN_KEY, stub_pids  # noqa: PLC0415

    repo = build_cascade_repository(tmp_path / "repo", tmp_path / "control.json")
    cfg = repo / "light" / "config.pbtxt"
    cfg.write_text(re.sub(r"parameters \[", 'parameters [\n  { key: "ort_threads" value: { string_value: "0" } },',
                          cfg.read_text(), count=1))
    server = triton_server_factory(repo, load_models=(), restricted_key=ADMIN_KEY)

    def settled_pids(server, n: int) -> list[int]:
        """The light stub PIDs once ``n`` are left: a replaced stub stays alive until its unload ends."""
        deadline = time.monotonic() + 5.0
        while len(pids := stub_pids(server, "light")) != n and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids

    node = TritonNode(NodeSpec(server.grpc_url, "cpu", (0, 1)), server.metrics_url, admin_key=ADMIN_KEY,
                      model_repository=repo, cpu_threads=1, timeout_s=60)
    try:
        node.set_instances("light", (0,))  # a plain first load, then one reload with the share
        first = settled_pids(server, 1)
        assert len(first) == 1 and config_parameters(node.model_config("light"))["ort_threads"] == "1"
        node.set_instances("light", (0, 1))
        grown = settled_pids(server, 2)
        assert len(grown) == 2 and set(first) <= set(grown)  # the running instance was kept: in place
        assert config_parameters(node.model_config("light"))["ort_threads"] == "1"
    finally:
        node.close()
