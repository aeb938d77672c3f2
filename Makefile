# Sluiceway: `make demo` to see it run, `make test` to test it. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list every target
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is needed (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install Sluiceway with its dev tools

install: venv ## venv + everything the stack needs (apt packages, Kafka jars, BigQuery emulator)
	$(BIN)/sluiceway stack install

up: install ## start the local stack (all services) and wait until healthy
	$(BIN)/sluiceway stack up

down: ## stop the local stack
	@test -x $(BIN)/sluiceway && $(BIN)/sluiceway stack down || true

status: venv ## health of each service of the local stack
	$(BIN)/sluiceway stack status

demo: up ## the main job: the demo shop, live capture and loads as streams, the UI on :3000
	$(BIN)/sluiceway demo

test: up ## set up what tests need, start the stack, run unit and integration tests
	$(BIN)/python -m stack.browser
	$(BIN)/pytest tests/unit tests/integration

test-unit: venv ## unit tests only (no services)
	$(BIN)/pytest tests/unit

lint: venv ## ruff lint and format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv ## format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: up ## the full benchmark suite, each figure beside its same-run baseline (docs/benchmarks.md)
	$(BIN)/python -m bench.suite

bench-quick: up ## a subset of the suite at a tenth of the size (figures tagged [quick])
	$(BIN)/python -m bench.suite --quick

bench-render: venv ## re-render docs/benchmarks.md from docs/benchmarks.json
	$(BIN)/python -m bench.record

clean: down ## stop the stack and remove all local state (keeps downloads in .sluiceway/cache)
	find .sluiceway -mindepth 1 -maxdepth 1 ! -name cache -exec rm -rf {} +

.PHONY: help venv install up down status demo test test-unit lint format bench bench-quick bench-render clean
