"""The cascade BLS model: light -> discriminator -> heavy (when confidence < threshold).

``model_repository/cascade/1/model.py`` re-exports :class:`TritonPythonModel`. One
``execute`` call gets the batch Triton's dynamic batcher gathered; it answers invalid requests
with INVALID_ARGUMENT, sheds requests predicted to finish past ``drop_factor`` x SLO (error
with ``DROP_MARKER``, code UNAVAILABLE), and sends the rest as ONE request to ``light``, ONE
to ``discriminator`` (the cascade-routed images) and ONE to ``heavy`` (the deferred subset;
queries forced to heavy go in a concurrent call of their own). A stage error becomes the
error of exactly the requests whose queries were in that stage call.

Decisions are pure functions in :mod:`serving.routing`; the threshold, policy
and SLO come from the control file (:mod:`serving.control`), re-read on mtime change.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from serving.control import ControlFile, ControlState, resolve_control_path
from serving import routing, validation
from serving.model_config import config_parameters, pbtxt_parameters
from serving.triton.metrics import CascadeMetrics
from client.errors import DROP_MARKER

OUTPUTS = ("IMAGE", "SERVED_BY", "CONFIDENCE", "THRESHOLD")
_CODE_ALIASES = {"INVALID_ARGUMENT": "INVALID_ARG"}


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
    """The cascade's ``config.pbtxt`` parameters, validated.

    ``slo_ms``: default SLO when neither the control file nor the request sets one (None: no
    shedding). ``drop_factor``: shed when predicted latency > drop_factor x SLO (paper: 1.5).
    ``ewma_alpha``: weight of the newest latency sample. ``stage_models``: Triton model name
    per stage. ``random_seed``: seed of the ``random`` routing policy's generator.
    ``stage_timeout_ms``: a stage call that has not answered after this long fails its queries
    (INTERNAL, "did not answer within"), so a hung stage cannot hang the cascade's clients.
    """

    control_file: Path
    slo_ms: float | None = None
    drop_factor: float = 1.5
    ewma_alpha: float = 0.2
    stage_models: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"light": "light", "discriminator": "discriminator", "heavy": "heavy"})
    random_seed: int = 0
    stage_timeout_ms: float = 60_000.0


def cascade_yaml_slo_ms(stage_params: Mapping[str, str], project_root: str | Path | None) -> float | None:
    """``slo_ms`` of the cascade YAML a stage model was exported from (its ``cascade_config``
    parameter), or None when there is no such file or value."""
    ref = stage_params.get("cascade_config", "")
    if not ref:
        return None
    path = resolve_control_path(ref, project_root)  # same rule: relative to the project root
    try:
        import yaml  # noqa: PLC0415

        v = yaml.safe_load(path.read_text()).get("slo_ms")
    except (OSError, AttributeError, ValueError):
        return None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def parse_config(model_config: Mapping[str, Any], project_root: str | Path | None = None,
                 stage_params: Mapping[str, str] | None = None) -> CascadeConfig:
    """Validate the model config dict Triton passes to ``initialize`` (ValueError if bad).

    ``stage_params``: the light stage model's config parameters. An empty ``control_file``
    means the light stage's (so the cascade follows whichever cascade was exported), an empty
    ``slo_ms`` the cascade YAML's ``slo_ms`` (named by the stage's ``cascade_config``).
    """
    stage_params = stage_params or {}
    name = model_config.get("name", "cascade")
    if int(model_config.get("max_batch_size", 0)) < 1:
        raise ValueError(f"{name}: max_batch_size={model_config.get('max_batch_size')}; expected >= 1 (batching on)")
    have = {o["name"] for o in model_config.get("output", [])}
    if set(OUTPUTS) - have:
        raise ValueError(f"{name}: config outputs {sorted(have)}; expected {list(OUTPUTS)}")
    params = config_parameters(model_config)
    known = {"control_file", "slo_ms", "drop_factor", "ewma_alpha", "light_model", "heavy_model",
             "discriminator_model", "random_seed", "stage_timeout_ms"}
    if set(params) - known:
        raise ValueError(f"{name}: unknown config parameters {sorted(set(params) - known)}; expected {sorted(known)}")

    def number(key: str, default: float | None, lo: float, hi: float) -> float | None:
        raw = params.get(key, "")
        if raw == "":
            return default
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"{name}: parameter {key}={raw!r}; expected a number in ({lo}, {hi}]") from None
        if not (math.isfinite(v) and lo < v <= hi):
            raise ValueError(f"{name}: parameter {key}={raw!r}; expected a number in ({lo}, {hi}]")
        return v

    control = params.get("control_file") or stage_params.get("control_file") or f"runs/control/{name}.json"
    slo_ms = number("slo_ms", None, 0.0, 3.6e6)
    return CascadeConfig(
        control_file=resolve_control_path(control, project_root),
        slo_ms=slo_ms if slo_ms is not None else cascade_yaml_slo_ms(stage_params, project_root),
        drop_factor=number("drop_factor", 1.5, 0.0, 100.0),
        ewma_alpha=number("ewma_alpha", 0.2, 0.0, 1.0),
        stage_models={s: params.get(f"{s}_model") or s for s in ("light", "discriminator", "heavy")},
        random_seed=int(number("random_seed", 0, -1.0, 2.0**32)),
        stage_timeout_ms=number("stage_timeout_ms", 60_000.0, 0.0, 3.6e6),
    )


class SharedState:
    """State shared by all instances of this cascade model (each instance is its own process).

    * Backlog: queries in flight at each stage. Each instance runs one ``execute`` at a time,
      so the work ahead of a new batch is what the OTHER instances have in flight. Each
      instance owns one row (one writer per row: no locks needed); readers sum the rows.
    * Estimates: EWMA round trip (ms) and size (queries) of the stage calls, and the deferral
      rate, learnt from every instance's calls (a lost update between two writers only drops
      one EWMA sample).

    Both live in a small memory-mapped file named after the server process, the repository
    and the model, so a restarted server starts cold.
    """

    N_SLOTS = 256

    def __init__(self, path: Path, slot: int):
        self.path, self.slot = path, slot % self.N_SLOTS
        n_stages = len(routing.STAGE_NAMES)
        n_counts, n_est = self.N_SLOTS * n_stages, 2 * n_stages + 1
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = 8 * (n_counts + n_est)
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self._counts = np.memmap(path, dtype=np.int64, mode="r+", shape=(self.N_SLOTS, n_stages))
        self._est = np.memmap(path, dtype=np.float64, mode="r+", shape=(n_est,), offset=8 * n_counts)
        self._counts[self.slot] = 0  # a restarted instance must not inherit a crashed one's counts

    @staticmethod
    def slot_for(instance_name: str) -> int:
        """Row index for a Triton instance name such as ``cascade_0_1`` (group 0, instance 1)."""
        m = re.search(r"_(\d+)_(\d+)$", instance_name)
        if m:
            return int(m.group(1)) * 32 + int(m.group(2))
        m = re.search(r"_(\d+)$", instance_name)
        return int(m.group(1)) if m else zlib.crc32(instance_name.encode())

    def add(self, stage: str, n: int) -> None:
        self._counts[self.slot, routing.STAGE_NAMES.index(stage)] += n

    def totals(self) -> dict[str, int]:
        """Queries in flight per stage over all instances."""
        sums = np.asarray(self._counts).sum(axis=0)
        return {s: int(max(sums[i], 0)) for i, s in enumerate(routing.STAGE_NAMES)}

    def estimates(self) -> routing.StageEstimates:
        """The shared EWMA estimates (a stage with no observation yet is absent)."""
        e = np.asarray(self._est).copy()
        ms = {s: float(e[2 * i]) for i, s in enumerate(routing.STAGE_NAMES) if e[2 * i + 1] > 0}
        items = {s: float(e[2 * i + 1]) for i, s in enumerate(routing.STAGE_NAMES) if e[2 * i + 1] > 0}
        return routing.StageEstimates(batch_ms=ms, batch_items=items, defer_rate=float(e[-1]))

    def observe_call(self, stage: str, ms: float, n_items: int, alpha: float) -> None:
        """Fold one stage call (round trip ``ms`` for ``n_items`` queries) into the EWMAs."""
        i = routing.STAGE_NAMES.index(stage)
        seen = self._est[2 * i + 1] > 0
        self._est[2 * i] = routing.ewma(float(self._est[2 * i]) if seen else None, ms, alpha)
        self._est[2 * i + 1] = routing.ewma(float(self._est[2 * i + 1]) if seen else None, n_items, alpha)

    def observe_deferrals(self, fraction: float, alpha: float) -> None:
        """Fold one batch's deferred fraction into the deferral-rate EWMA."""
        self._est[-1] = routing.ewma(float(self._est[-1]), fraction, alpha)


class StageError(RuntimeError):
    """A stage call failed; ``code`` is the stage's Triton error code when known."""

    def __init__(self, message: str, code: Any = None):
        super().__init__(message)
        self.code = code


class StageTimeout(StageError):
    """A stage call did not answer within ``stage_timeout_ms`` (not the queries' fault: no retry)."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: jobs compare by identity
class _Job:
    """One valid request: its queries and where they go."""

    index: int
    prompts: list[str]
    seeds: list[int]
    route: str
    slo_ms: float | None


class TritonPythonModel:
    """Triton Python-backend entry point of the cascade (see the module docstring)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # noqa: PLC0415 - exists only in the stub

        self.pb = pb_utils
        model_config = json.loads(args["model_config"])
        root = os.environ.get("PROJECT_ROOT")
        # The light stage's rendered config names the control file and the cascade YAML (its SLO).
        light = config_parameters(model_config).get("light_model") or "light"
        light_cfg = Path(args.get("model_repository", ".")).parent / light / "config.pbtxt"
        stage_params = pbtxt_parameters(light_cfg.read_text()) if light_cfg.exists() else {}
        self.cfg = parse_config(model_config, root, stage_params)
        self.name = model_config.get("name", "cascade")
        self.control = ControlFile(self.cfg.control_file)
        self.rng = random.Random(self.cfg.random_seed)
        # The stubs are children of tritonserver: its pid keys the shared file to this server run.
        key = zlib.crc32(f"{os.getppid()}:{args.get('model_repository', '')}/{self.name}".encode())
        self.shared = SharedState(Path(tempfile.gettempdir()) / f"diffserve-cascade-{key:08x}.bin",
                                  SharedState.slot_for(args.get("model_instance_name", self.name)))
        self.metrics = CascadeMetrics(pb_utils, self.name)
        self._threshold_shown = self.control.get().threshold
        self._control_error_logged: str | None = None
        self.metrics.threshold.set(self._threshold_shown)
        self.metrics.show_control_version(self.control.get().version)
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{self.name}: control file {self.cfg.control_file}, default SLO {self.cfg.slo_ms} ms, "
                             f"stages {dict(self.cfg.stage_models)}")

    # -- errors ------------------------------------------------------------------------------
    def _error_response(self, message: str, code_name: str) -> Any:
        # Triton 2.51 spells INVALID_ARGUMENT as TritonError.INVALID_ARG (gRPC INVALID_ARGUMENT).
        errors = self.pb.TritonError
        code = getattr(errors, code_name, None) or getattr(errors, _CODE_ALIASES.get(code_name, ""), None)
        err = self.pb.TritonError(message) if code is None else self.pb.TritonError(message, code)
        return self.pb.InferenceResponse(output_tensors=[], error=err)

    # -- request parsing ---------------------------------------------------------------------
    def _parse(self, index: int, request: Any, policy: ControlState) -> _Job:
        prompt_t = self.pb.get_input_tensor_by_name(request, "PROMPT")
        if prompt_t is None:
            raise validation.BadRequest("input PROMPT is missing; expected BYTES [batch, 1]")
        prompts = validation.decode_prompts(prompt_t.as_numpy())
        seed_t = self.pb.get_input_tensor_by_name(request, "SEED")
        seeds = validation.check_seeds(None if seed_t is None else seed_t.as_numpy(), len(prompts))
        options = validation.parse_options(request.parameters())
        route = routing.choose_route(options, policy, self.rng.random())
        slo_ms = options.slo_ms or policy.slo_ms or self.cfg.slo_ms
        return _Job(index, prompts, seeds, route, slo_ms)

    # -- stage calls -------------------------------------------------------------------------
    async def _call(self, stage: str, inputs: list[Any], output: str) -> np.ndarray:
        """One BLS request to ``stage``; returns its ``output`` array or raises StageError."""
        n = int(inputs[0].as_numpy().shape[0])
        request = self.pb.InferenceRequest(model_name=self.cfg.stage_models[stage],
                                           requested_output_names=[output], inputs=inputs)
        self.shared.add(stage, n)
        t0 = time.perf_counter()
        try:
            # wait_for abandons the call, not the stage: its eventual answer is dropped.
            response = await asyncio.wait_for(request.async_exec(), self.cfg.stage_timeout_ms / 1000.0)
        except asyncio.TimeoutError:
            raise StageTimeout(f"stage {stage} ({self.cfg.stage_models[stage]}) did not answer within "
                               f"{self.cfg.stage_timeout_ms:g} ms (stage_timeout_ms)") from None
        finally:
            self.shared.add(stage, -n)
        ms = 1000.0 * (time.perf_counter() - t0)
        if response.has_error():
            err = response.error()
            code = err.code() if callable(getattr(err, "code", None)) else None
            raise StageError(f"stage {stage} ({self.cfg.stage_models[stage]}) failed: {err.message()}", code)
        tensor = self.pb.get_output_tensor_by_name(response, output)
        if tensor is None:
            raise StageError(f"stage {stage} returned no {output} output")
        out = tensor.as_numpy()
        if out.shape[0] != n:
            raise StageError(f"stage {stage} returned {out.shape[0]} {output} rows for {n} queries")
        self.metrics.stage_latency[stage].observe(ms)
        self.shared.observe_call(stage, ms, n, self.cfg.ewma_alpha)
        return out

    async def _generate(self, stage: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
        p = np.array([[s.encode("utf-8")] for s in prompts], dtype=np.object_)
        s = np.array(seeds, dtype=np.int64).reshape(-1, 1)
        return await self._call(stage, [self.pb.Tensor("PROMPT", p), self.pb.Tensor("SEED", s)], "IMAGE")

    # -- the cascade ---------------------------------------------------------------------------
    async def _serve(self, jobs: list[_Job], threshold: float) -> dict[int, Any]:
        """Run admitted jobs through the stages; returns request index -> response."""
        items = [(j, k) for j in jobs for k in range(len(j.prompts))]
        image: list[np.ndarray | None] = [None] * len(items)
        served = [""] * len(items)
        conf = np.full(len(items), np.nan, dtype=np.float32)
        error: list[StageError | None] = [None] * len(items)

        async def isolated(call, idx: list[int]) -> dict[int, np.ndarray]:
            """``call(idx)`` as {query index: output row}. If the call fails for queries of
            several requests, each request's queries are retried alone, so that only the
            request that caused the failure gets the error (recorded in ``error``)."""
            try:
                return dict(zip(idx, await call(idx)))
            except StageTimeout as exc:  # retrying per request would only wait again
                for i in idx:
                    error[i] = exc
                return {}
            except StageError as exc:
                groups: dict[int, list[int]] = {}
                for i in idx:
                    groups.setdefault(id(items[i][0]), []).append(i)
                if len(groups) == 1:
                    for i in idx:
                        error[i] = exc
                    return {}
            rows: dict[int, np.ndarray] = {}
            for part in await asyncio.gather(*(isolated(call, g) for g in groups.values())):
                rows.update(part)
            return rows

        async def run(stage: str, idx: list[int]) -> list[int]:
            """Generate queries ``idx`` on ``stage``; returns the indices that succeeded."""
            async def call(ix: list[int]) -> np.ndarray:
                return await self._generate(stage, [items[i][0].prompts[items[i][1]] for i in ix],
                                            [items[i][0].seeds[items[i][1]] for i in ix])

            rows = await isolated(call, idx)
            for i, img in rows.items():
                image[i], served[i] = img, stage
            return [i for i in idx if i in rows]

        async def light_branch() -> None:
            idx = [i for i, (j, _) in enumerate(items) if j.route in ("cascade", "light")]
            if not idx:
                return
            ok = await run("light", idx)
            casc = [i for i in ok if items[i][0].route == "cascade"]
            if not casc:
                return

            async def disc_call(ix: list[int]) -> np.ndarray:
                images = np.stack([image[i] for i in ix])
                return await self._call("discriminator", [self.pb.Tensor("IMAGE", images)], "CONFIDENCE")

            rows = await isolated(disc_call, casc)
            casc = [i for i in casc if i in rows]
            if not casc:
                return
            c = np.array([float(np.asarray(rows[i]).reshape(-1)[0]) for i in casc], dtype=np.float32)
            conf[casc] = c
            self.metrics.observe_confidences(c)
            deferred = [i for i, d in zip(casc, routing.defer_mask(c, threshold)) if d]
            self.shared.observe_deferrals(len(deferred) / len(casc), self.cfg.ewma_alpha)
            if deferred:
                self.metrics.deferrals.increment(len(deferred))
                await run("heavy", deferred)

        async def heavy_branch() -> None:
            idx = [i for i, (j, _) in enumerate(items) if j.route == "heavy"]
            if idx:
                await run("heavy", idx)

        await asyncio.gather(light_branch(), heavy_branch())
        out: dict[int, Any] = {}
        for job in jobs:
            idx = [i for i, (j, _) in enumerate(items) if j is job]
            errs = [error[i] for i in idx if error[i] is not None]
            if errs:
                self.metrics.errors["stage"].increment(len(idx))
                # A stage's INVALID_ARGUMENT stays one (the query was bad); anything else is INTERNAL.
                bad = errs[0].code is not None and errs[0].code == getattr(self.pb.TritonError, "INVALID_ARG", None)
                out[job.index] = self._error_response(str(errs[0]), "INVALID_ARGUMENT" if bad else "INTERNAL")
                continue
            for stage in ("light", "heavy"):  # one metric update per label (each is an IPC to the server)
                count = sum(served[i] == stage for i in idx)
                if count:
                    self.metrics.served[stage].increment(count)
            n = len(idx)
            out[job.index] = self.pb.InferenceResponse(output_tensors=[
                self.pb.Tensor("IMAGE", np.stack([image[i] for i in idx]).astype(np.uint8)),
                self.pb.Tensor("SERVED_BY", np.array([[served[i].encode()] for i in idx], dtype=np.object_)),
                self.pb.Tensor("CONFIDENCE", conf[idx].reshape(n, 1)),
                self.pb.Tensor("THRESHOLD", np.full((n, 1), threshold, dtype=np.float32)),
            ])
        return out

    async def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of the batch: outputs, INVALID_ARGUMENT, a drop, or a stage error."""
        responses: list[Any] = [None] * len(requests)
        try:
            policy = self.control.get()
            if self.control.last_error != self._control_error_logged:  # log a broken control file once
                self._control_error_logged = self.control.last_error
                if self.control.last_error:
                    self.logger.log_warn(f"{self.name}: keeping the last good control state: {self.control.last_error}")
            if policy.threshold != self._threshold_shown:
                self.metrics.threshold.set(policy.threshold)
                self._threshold_shown = policy.threshold
            self.metrics.show_control_version(policy.version)
            jobs: list[_Job] = []
            for i, request in enumerate(requests):
                try:
                    jobs.append(self._parse(i, request, policy))
                except validation.BadRequest as exc:
                    self.metrics.errors["invalid"].increment(1)
                    responses[i] = self._error_response(f"{self.name}: {exc}", "INVALID_ARGUMENT")
            ahead, estimates = self.shared.totals(), self.shared.estimates()
            admitted, n_dropped = [], 0
            decisions = routing.admit_batch([(j.route, len(j.prompts), j.slo_ms) for j in jobs], ahead, estimates,
                                      self.cfg.drop_factor)
            for job, decision in zip(jobs, decisions):
                if decision.admitted:
                    admitted.append(job)
                    continue
                n_dropped += len(job.prompts)
                responses[job.index] = self._error_response(
                    routing.drop_message(DROP_MARKER, decision, job.slo_ms, self.cfg.drop_factor), "UNAVAILABLE")
            if n_dropped:
                self.metrics.drops.increment(n_dropped)
            if admitted:
                for index, response in (await self._serve(admitted, policy.threshold)).items():
                    responses[index] = response
        except Exception as exc:  # a bug must not leave requests unanswered
            self.logger.log_error(f"{self.name}: execute failed: {exc!r}")
            for i, r in enumerate(responses):
                if r is None:
                    responses[i] = self._error_response(f"{self.name}: internal error: {exc!r}", "INTERNAL")
        return responses

    def finalize(self) -> None:
        # Best effort: instances still running keep their mapping; a later instance recreates the file.
        with contextlib.suppress(OSError):
            self.shared.path.unlink()
        self.logger.log_info(f"{self.name}: finalize")
