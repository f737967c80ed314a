"""Triton Python-backend adapters of the ``light`` / ``heavy`` and ``discriminator`` models.

Thin: requests are parsed into (prompt, seed) or image lists, the work is cut into chunks of
the control file's batch size for this stage (docs/interfaces.md section 3), and the pure
runtime (:mod:`serving`) does the rest. ``initialize`` validates the model config
against ``stage.json`` and refuses stale artifacts (the cascade config changed since export).
A malformed request gets an INVALID_ARGUMENT error naming the value; the others in the same
batch are still served.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from serving.control import ControlFile, chunk_sizes, default_control_path, resolve_control_path
from serving.model_config import config_parameters
from serving.validation import BadRequest, check_images, check_seeds, decode_prompts, request_parameters

GENERATOR_STAGES = ("light", "heavy")


class ConfigInvalid(ValueError):
    """The model's config.pbtxt does not match the contract or its artifacts."""


def expected_config_hash(params: Mapping[str, str], project_root: str) -> str | None:
    """The hash of the cascade config this model serves: the YAML's current hash when the file exists,
    else the ``config_hash`` parameter rendered at export (None when neither is known)."""
    ref = params.get("cascade_config", "")
    if ref:
        path = Path(ref) if Path(ref).is_absolute() else Path(project_root) / ref
        if path.exists():
            from serving.config import load_cascade  # noqa: PLC0415

            current = load_cascade(path).config_hash
            rendered = params.get("config_hash")
            if rendered and rendered != current:
                from serving.stage import StaleArtifacts  # noqa: PLC0415

                raise StaleArtifacts(f"config.pbtxt was rendered from {ref} with hash {rendered}, but the file now "
                                     f"hashes to {current}: the config changed since the export; re-run `make export`")
            return current
    return params.get("config_hash") or None


def _io(model_config: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    return {t["name"]: t for t in model_config.get(key, [])}


def check_generator_config(model_config: Mapping[str, Any], height_px: int, width_px: int) -> None:
    """Raise :class:`ConfigInvalid` unless the config has PROMPT/SEED in and IMAGE [H, W, 3] UINT8 out."""
    ins, outs = _io(model_config, "input"), _io(model_config, "output")
    if "PROMPT" not in ins or ins["PROMPT"].get("data_type") != "TYPE_STRING":
        raise ConfigInvalid(f"input PROMPT TYPE_STRING missing; inputs are {sorted(ins)}")
    if "SEED" in ins and ins["SEED"].get("data_type") != "TYPE_INT64":
        raise ConfigInvalid(f"input SEED has type {ins['SEED'].get('data_type')}; expected TYPE_INT64")
    img = outs.get("IMAGE")
    want = [height_px, width_px, 3]
    if img is None or img.get("data_type") != "TYPE_UINT8" or [int(d) for d in img.get("dims", [])] != want:
        raise ConfigInvalid(f"output IMAGE is {img}; expected TYPE_UINT8 dims {want} (from stage.json); re-run `make export`")


def check_discriminator_config(model_config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigInvalid` unless the config has IMAGE UINT8 [H, W, 3] in and CONFIDENCE FP32 [1] out."""
    ins, outs = _io(model_config, "input"), _io(model_config, "output")
    img = ins.get("IMAGE")
    if img is None or img.get("data_type") != "TYPE_UINT8" or len(img.get("dims", [])) != 3 or int(img["dims"][2]) != 3:
        raise ConfigInvalid(f"input IMAGE is {img}; expected TYPE_UINT8 dims [H, W, 3]")
    conf = outs.get("CONFIDENCE")
    if conf is None or conf.get("data_type") != "TYPE_FP32":
        raise ConfigInvalid(f"output CONFIDENCE is {conf}; expected TYPE_FP32 dims [1]")


def instance_device(args: Mapping[str, str]) -> int | None:
    """The CUDA device of this model instance: ``model_instance_device_id`` for a ``KIND_GPU``
    instance, None otherwise (Triton reports device 0 for CPU instances too: that is no GPU).

    Raises :class:`ConfigInvalid` for a GPU instance whose device id is not a non-negative integer.
    """
    if args.get("model_instance_kind", "CPU") != "GPU":
        return None
    raw = str(args.get("model_instance_device_id", ""))
    if not raw.isdigit():
        raise ConfigInvalid(f"model_instance_device_id={raw!r} for a KIND_GPU instance; expected a device index >= 0")
    return int(raw)


def run_chunked(fn, items: Sequence[Any], batch_size: int) -> list[np.ndarray]:
    """Apply ``fn`` to consecutive chunks of ``items`` of at most ``batch_size``; returns per-chunk outputs."""
    outs, start = [], 0
    for size in chunk_sizes(len(items), batch_size):
        outs.append(fn(items[start:start + size]))
        start += size
    return outs


class _Base:
    """Shared Triton plumbing: config parsing, control file, error responses."""

    def _setup(self, args: dict[str, str]) -> tuple[dict[str, Any], dict[str, str], Path, str | None]:
        import triton_python_backend_utils as pb_utils  # noqa: PLC0415 - exists only in the stub

        self.pb = pb_utils
        root = os.environ.get("PROJECT_ROOT")
        if not root:
            raise ConfigInvalid("PROJECT_ROOT is not set; start tritonserver through orchestrator.server")
        cfg = json.loads(args["model_config"])
        params = config_parameters(cfg)
        self.name = cfg.get("name", "")
        self.stage = params.get("stage") or self.name
        art = params.get("artifact_dir") or str(Path(args["model_repository"]) / args["model_version"] / "artifacts")
        cf = params.get("control_file")
        self.control = ControlFile(resolve_control_path(cf, root) if cf else
                                   default_control_path(params.get("cascade") or "tiny", root))
        threads = params.get("ort_threads", "0") or "0"
        if not threads.isdigit():
            raise ConfigInvalid(f"parameter ort_threads={threads!r}; expected a non-negative integer")
        self.threads = int(threads)
        self.backend = params.get("backend") or "auto"
        self.device_id = instance_device(args)
        self.where = "CPU/current device" if self.device_id is None else f"GPU {self.device_id}"
        return cfg, params, Path(art), expected_config_hash(params, root)

    def _error(self, message: str, invalid: bool = True):
        code = getattr(self.pb.TritonError, "INVALID_ARG", None) if invalid else None
        err = self.pb.TritonError(message, code) if code is not None else self.pb.TritonError(message)
        return self.pb.InferenceResponse(output_tensors=[], error=err)

    def _batch_size(self) -> int:
        return self.control.get().batch_size_for(self.stage)

    def _serve(self, requests, parse, run, output_name: str, shape_out) -> list[Any]:
        """Parse every request, run all valid items in control-file-sized chunks, split results back."""
        responses: list[Any] = [None] * len(requests)
        items, owners = [], []
        for i, request in enumerate(requests):
            try:
                request_parameters(request.parameters())  # a stage takes no request parameters
                parsed = parse(request)
            except BadRequest as exc:
                responses[i] = self._error(f"{self.name}: {exc}")
                continue
            owners.append((i, len(items), len(parsed)))
            items.extend(parsed)
        if items:
            try:
                out = np.concatenate(run_chunked(run, items, self._batch_size()))
            except Exception as exc:  # noqa: BLE001 - report to every waiting client, keep serving
                for i, _, _ in owners:
                    responses[i] = self._error(f"{self.name}: inference failed: {exc}", invalid=False)
                return responses
            for i, start, n in owners:
                responses[i] = self.pb.InferenceResponse([self.pb.Tensor(output_name, shape_out(out[start:start + n]))])
        return responses


class StageModel(_Base):
    """``light`` / ``heavy``: PROMPT BYTES [1], optional SEED INT64 [1] -> IMAGE UINT8 [H, W, 3]."""

    def initialize(self, args: dict[str, str]) -> None:
        from serving.pipeline import load_stage  # noqa: PLC0415

        cfg, params, art, expected = self._setup(args)
        if self.stage not in GENERATOR_STAGES:
            raise ConfigInvalid(f"parameter stage={self.stage!r}; expected one of {GENERATOR_STAGES}")
        t0 = time.perf_counter()
        self.pipeline = load_stage(art, backend=self.backend, threads=self.threads, expected_hash=expected,
                                   device_id=self.device_id)
        spec = self.pipeline.spec
        if spec.stage and spec.stage != self.stage:
            raise ConfigInvalid(f"{art} holds the {spec.stage!r} stage but this model serves {self.stage!r}")
        check_generator_config(cfg, spec.height_px, spec.width_px)
        self.pb.Logger.log_info(f"{self.name}: {spec.pipeline_class} {spec.steps} steps from {art} "
                                f"(backends {[e.backend for e in self.pipeline.engines.values()]}, "
                                f"{self.where}) "
                                f"in {time.perf_counter() - t0:.1f} s")

    def _parse(self, request) -> list[tuple[str, int]]:
        prompt_t = self.pb.get_input_tensor_by_name(request, "PROMPT")
        if prompt_t is None:
            raise BadRequest("input PROMPT is missing; expected BYTES [batch, 1]")
        prompts = decode_prompts(prompt_t.as_numpy())
        seed_t = self.pb.get_input_tensor_by_name(request, "SEED")
        seeds = check_seeds(None if seed_t is None else seed_t.as_numpy(), len(prompts))
        return list(zip(prompts, seeds))

    def _run(self, chunk: Sequence[tuple[str, int]]) -> np.ndarray:
        prompts, seeds = zip(*chunk)
        return self.pipeline.generate(list(prompts), list(seeds))

    def execute(self, requests):
        return self._serve(requests, self._parse, self._run, "IMAGE", lambda x: x)


class DiscriminatorModel(_Base):
    """``discriminator``: IMAGE UINT8 [H, W, 3] -> CONFIDENCE FP32 [1] = P(real)."""

    def initialize(self, args: dict[str, str]) -> None:
        from serving.discriminator import load_discriminator  # noqa: PLC0415

        cfg, _, art, expected = self._setup(args)
        self.stage = "discriminator"
        check_discriminator_config(cfg)
        self.model = load_discriminator(art, backend=self.backend, threads=self.threads, expected_hash=expected,
                                        device_id=self.device_id)
        self.pb.Logger.log_info(f"{self.name}: discriminator from {art} (backends [{self.model.engine.backend!r}], "
                                f"{self.where})")

    def _parse(self, request) -> list[np.ndarray]:
        t = self.pb.get_input_tensor_by_name(request, "IMAGE")
        if t is None:
            raise BadRequest("input IMAGE is missing; expected UINT8 [batch, H, W, 3]")
        return list(check_images(t.as_numpy()))

    def _run(self, chunk: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.confidence(np.stack(chunk))

    def execute(self, requests):
        return self._serve(requests, self._parse, self._run, "CONFIDENCE", lambda x: x.reshape(-1, 1).astype(np.float32))
