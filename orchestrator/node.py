"""Thin adapter over one Triton server (one node): model control, statistics, metrics.

Every tritonclient call goes through :func:`client.errors.triton_errors`, and the
restricted protocols (model repository, model config, statistics) get the admin key's headers.

GPU pinning: on a GPU node every load names its GPUs. A model's first load cannot use the
repository's own config (``KIND_GPU count: 1`` without ``gpus``, which Triton expands to one
instance per visible GPU) and Triton cannot show the config of a model it has not loaded, so the
node reads ``<model_repository>/<model>/config.pbtxt`` (the same repository the server serves)
and loads it with the plan's ``instance_group``; a load outside a plan (the discriminator or the
light stage before the first plan) is pinned to the node's first GPU.

CPU slots: on a CPU node every load of a stage model sets its ``ort_threads`` parameter to the
node's threads per slot (default :func:`serving.model_config.cpu_slot_threads`: the cores split
evenly between the slots), the same value on every load, so a change of ``instance_group``
alone stays an in-place update. A first load takes the served repository's config as it is and
reloads once with the thread count when that differs.
"""
from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from client.errors import ModelLoadFailed, ModelNotReady, ServerUnavailable, triton_errors
from orchestrator.observe import NodeSample, sample_from
from orchestrator.placement import NodeSpec, instance_group, removes_instances
from orchestrator.server import admin_headers
from serving.model_config import available_cores, cpu_slot_threads, with_threads

# Config parameter bumped to force a full reload (fresh stub processes) of an unhealthy model, or
# of one losing instances (Triton #7723, see set_instances): Triton treats a changed parameter as
# a new config, loads new instances, then swaps.
GENERATION_PARAM = "orchestrator_generation"
_HOST_KINDS = ("KIND_CPU", "KIND_MODEL")  # instance kinds that use no GPU


def repository_config(model_repository: str | Path, model: str) -> dict | None:
    """``<model_repository>/<model>/config.pbtxt`` as Triton's JSON config form (the form
    ``get_model_config(as_json=True)`` returns and ``load_model(config=...)`` takes), or None
    when there is no such file. ValueError naming the file when it does not parse."""
    from google.protobuf import json_format, text_format  # noqa: PLC0415 - tritonclient's dependency
    from tritonclient.grpc import model_config_pb2  # noqa: PLC0415

    path = Path(model_repository) / model / "config.pbtxt"
    if not path.is_file():
        return None
    try:
        message = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a Triton model config ({exc})") from None
    cfg = json_format.MessageToDict(message, preserving_proto_field_name=True)
    cfg.setdefault("name", model)
    return cfg


def uses_gpu(cfg: dict) -> bool:
    """Whether a config's instances run on GPUs (KIND_GPU, or KIND_AUTO on a GPU machine)."""
    return any(g.get("kind", "KIND_AUTO") not in _HOST_KINDS for g in cfg.get("instance_group", []) or [{}])


class TritonNode:
    """One Triton endpoint as the orchestrator sees it.

    ``metrics_url`` is the Prometheus endpoint (``http://host:port/metrics``);
    ``admin_key`` is ``"header:value"`` for servers started with ``restricted_key``.
    ``cpu_threads``: intra-op threads of each stage instance on a CPU node (None: this
    machine's cores // the node's slots; 0: the runtime's default, every core); ignored on GPU nodes.
    """

    def __init__(self, spec: NodeSpec, metrics_url: str, admin_key: str | None = None,
                 timeout_s: float = 30.0, model_repository: str | Path | None = None,
                 cpu_threads: int | None = None):
        import tritonclient.grpc as grpcclient  # noqa: PLC0415 - heavy import, adapters only

        self.spec = spec
        self.model_repository = Path(model_repository) if model_repository else None
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        self._headers = admin_headers(admin_key)
        self.client = grpcclient.InferenceServerClient(spec.url)
        self._configs: dict[str, dict] = {}  # last loaded config per model, for reloads after unload
        if cpu_threads is not None and int(cpu_threads) < 0:
            raise ValueError(f"node {spec.url}: cpu_threads={cpu_threads}; expected an integer >= 0")
        self.threads: int | None = None  # GPU nodes: the repository's ort_threads, unchanged
        if spec.kind == "cpu":
            self.threads = cpu_slot_threads(available_cores(), len(spec.slots)) if cpu_threads is None else int(cpu_threads)

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

        Adding instances changes only ``instance_group`` (Triton's in-place update). A change that
        removes an instance of a loaded model (fewer instances, or a GPU no longer listed), and
        ``bump_generation`` (heals dead stubs), also change a config parameter, which makes it a full
        reload: Triton loads the new instances next to the running ones, swaps, and unloads the old
        ones once their in-flight requests are done. Why not in place: removing Python-backend
        instances in place while requests are in flight crashes tritonserver (SIGSEGV in
        libtriton_python.so; triton-inference-server/server#7723, seen here in a live benchmark:
        heavy 2 -> 1 instances under load). Raises ModelLoadFailed / ModelNotReady / ServerUnavailable.
        """
        base, loaded = self._base_config(model)
        cfg = copy.deepcopy(base)
        cfg["instance_group"] = instance_group(self.spec.kind, slots)
        if self.threads is not None:
            cfg = with_threads(cfg, self.threads)
        if bump_generation or (loaded and removes_instances(base.get("instance_group") or [], cfg["instance_group"])):
            params = cfg.setdefault("parameters", {})
            gen = int(params.get(GENERATION_PARAM, {}).get("string_value", "0") or 0) + 1
            params[GENERATION_PARAM] = {"string_value": str(gen)}
        with triton_errors("load_model", model=model):
            self.client.load_model(model, config=json.dumps(cfg), headers=self._headers)
        self._confirm(model, len(slots))

    def load_default(self, model: str) -> None:
        """Load ``model`` from the repository's own config (first load of a model never seen);
        on a GPU node pinned to the node's first GPU, on a CPU node with its threads per slot
        (see the module docstring)."""
        if self.threads is not None:
            self._load_cpu_default(model)
            return
        cfg = self._repository_config(model) if self.spec.kind == "gpu" else None
        if cfg is not None and uses_gpu(cfg):
            cfg["instance_group"] = instance_group("gpu", self.spec.slots[:1])
            with triton_errors("load_model", model=model):
                self.client.load_model(model, config=json.dumps(cfg), headers=self._headers)
        else:
            with triton_errors("load_model", model=model):
                self.client.load_model(model, headers=self._headers)
        self.model_config(model)

    def _load_cpu_default(self, model: str) -> None:
        """The repository's config with this node's threads per slot: learnt from a plain load,
        then reloaded once when its ``ort_threads`` differs. The node's ``model_repository`` is not
        read here: on a CPU node nothing checks that it is the repository the server serves (the
        orchestrator's default is the project's, a test or cluster node serves a copy)."""
        with triton_errors("load_model", model=model):
            self.client.load_model(model, headers=self._headers)
        cfg = self.model_config(model)
        threaded = with_threads(cfg, self.threads)
        if threaded == cfg:
            return
        with triton_errors("load_model", model=model):
            self.client.load_model(model, config=json.dumps(threaded), headers=self._headers)
        self.model_config(model)

    def _repository_config(self, model: str) -> dict:
        """The model's config from the repository (GPU nodes; ModelLoadFailed when missing)."""
        try:
            cfg = repository_config(self.model_repository, model) if self.model_repository else None
        except ValueError as exc:
            raise ModelLoadFailed(f"{model} on {self.url}: {exc}") from None
        if cfg is None:
            raise ModelLoadFailed(
                f"{model} on {self.url}: no {self.model_repository or '<model_repository>'}/{model}/config.pbtxt; a GPU "
                "node needs the served repository's configs to name the GPUs of a first load (--model-repository, "
                "or model_repository in the nodes file)")
        return cfg

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

    def _base_config(self, model: str) -> tuple[dict, bool]:
        """The config to change for a load of ``model``, and whether it is the loaded one."""
        if self.is_ready(model):
            return self.model_config(model), True
        if model in self._configs:
            return copy.deepcopy(self._configs[model]), False
        if self.spec.kind == "gpu":  # first load: one load, with the plan's GPUs
            return self._repository_config(model), False
        self.load_default(model)  # a CPU node: learn the config from the repository's own load
        return self.model_config(model), True

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
