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

.PHONY: setup test serve stop export zoo profile demo perf bench-sim bench-planner clean help

help:
	@grep -E '^## ' Makefile | sed 's/## //'

## setup      venv with pinned packages, Triton stub, perf_analyzer's libb64 (idempotent)
setup:
	@bash scripts/setup.sh

## test       setup + the whole test suite (what CI runs)
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## serve      start tritonserver on $(HOST) (ports HTTP_PORT/GRPC_PORT/METRICS_PORT), wait until ready
serve: setup
	$(PY) -m orchestrator.server start --host $(HOST) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

## stop       stop the server started by `make serve`
stop:
	@$(PY) -m orchestrator.server stop

clean:
	rm -rf runs .pytest_cache
