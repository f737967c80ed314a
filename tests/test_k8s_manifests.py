"""deploy/k8s renders with `kubectl kustomize` and every object validates, offline, against the
Kubernetes JSON schemas shipped by the `kubernetes-validate` package (strict: unknown fields are
errors); the configs inside pass haproxy -c and promtool; the pieces agree with each other."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy import haproxy, prometheus
from deploy.k8s_config import K8S, k8s_haproxy_config
from orchestrator.balancer import server_name

K8S_VERSION = "1.30.0"  # validated against this API version's schemas (strict)


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def test_every_rendered_object_validates_against_the_kubernetes_schemas(rendered):
    import kubernetes_validate  # noqa: PLC0415

    kinds = sorted({d["kind"] for d in rendered})
    assert {"StatefulSet", "Service", "Deployment", "ConfigMap", "PersistentVolumeClaim"} <= set(kinds)
    errors = []
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_a_broken_object(rendered):
    """The schema check can fail: an unknown field and a wrong type are both caught."""
    import copy  # noqa: PLC0415

    import kubernetes_validate  # noqa: PLC0415

    sts = copy.deepcopy(_one(rendered, "StatefulSet", "triton"))
    sts["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)
    sts = copy.deepcopy(_one(rendered, "StatefulSet", "triton"))
    sts["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_triton_pods_have_the_model_volume_long_startup_probes_and_a_headless_service(rendered):
    sts = _one(rendered, "StatefulSet", "triton")
    pod = sts["spec"]["template"]["spec"]
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    assert any(m["mountPath"] == "/models" and m.get("readOnly") for m in triton["volumeMounts"])
    probe = triton["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600  # minutes to load pipelines
    assert "nvidia.com/gpu" in triton["resources"]["limits"]
    svc = _one(rendered, "Service", "triton")
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == "triton"
    # The node-local control file is shared by Triton and the agent, never by two pods.
    agent = next(c for c in pod["containers"] if c["name"] == "control-agent")
    shared = {m["name"] for m in triton["volumeMounts"]} & {m["name"] for m in agent["volumeMounts"]}
    assert [v for v in pod["volumes"] if v["name"] in shared] == [{"name": "node-state", "emptyDir": {}}]


def test_orchestrator_gets_the_admin_key_from_a_secret_and_nodes_match_the_statefulset(rendered):
    dep = _one(rendered, "Deployment", "orchestrator")
    orch = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "orchestrator")
    key = next(e for e in orch["env"] if e["name"] == "DIFFSERVE_ADMIN_KEY")
    assert key["valueFrom"]["secretKeyRef"]["name"] == "diffserve-admin-key"
    nodes = json.loads((K8S / "config" / "nodes.json").read_text())
    replicas = _one(rendered, "StatefulSet", "triton")["spec"]["replicas"]
    assert [n["url"] for n in nodes] == [f"triton-{i}.triton:8001" for i in range(replicas)]
    grpc = _one(rendered, "Service", "diffserve-grpc")
    assert grpc["spec"]["ports"][0]["appProtocol"] == "grpc"


def test_haproxy_config_is_current_valid_and_names_every_node(tmp_path):
    committed = (K8S / "config" / "haproxy.cfg").read_text()
    assert committed == k8s_haproxy_config(), "run `python -m deploy.k8s_config` after editing nodes.json"
    for n in json.loads((K8S / "config" / "nodes.json").read_text()):
        assert f"server {server_name(n['url'])} {n['url']}" in committed
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(committed.replace("/var/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
    ok, out = haproxy.check_config(cfg)
    assert ok, out


def test_prometheus_scrape_config_passes_promtool():
    ok, out = prometheus.check_config(Path(K8S / "config" / "prometheus.yml"))
    assert ok, out
