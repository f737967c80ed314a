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
DEMO_ARGS ?= --threshold median --router-share 0.5
# make serve: the orchestrator's planner policy, control window, worker slots (auto: GPUs, else
# CPU_SLOTS CPU instance slots), calibration folder and the admin key file (created 0600).
# SLO_MS empty: the $(CASCADE) YAML's slo_ms; set, it overrides the YAML (logged).
POLICY ?= diffserve
WINDOW_S ?= 5
SLOTS ?= auto
SLO_MS ?=
PROFILE_DIR ?= profiles/$(basename $(notdir $(CASCADE)))
ADMIN_KEY_FILE ?= runs/server/admin_key
LIVE_ARGS ?=
# make cluster: NODES tritonservers with NODE_SLOTS CPU slots each behind HAProxy on CLUSTER_PORT,
# Prometheus on PROMETHEUS_PORT (runs/cluster/cluster.json has every address).
NODES ?= 3
NODE_SLOTS ?= 2
CLUSTER_PORT ?= 9001
PROMETHEUS_PORT ?= 9090
CLUSTER_ARGS ?=
BENCH_CLUSTER_ARGS ?=

.PHONY: setup test serve stop cluster cluster-stop bench-cluster bench-live bench-restart export zoo tiny-report profile calibrate demo perf bench-overhead bench-cascade bench-sim bench-planner gpu-check clean help

help:
	@grep -E '^## ' Makefile | sed 's/## //'

## setup      venv with pinned packages, Triton stub, perf_analyzer's libb64 (idempotent)
setup:
	@bash scripts/setup.sh

## test       setup + the whole test suite (what CI runs)
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## serve      start tritonserver on $(HOST) (ports HTTP_PORT/GRPC_PORT/METRICS_PORT) AND the orchestrator (POLICY, WINDOW_S, SLO of $(CASCADE)) on the exported $(CASCADE); it restarts the server if it exits; model control + statistics need the key in $(ADMIN_KEY_FILE)
serve: setup
	@test -d model_repository/light/1/artifacts || { echo "no exported cascade in model_repository/: run 'make export' first"; exit 1; }
	@test -f $(PROFILE_DIR)/quality_curve.json $(if $(filter hybrid,$(POLICY)),&& test -f $(PROFILE_DIR)/hybrid_surface.json) || $(MAKE) profile calibrate CASCADE=$(CASCADE)
	@mkdir -p $(dir $(ADMIN_KEY_FILE)); test -s $(ADMIN_KEY_FILE) || (umask 077; echo "x-diffserve-admin:$$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" > $(ADMIN_KEY_FILE))
	DIFFSERVE_ADMIN_KEY=$$(cat $(ADMIN_KEY_FILE)) $(PY) -m orchestrator.server start --host $(HOST) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) $(foreach m,$(MODELS),--load-model $(m))
	DIFFSERVE_ADMIN_KEY=$$(cat $(ADMIN_KEY_FILE)) $(PY) -m orchestrator start --node $(HOST):$(GRPC_PORT) --metrics-url http://$(HOST):$(METRICS_PORT)/metrics --slots $(SLOTS) --cascade $(CASCADE) --profiles $(PROFILE_DIR) --policy $(POLICY) --window-s $(WINDOW_S) $(if $(SLO_MS),--slo-ms $(SLO_MS)) --server-state-dir runs/server

## stop       stop the orchestrator, then the server started by `make serve` (exit 1 if the server had already exited)
stop:
	@$(PY) -m orchestrator stop
	@$(PY) -m orchestrator.server stop

## cluster    NODES (3) tritonservers as nodes + one orchestrator over all their slots + a control agent per node + HAProxy (gRPC on CLUSTER_PORT, weights from the plan) + Prometheus (PROMETHEUS_PORT) -> runs/cluster/
cluster: setup
	@test -d model_repository/light/1/artifacts || { echo "no exported cascade in model_repository/: run 'make export' first"; exit 1; }
	@test -f $(PROFILE_DIR)/quality_curve.json || $(MAKE) profile calibrate CASCADE=$(CASCADE)
	$(PY) -m deploy start --nodes $(NODES) --slots-per-node $(NODE_SLOTS) --profiles $(PROFILE_DIR) --policy $(POLICY) --window-s $(WINDOW_S) --slo-ms $(SLO_MS) --grpc-port $(CLUSTER_PORT) --prometheus-port $(PROMETHEUS_PORT) $(CLUSTER_ARGS)

## cluster-stop  stop everything `make cluster` started (orchestrator first, nodes last)
cluster-stop:
	@$(PY) -m deploy stop

## bench-cluster  3 nodes behind HAProxy, a compressed MAF trace, one node killed mid-trace; worst of 3 runs -> benchmarks/results/cluster/
bench-cluster: export
	@test -f $(PROFILE_DIR)/quality_curve.json || $(MAKE) profile calibrate CASCADE=$(CASCADE)
	$(PY) -m benchmarks.cluster --profiles $(PROFILE_DIR) $(BENCH_CLUSTER_ARGS)

## bench-live live replay of a trace against Triton + orchestrator: quality, hybrid (router), diffserve vs clipper-light/-heavy/static -> benchmarks/results/live/
bench-live: export
	@test -f $(PROFILE_DIR)/quality_curve.json || $(MAKE) profile calibrate CASCADE=$(CASCADE)
	$(PY) -m benchmarks.live.run --cascade $(CASCADE) $(LIVE_ARGS)

## bench-restart  SIGKILL tritonserver 5 times under a request stream; the orchestrator restarts it -> benchmarks/results/restart/
bench-restart: export
	$(PY) -m benchmarks.bench_restart --cascade $(CASCADE)

## export     export $(CASCADE) (light, heavy, discriminator) into model_repository/, verify, render configs
export: setup
	$(PY) -m export export --cascade $(CASCADE) $(EXPORT_ARGS)

## profile    latency per batch size of each exported stage on this device -> profiles/<cascade>/<device>.json
profile: export
	$(PY) -m export profile --cascade $(CASCADE)

## calibrate  deferral curve f(t) and quality curve from held-apart prompts, and with a prompt router the router curve and the 2-D hybrid surface (router share x discriminator share -> FID; POLICY=hybrid) -> profiles/<cascade>/
calibrate: export
	$(PY) -m export calibrate --cascade $(CASCADE)

## bench-cascade  the cascade's concurrency, old design vs new: stand-in stages (heavy 1 s x 8 instances), 64 closed-loop clients -> benchmarks/results/cascade/
bench-cascade: setup
	$(PY) -m benchmarks.cascade $(BENCH_CASCADE_ARGS)

## bench-sim  simulator: the paper's comparison, all MAF traces, the 1,024-GPU scale run, the load sweep, the overload runs (x12-x16, 5 seeds), sim vs the live run, the HADIS hybrid-routing comparison -> benchmarks/results/sim/
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

## gpu-check  NVIDIA GPU, no download: random SD v1.5-size cascade -> fp16 engines, verified -> Triton, 2 pinned instances per stage -> UNet/pipeline ms vs eager fp16 -> benchmarks/results/gpu/ (no GPU: says so, exits 0; GPU_CHECK_ARGS="--device cpu --tiny": CPU dry run)
gpu-check: setup
	$(PY) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

## zoo        retrain the embedded tiny cascade from seeds (CUDA if present, else CPU: hours) -> zoo/weights/
zoo: setup
	$(PY) -m zoo.build $(ZOO_ARGS)

## tiny-report  fidelity/FID by difficulty, discriminator AUC, cascade curve, CPU cost -> benchmarks/results/tiny/
tiny-report: setup
	$(PY) -m zoo.report $(TINY_REPORT_ARGS)

clean:
	rm -rf runs .pytest_cache
