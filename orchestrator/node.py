"""Thin adapter over one Triton server (one node): model control, statistics, metrics.

Every tritonclient call goes through :func:`client.errors.triton_errors`, and the
restricted protocols (model repository, model config, statistics) get the admin key's headers.
"""
from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request

from client.errors import ModelLoadFailed, ModelNotReady, ServerUnavailable, triton_errors
from orchestrator.observe import NodeSample, sample_from
from orchestrator.placement import NodeSpec, instance_group
from orchestrator.server import admin_headers

# Config parameter bumped to force a full reload (fresh stub processes) of an unhealthy model:
# Triton treats a changed parameter as a new config, loads new instances, then swaps.
GENERATION_PARAM = "orchestrator_generation"


class TritonNode:
    """One Triton endpoint as the orchestrator sees it.

    ``metrics_url`` is the Prometheus endpoint (``http://host:port/metrics``);
    ``admin_key`` is ``"header:value"`` for servers started with ``restricted_key``.
    """

    def __init__(self, spec: NodeSpec, metrics_url: str, admin_key: str | None = None,
                 timeout_s: float = 30.0):
        import tritonclient.grpc as grpcclient  # noqa: PLC0415 - heavy import, adapters only

        self.spec = spec
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        self._headers = admin_headers(admin_key)
        self.client = grpcclient.InferenceServerClient(spec.url)
        self._configs: dict[str, dict] = {}  # last loaded config per model, for reloads after unload

    @property
    def url(self) -> str:
        return self.spec.url

    def close(self) -> None:
        self.client.close()

    def reconnect(self) -> None:
        """A fresh gRPC channel: after the server restarted, the old channel may sit in gRPC's
        reconnect backoff (calls fail with "failed to connect" for seconds)."""
        import tritonclient.grpc as grpcclient  # noqa: PLC0415

        self.client.close()
        self.client = grpcclient.InferenceServerClient(self.spec.url)

    # -- reads ---------------------------------------------------------------------------
    def is_live(self) -> bool:
        try:
            with triton_errors("is_server_live"):
                return bool(self.client.is_server_live())
        except ServerUnavailable:
            return False

    def repository_index(self) -> dict[str, str]:
        """``{model: state}`` (``READY``, ``UNAVAILABLE``, ``LOADING``, ... or ``""`` if never loaded)."""
        with triton_errors("get_model_repository_index"):
            idx = self.client.get_model_repository_index(headers=self._headers, as_json=True)
        return {m["name"]: m.get("state", "") for m in idx.get("models", [])}

    def model_config(self, model: str) -> dict:
        """The loaded model's config as JSON (cached for later reloads)."""
        with triton_errors("get_model_config", model=model):
            cfg = self.client.get_model_config(model, headers=self._headers, as_json=True)["config"]
        self._configs[model] = cfg
        return copy.deepcopy(cfg)

    def is_ready(self, model: str) -> bool:
        try:
            with triton_errors("is_model_ready", model=model):
                return bool(self.client.is_model_ready(model))
        except (ModelNotReady, ServerUnavailable):
            return False

    def sample(self) -> NodeSample:
        """Statistics of every loaded model plus the metrics endpoint, at this monotonic time."""
        t = time.monotonic()
        with triton_errors("get_inference_statistics"):
            stats = self.client.get_inference_statistics(headers=self._headers, as_json=True)
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=self.timeout_s) as r:  # noqa: S310
                text = r.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            raise ServerUnavailable(f"metrics {self.metrics_url}: {exc}") from exc
        return sample_from(t, stats, text)

    # -- writes --------------------------------------------------------------------------
    def set_instances(self, model: str, slots: tuple[int, ...], bump_generation: bool = False) -> None:
        """Load ``model`` with its instances on ``slots`` and wait until it is ready with them.

        Only ``instance_group`` changes (an in-place update) unless ``bump_generation``, which
        also changes a config parameter so Triton starts fresh instances (heals dead stubs).
        Raises ModelLoadFailed / ModelNotReady / ServerUnavailable.
        """
        base = self._base_config(model)
        cfg = copy.deepcopy(base)
        cfg["instance_group"] = instance_group(self.spec.kind, slots)
        if bump_generation:
            params = cfg.setdefault("parameters", {})
            gen = int(params.get(GENERATION_PARAM, {}).get("string_value", "0") or 0) + 1
            params[GENERATION_PARAM] = {"string_value": str(gen)}
        with triton_errors("load_model", model=model):
            self.client.load_model(model, config=json.dumps(cfg), headers=self._headers)
        self._confirm(model, len(slots))

    def load_default(self, model: str) -> None:
        """Load ``model`` from the repository's own config (first load of a model never seen)."""
        with triton_errors("load_model", model=model):
            self.client.load_model(model, headers=self._headers)
        self.model_config(model)

    def unload(self, model: str, wait_s: float | None = None) -> None:
        """Unload ``model`` and wait until the repository index no longer shows it READY
        (``unload_model`` returns before the model is gone)."""
        if model in self._configs or self.is_ready(model):
            try:
                self.model_config(model)  # keep its config to reload it later
            except ModelNotReady:
                pass
        with triton_errors("unload_model", model=model):
            self.client.unload_model(model, headers=self._headers)
        deadline = time.monotonic() + (self.timeout_s if wait_s is None else wait_s)
        while time.monotonic() < deadline:
            if self.repository_index().get(model, "") != "READY":
                return
            time.sleep(0.05)
        raise ModelLoadFailed(f"unload_model({model}): still READY after {self.timeout_s} s")

    def _base_config(self, model: str) -> dict:
        if self.is_ready(model):
            return self.model_config(model)
        if model not in self._configs:
            self.load_default(model)  # learn its config from the repository
            return self.model_config(model)
        return copy.deepcopy(self._configs[model])

    def _confirm(self, model: str, n_instances: int) -> None:
        """Ready, and the loaded config has the instances asked for."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.is_ready(model):
                groups = self.model_config(model).get("instance_group", [])
                have = sum(int(g.get("count", 1)) * max(1, len(g.get("gpus", []) or [0])) for g in groups)
                if have == n_instances:
                    return
            time.sleep(0.05)
        raise ModelNotReady(f"{model} on {self.url}: not ready with {n_instances} instances after {self.timeout_s} s")
