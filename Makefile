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

.PHONY: install browser demo test test-unit test-integration test-e2e test-report lint bench-plan bench-realtime clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock scripts/install_encodings.py batchline_cli/encodings.py | $(UV)
	$(UV) sync --frozen --quiet
	$(BIN)/python scripts/install_encodings.py $(TIKTOKEN_CACHE_DIR)
	touch $@

install: $(VENV)/.installed

# tests/report opens report.html in headless Chromium. A browser already there is used (or the one
# BATCHLINE_CHROMIUM names); else Debian's chromium is installed with apt-get, as root or through
# password-less sudo. Where neither works, that one test is skipped with the reason (failed when CI
# is set), and every other test still runs.
CHROMIUM_NAMES := chromium chromium-browser google-chrome google-chrome-stable
browser:
	@if [ -n "$$BATCHLINE_CHROMIUM" ]; then exit 0; fi; \
	for name in $(CHROMIUM_NAMES); do command -v $$name >/dev/null 2>&1 && exit 0; done; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "no Chromium and no apt-get: install Chromium (or set BATCHLINE_CHROMIUM) for tests/report"; exit 0; \
	fi; \
	sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo -n"; \
	echo "installing chromium for the report's browser test (apt-get)"; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		|| echo "could not install chromium with apt-get: tests/report will be skipped"

demo: install ## run the shipped example end to end on this machine (moto + the OpenAI emulator)
	$(BIN)/batchline local run examples/feedback-1k.jsonl --out out/demo

test: install browser ## every tier: unit, integration, emulator, end to end, the report in a browser
	$(BIN)/pytest -n 2 -q

test-unit: install
	$(BIN)/pytest -q tests/unit tests/emulator

test-integration: install
	$(BIN)/pytest -q tests/integration

test-e2e: install
	$(BIN)/pytest -q tests/e2e

test-report: install browser
	$(BIN)/pytest -q tests/unit/test_report.py tests/report

# ruff, the layers' import contracts and mypy --strict on domain/ and workflow/ (pyproject.toml holds the
# configuration of all three); each runs, and the target fails if any of them failed.
lint: install
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check --quiet . || status=1; \
	$(BIN)/lint-imports --no-logo --cache-dir .cache/import-linter || status=1; \
	$(BIN)/mypy lambdas/batchline/domain lambdas/batchline/workflow || status=1; \
	exit $$status

bench-plan: install ## planning throughput and peak memory on 1,000,000 requests, beside a naive baseline
	$(BIN)/python scripts/bench_plan.py

# bench-realtime: the whole realtime hot path (`batchline local run --mode realtime`, moto in-process) beside a
# re-implementation of the OpenAI cookbook's parallel processor, each against a fresh emulator with a token bucket
# of 480,000 TPM and 1 s burst, at 3,000 and 20,000 requests: token limit used, 429 share, requests lost, wall
# time, peak RSS, AWS cost; figures in out/bench-realtime.json. The cookbook at 20,000 takes about two hours.
bench-realtime: install ## the realtime hot path beside the cookbook's parallel processor, on a 480k TPM token bucket
	$(BIN)/python scripts/bench_realtime.py

clean:
	rm -rf $(VENV) $(TOOLS) .cache out cdk.out

# Infrastructure targets (synth, cdk CLI install) live beside the constructs.
-include infra/infra.mk
