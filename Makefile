# DiffServe-on-Triton: query-aware cascade serving for text-to-image diffusion.
# Every target that needs the environment depends on `setup` (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
HOST ?= 127.0.0.1
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
CASCADE ?= configs/tiny.yaml
PYTEST_ARGS ?=
EXPORT_ARGS ?=
MODELS ?=
DEMO_ARGS ?= --threshold median
# make serve: the orchestrator's planner policy, control window, worker slots (auto: GPUs, else
# CPU_SLOTS CPU instance slots), calibration folder and the admin key file (created 0600).
POLICY ?= diffserve
WINDOW_S ?= 5
SLOTS ?= auto
SLO_MS ?= 5000
PROFILE_DIR ?= profiles/$(basename $(notdir $(CASCADE)))
ADMIN_KEY_FILE ?= runs/server/admin_key
LIVE_ARGS ?=

.PHONY: setup test serve stop bench-live export zoo tiny-report profile calibrate demo perf bench-overhead bench-sim bench-planner clean help

help:
	@grep -E '^## ' Makefile | sed 's/## //'

## setup      venv with pinned packages, Triton stub, perf_analyzer's libb64 (idempotent)
setup:
	@bash scripts/setup.sh

## test       setup + the whole test suite (what CI runs)
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## serve      start tritonserver on $(HOST) (ports HTTP_PORT/GRPC_PORT/METRICS_PORT) AND the orchestrator (POLICY, WINDOW_S) on the exported $(CASCADE); model control + statistics need the key in $(ADMIN_KEY_FILE)
serve: setup
	@test -d model_repository/light/1/artifacts || { echo "no exported cascade in model_repository/: run 'make export' first"; exit 1; }
	@test -f $(PROFILE_DIR)/quality_curve.json || $(MAKE) profile calibrate CASCADE=$(CASCADE)
	@mkdir -p $(dir $(ADMIN_KEY_FILE)); test -s $(ADMIN_KEY_FILE) || (umask 077; echo "x-diffserve-admin:$$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" > $(ADMIN_KEY_FILE))
	DIFFSERVE_ADMIN_KEY=$$(cat $(ADMIN_KEY_FILE)) $(PY) -m orchestrator.server start --host $(HOST) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) $(foreach m,$(MODELS),--load-model $(m))
	DIFFSERVE_ADMIN_KEY=$$(cat $(ADMIN_KEY_FILE)) $(PY) -m orchestrator start --node $(HOST):$(GRPC_PORT) --metrics-url http://$(HOST):$(METRICS_PORT)/metrics --slots $(SLOTS) --profiles $(PROFILE_DIR) --policy $(POLICY) --window-s $(WINDOW_S) --slo-ms $(SLO_MS)

## stop       stop the orchestrator, then the server started by `make serve`
stop:
	@$(PY) -m orchestrator stop
	@$(PY) -m orchestrator.server stop

## bench-live live replay of a trace against Triton + orchestrator: dynamic vs clipper-light/-heavy/static -> benchmarks/results/live/
bench-live: export
	@test -f $(PROFILE_DIR)/quality_curve.json || $(MAKE) profile calibrate CASCADE=$(CASCADE)
	$(PY) -m benchmarks.live.run --cascade $(CASCADE) $(LIVE_ARGS)

## export     export $(CASCADE) (light, heavy, discriminator) into model_repository/, verify, render configs
export: setup
	$(PY) -m export export --cascade $(CASCADE) $(EXPORT_ARGS)

## profile    latency per batch size of each exported stage on this device -> profiles/<cascade>/<device>.json
profile: export
	$(PY) -m export profile --cascade $(CASCADE)

## calibrate  deferral curve f(t) and quality curve from held-apart prompts -> profiles/<cascade>/
calibrate: export
	$(PY) -m export calibrate --cascade $(CASCADE)

## bench-sim  simulator: the paper's comparison, all MAF traces, the 1,024-GPU scale run, the load sweep, sim vs the live run, the HADIS hybrid-routing comparison -> benchmarks/results/sim/
bench-sim: setup
	$(PY) -m benchmarks.sim --out benchmarks/results/sim
	$(PY) -m benchmarks.sim --only hybrid --out benchmarks/results/sim
	$(PY) -m benchmarks.sim --only hybrid --latency-factor 0.1 --out benchmarks/results/sim

## bench-planner  planner solve time p50/p95 at 16-1,024 GPUs, 2 and 4 variants, and with the prompt router (HADIS data) -> benchmarks/results/planner/
bench-planner: setup
	$(PY) benchmarks/bench_planner.py
	$(PY) benchmarks/bench_planner.py --hybrid --gpus 16 1024

## demo       setup, export $(CASCADE) if needed, serve it, send easy + hard prompts -> runs/demo/ (server always stopped)
demo: export
	$(PY) -m benchmarks.demo --cascade $(CASCADE) $(DEMO_ARGS)

## perf       perf_analyzer against `cascade`: concurrency + request-rate, short windows -> runs/perf/<UTC time>/
perf: export
	$(PY) -m benchmarks.perf.run $(PERF_ARGS)

## bench-overhead  cascade through Triton vs the same pipeline in-process, batch 1 -> runs/bench_overhead/
bench-overhead: export
	$(PY) -m benchmarks.bench_overhead

## zoo        retrain the embedded tiny cascade from seeds (CUDA if present, else CPU: hours) -> zoo/weights/
zoo: setup
	$(PY) -m zoo.build $(ZOO_ARGS)

## tiny-report  fidelity/FID by difficulty, discriminator AUC, cascade curve, CPU cost -> benchmarks/results/tiny/
tiny-report: setup
	$(PY) -m zoo.report $(TINY_REPORT_ARGS)

clean:
	rm -rf runs .pytest_cache
