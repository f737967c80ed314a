"""The cascade BLS model: light -> discriminator -> heavy (when confidence < threshold).

``model_repository/cascade/1/model.py`` re-exports :class:`TritonPythonModel`. A default-mode
(non-decoupled) model whose instances are never blocked by a query in flight, so clients keep
plain unary ``infer``:

* ``execute`` gets the batch Triton's dynamic batcher gathered, answers invalid requests
  (INVALID_ARGUMENT) and requests shed on arrival (UNAVAILABLE, ``DROP_MARKER``) at once, hands
  the admitted ones to this instance's asyncio event loop (a thread started in ``initialize``)
  and returns None: the instance takes the next batch while those are in flight;
* each request is answered later through its own response sender with exactly one FINAL
  response, as soon as its own path is done (:mod:`serving.cascade_flow`);
* stage calls are synchronous BLS ``exec`` calls on one thread pool PER STAGE
  (``max_stage_calls`` threads each, set explicitly: the event loop's default executor would
  cap all BLS calls at min(32, cores + 4) and let waiting heavy calls starve light ones).

Decisions are pure functions in :mod:`serving.routing`; work in flight and latency estimates
are shared by all instances (:mod:`serving.shared_state`); the threshold, policy and SLO come
from the control file (:mod:`serving.control`), re-read on mtime change.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import random
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from client.errors import DROP_MARKER
from serving import routing, validation
from serving.cascade_flow import BatchFlow, FlowSettings, Job, Pending, StageError, StageTimeout
from serving.cascade_params import OUTPUTS, CascadeConfig, cascade_yaml_slo_ms, parse_config  # noqa: F401 - re-exported
from serving.control import ControlFile, ControlState
from serving.model_config import config_parameters, pbtxt_parameters  # noqa: F401 - pbtxt_parameters re-exported
from serving.shared_state import SharedState
from serving.triton.metrics import CascadeMetrics

_CODE_ALIASES = {"INVALID_ARGUMENT": "INVALID_ARG"}
IN_FLIGHT_REFRESH_S = 0.1  # how often each instance publishes its in-flight gauge


class _Once:
    """A request's response sender that remembers whether its one FINAL response went out."""

    def __init__(self, sender: Any):
        self.sender, self.sent = sender, False

    def send(self, response: Any, flags: int) -> None:
        self.sent = True
        self.sender.send(response, flags=flags)


class _TritonStages:
    """:class:`serving.cascade_flow.Stages` over BLS calls (runs on the event loop's thread)."""

    def __init__(self, model: "TritonPythonModel"):
        self.m = model

    async def call(self, stage: str, inputs: list[Any], output: str) -> np.ndarray:
        """One BLS request to ``stage``; returns its ``output`` array or raises StageError."""
        m, pb = self.m, self.m.pb
        n = int(inputs[0].as_numpy().shape[0])
        name = m.cfg.stage_models[stage]
        request = pb.InferenceRequest(model_name=name, requested_output_names=[output], inputs=inputs)
        ahead = m.shared.totals()[stage]
        m.shared.add(stage, n)
        t0 = time.perf_counter()
        future = asyncio.get_running_loop().run_in_executor(m.pools[stage], request.exec)
        # The queries leave the backlog when the stage has answered, also after a timeout here.
        future.add_done_callback(lambda f: (m.shared.add(stage, -n), f.cancelled() or f.exception()))
        try:
            # shield: a timeout abandons the wait, not the call (its eventual answer is dropped).
            response = await asyncio.wait_for(asyncio.shield(future), m.cfg.stage_timeout_ms / 1000.0)
        except asyncio.TimeoutError:
            raise StageTimeout(f"stage {stage} ({name}) did not answer within "
                               f"{m.cfg.stage_timeout_ms:g} ms (stage_timeout_ms)") from None
        except Exception as exc:  # noqa: BLE001 - exec itself raised (e.g. the model is not loaded)
            raise StageError(f"stage {stage} ({name}) failed: {exc}") from exc
        ms = 1000.0 * (time.perf_counter() - t0)
        if response.has_error():
            err = response.error()
            code = err.code() if callable(getattr(err, "code", None)) else None
            raise StageError(f"stage {stage} ({name}) failed: {err.message()}", code)
        tensor = pb.get_output_tensor_by_name(response, output)
        if tensor is None:
            raise StageError(f"stage {stage} returned no {output} output")
        out = tensor.as_numpy()
        if out.shape[0] != n:
            raise StageError(f"stage {stage} returned {out.shape[0]} {output} rows for {n} queries")
        m.metrics.stage_latency[stage].observe(ms)
        m.shared.observe_call(stage, ms, n, ahead, m.cfg.ewma_alpha)
        return out

    async def generate(self, stage: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
        pb = self.m.pb
        p = np.array([[s.encode("utf-8")] for s in prompts], dtype=np.object_)
        s = np.array(seeds, dtype=np.int64).reshape(-1, 1)
        return await self.call(stage, [pb.Tensor("PROMPT", p), pb.Tensor("SEED", s)], "IMAGE")

    async def score(self, images: np.ndarray) -> np.ndarray:
        return await self.call("discriminator", [self.m.pb.Tensor("IMAGE", images)], "CONFIDENCE")

    async def route(self, prompts: list[str]) -> np.ndarray:
        p = np.array([[s.encode("utf-8")] for s in prompts], dtype=np.object_)
        return await self.call("router", [self.m.pb.Tensor("PROMPT", p)], "SCORE")

    def ahead(self) -> dict[str, int]:
        return self.m.shared.totals()

    def estimates(self) -> routing.StageEstimates:
        return self.m.estimates(self.m.control.get())


class _TritonResponder:
    """:class:`serving.cascade_flow.Responder`: one FINAL response per request, plus metrics."""

    def __init__(self, model: "TritonPythonModel"):
        self.m = model

    def _send(self, p: Pending, response: Any) -> None:
        self.m.in_flight.discard(p)
        p.token.send(response, flags=self.m.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def result(self, p: Pending, threshold: float) -> None:
        m, pb, n = self.m, self.m.pb, len(p.job.prompts)
        for stage in ("light", "heavy"):  # one metric update per label (each is an IPC to the server)
            count = sum(s == stage for s in p.served)
            if count:
                m.metrics.served[stage].increment(count)
        if p.job.slo_ms:
            m.metrics.answer_slo_ratio.observe((time.monotonic() - p.received_s) * 1000.0 / p.job.slo_ms)
        self._send(p, pb.InferenceResponse(output_tensors=[
            pb.Tensor("IMAGE", np.stack(p.images).astype(np.uint8)),
            pb.Tensor("SERVED_BY", np.array([[s.encode()] for s in p.served], dtype=np.object_)),
            pb.Tensor("CONFIDENCE", p.confidence.reshape(n, 1)),
            pb.Tensor("THRESHOLD", np.full((n, 1), threshold, dtype=np.float32)),
        ]))

    def error(self, p: Pending, exc: StageError) -> None:
        self.m.metrics.errors["stage"].increment(len(p.job.prompts))
        # A stage's INVALID_ARGUMENT stays one (the query was bad); anything else is INTERNAL.
        bad = exc.code is not None and exc.code == getattr(self.m.pb.TritonError, "INVALID_ARG", None)
        self._send(p, self.m.error_response(str(exc), "INVALID_ARGUMENT" if bad else "INTERNAL"))

    def drop(self, p: Pending, message: str) -> None:
        self.m.metrics.drops.increment(len(p.job.prompts))
        self._send(p, self.m.error_response(message, "UNAVAILABLE"))


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
        self.cfg: CascadeConfig = parse_config(model_config, root, stage_params)
        self.name = model_config.get("name", "cascade")
        self.control = ControlFile(self.cfg.control_file)
        self.rng = random.Random(self.cfg.random_seed)
        # The stubs are children of tritonserver: its pid keys the shared file to this server run.
        key = zlib.crc32(f"{os.getppid()}:{args.get('model_repository', '')}/{self.name}".encode())
        instance = args.get("model_instance_name", self.name)
        self.shared = SharedState(Path(tempfile.gettempdir()) / f"diffserve-cascade-v2-{key:08x}.bin",
                                  SharedState.slot_for(instance))
        self.metrics = CascadeMetrics(pb_utils, self.name, stages=routing.STAGE_NAMES, instance=instance)
        self._threshold_shown = self.control.get().threshold
        self._control_error_logged: str | None = None
        self.metrics.threshold.set(self._threshold_shown)
        self.metrics.show_control_version(self.control.get().version)
        self.logger = pb_utils.Logger
        self.in_flight: set[Pending] = set()  # touched on the loop's thread only
        self.pools = {s: concurrent.futures.ThreadPoolExecutor(self.cfg.max_stage_calls, thread_name_prefix=f"bls-{s}")
                      for s in routing.STAGE_NAMES}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cascade-loop", daemon=True)
        self._thread.start()
        self._gauge = asyncio.run_coroutine_threadsafe(self._publish_in_flight(), self.loop)
        self.stages, self.responder = _TritonStages(self), _TritonResponder(self)
        self.logger.log_info(f"{self.name}: control file {self.cfg.control_file}, default SLO {self.cfg.slo_ms} ms, "
                             f"stages {dict(self.cfg.stage_models)}, {self.cfg.max_stage_calls} BLS calls per stage")

    # -- answers -------------------------------------------------------------------------------
    def error_response(self, message: str, code_name: str) -> Any:
        # Triton 2.51 spells INVALID_ARGUMENT as TritonError.INVALID_ARG (gRPC INVALID_ARGUMENT).
        errors = self.pb.TritonError
        code = getattr(errors, code_name, None) or getattr(errors, _CODE_ALIASES.get(code_name, ""), None)
        err = self.pb.TritonError(message) if code is None else self.pb.TritonError(message, code)
        return self.pb.InferenceResponse(output_tensors=[], error=err)

    def _answer_now(self, sender: Any, message: str, code_name: str) -> None:
        sender.send(self.error_response(message, code_name), flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def _publish_in_flight(self) -> None:
        shown = -1
        while True:
            if len(self.in_flight) != shown:
                shown = len(self.in_flight)
                self.metrics.in_flight.set(shown)
            await asyncio.sleep(IN_FLIGHT_REFRESH_S)

    # -- requests --------------------------------------------------------------------------------
    def _parse(self, request: Any, policy: ControlState) -> Job:
        """The request as a Job; copies its inputs (Triton frees them when ``execute`` returns)."""
        prompt_t = self.pb.get_input_tensor_by_name(request, "PROMPT")
        if prompt_t is None:
            raise validation.BadRequest("input PROMPT is missing; expected BYTES [batch, 1]")
        prompts = validation.decode_prompts(prompt_t.as_numpy())
        seed_t = self.pb.get_input_tensor_by_name(request, "SEED")
        seeds = validation.check_seeds(None if seed_t is None else seed_t.as_numpy(), len(prompts))
        options = validation.parse_options(request.parameters())
        route = routing.choose_route(options, policy, self.rng.random())
        return Job(tuple(prompts), tuple(seeds), route, options.slo_ms or policy.slo_ms or self.cfg.slo_ms)

    def _policy(self) -> ControlState:
        policy = self.control.get()
        if self.control.last_error != self._control_error_logged:  # log a broken control file once
            self._control_error_logged = self.control.last_error
            if self.control.last_error:
                self.logger.log_warn(f"{self.name}: keeping the last good control state: {self.control.last_error}")
        if policy.threshold != self._threshold_shown:
            self.metrics.threshold.set(policy.threshold)
            self._threshold_shown = policy.threshold
        self.metrics.show_control_version(policy.version)
        return policy

    def estimates(self, policy: ControlState) -> routing.StageEstimates:
        """The shared estimates, with the plan's instances per stage from the control state."""
        return dataclasses.replace(self.shared.estimates(), instances=dict(policy.instances))

    def _admit(self, received_s: float, requests: list[Any], senders: list[Any], policy: ControlState) -> list[Pending]:
        """Answer invalid and shed requests now; the others become Pending (not yet answered)."""
        jobs: list[tuple[Any, Job]] = []
        n_invalid = n_dropped = 0
        for request, sender in zip(requests, senders):
            try:
                jobs.append((sender, self._parse(request, policy)))
            except validation.BadRequest as exc:
                n_invalid += 1
                self._answer_now(sender, f"{self.name}: {exc}", "INVALID_ARGUMENT")
        admit_factor = routing.admit_limit_factor(policy, self.cfg.drop_factor)
        decisions = routing.admit_batch([(j.route, len(j.prompts), j.slo_ms) for _, j in jobs], self.shared.totals(),
                                        self.estimates(policy), admit_factor)
        admitted = []
        for (sender, job), decision in zip(jobs, decisions):
            if decision.admitted:
                admitted.append(Pending(job, received_s, routing.deadline_s(received_s, job.slo_ms, self.cfg.drop_factor),
                                        token=sender))
            else:
                n_dropped += len(job.prompts)
                self._answer_now(sender, routing.drop_message(DROP_MARKER, decision, job.slo_ms, admit_factor),
                                 "UNAVAILABLE")
        if n_invalid:
            self.metrics.errors["invalid"].increment(n_invalid)
        if n_dropped:
            self.metrics.drops.increment(n_dropped)
        return admitted

    async def _serve(self, pending: list[Pending], policy: ControlState) -> None:
        self.in_flight.update(pending)
        settings = FlowSettings(
            threshold=policy.threshold, heavy_batch=policy.batch_size_for("heavy"), drop_factor=self.cfg.drop_factor,
            marker=DROP_MARKER, on_confidences=self.metrics.observe_confidences, on_deferred=self._deferred,
            router_threshold=policy.router_threshold, on_routed=self._routed)
        try:
            await BatchFlow(self.stages, self.responder, settings, time.monotonic).run(pending)
        except Exception as exc:  # noqa: BLE001 - BatchFlow.run answered every request; log the bug
            self.logger.log_error(f"{self.name}: batch failed: {exc!r}")

    def _routed(self, n_routed: int, n_scored: int) -> None:
        if n_routed:
            self.metrics.routed.increment(n_routed)

    def _deferred(self, n_deferred: int, n_scored: int) -> None:
        self.shared.observe_deferrals(n_deferred / n_scored, self.cfg.ewma_alpha)
        if n_deferred:
            self.metrics.deferrals.increment(n_deferred)

    def execute(self, requests: list[Any]) -> None:
        """Answer invalid and shed requests now, start the others on the event loop, return None."""
        received_s = time.monotonic()
        senders = [_Once(r.get_response_sender()) for r in requests]
        try:
            policy = self._policy()
            pending = self._admit(received_s, requests, senders, policy)
            if pending:
                asyncio.run_coroutine_threadsafe(self._serve(pending, policy), self.loop)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave requests unanswered
            self.logger.log_error(f"{self.name}: execute failed: {exc!r}")
            for sender in senders:
                if not sender.sent:
                    self._answer_now(sender, f"{self.name}: internal error: {exc!r}", "INTERNAL")
        return None

    def finalize(self) -> None:
        """Answer what is still in flight (UNAVAILABLE), stop the loop and the pools."""
        async def close() -> None:
            self._gauge.cancel()
            for p in list(self.in_flight):
                if not p.answered:
                    p.answered = True
                    self.responder.drop(p, f"{DROP_MARKER} request dropped: the cascade model is unloading")

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        # Best effort: instances still running keep their mapping; a later instance recreates the file.
        with contextlib.suppress(OSError):
            self.shared.path.unlink()
        self.logger.log_info(f"{self.name}: finalize")
