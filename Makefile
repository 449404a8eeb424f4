# Entry points of the async concurrency lab. Run `make help` for the list.
# Every target that runs Python uses the project's own virtualenv in .venv,
# created from the lock file by `make venv` (the targets below do it for you).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_HOST ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-dev

.PHONY: help venv lock test unit-test lint format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## create .venv from the lock file (requirements/dev.txt)

$(VENV_STAMP): requirements/dev.txt
	$(PYTHON_HOST) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	touch $@

lock: venv ## recompile requirements/*.txt from requirements/*.in
	cd requirements && for f in runtime loadtest dev; do \
	  ../$(VENV)/bin/pip-compile --quiet --strip-extras --allow-unsafe --no-emit-find-links -o $$f.txt $$f.in || exit 1; \
	done

test: venv ## unit and integration tests against local processes (no Docker)
	$(PY) -m pytest -m "not docker"

unit-test: venv ## unit tests only
	$(PY) -m pytest tests/unit

lint: venv ## ruff (with flake8-async rules), ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove the virtualenv, caches and reports
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis reports build

# --- containers (compose stack) ---------------------------------------------

# --- unsync worker experiments ----------------------------------------------

# --- load tests (Locust) ----------------------------------------------------

# --- benchmarks -------------------------------------------------------------
