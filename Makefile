# The one interface people and CI call. A fresh machine needs only python3 (3.11) and make:
# the first target that needs the environment creates it.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export TIKTOKEN_CACHE_DIR := $(CURDIR)/.cache/tiktoken
export UV_PYTHON := $(PYTHON)

.PHONY: install demo test test-unit test-integration test-e2e lint bench-plan bench-realtime clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock scripts/install_encodings.py | $(UV)
	$(UV) sync --frozen --quiet
	$(BIN)/python scripts/install_encodings.py $(TIKTOKEN_CACHE_DIR)
	touch $@

install: $(VENV)/.installed

demo: install ## run the shipped example end to end on this machine (moto + the OpenAI emulator)
	$(BIN)/batchline local run examples/feedback-1k.jsonl --out out/demo

test: install ## every tier: unit, integration, emulator, end to end
	$(BIN)/pytest -n 2 -q

test-unit: install
	$(BIN)/pytest -q tests/unit tests/emulator

test-integration: install
	$(BIN)/pytest -q tests/integration

test-e2e: install
	$(BIN)/pytest -q tests/e2e

lint: install
	$(BIN)/ruff check .

bench-plan: install ## planning throughput and peak memory on 1,000,000 requests, beside a naive baseline
	$(BIN)/python scripts/bench_plan.py

bench-realtime: install ## the hot path against a TPM limit at 1, 4 and 16 workers, beside per-worker token buckets
	$(BIN)/python scripts/bench_realtime.py

clean:
	rm -rf $(VENV) $(TOOLS) .cache out cdk.out

# Infrastructure targets (synth, cdk CLI install) live beside the constructs.
-include infra/infra.mk
