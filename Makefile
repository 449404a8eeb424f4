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

# --- echo servers ------------------------------------------------------------

# Extra flags for `make run-trio`, e.g. TRIO_ARGS="--idle-timeout-s 5 --port 9101";
# every flag also has a TRIO_ECHO_* environment variable (see README).
TRIO_ARGS ?=

.PHONY: run-trio
run-trio: venv ## run the trio echo server in the foreground (TRIO_ARGS="--port 9101") on :9001
	$(PY) -m services.trio_echo $(TRIO_ARGS)

# Extra flags for `make run-uvloop`, e.g. UVLOOP_ARGS="--loop asyncio --port 9102";
# every flag also has a UVLOOP_ECHO_* environment variable (see README).
UVLOOP_ARGS ?=

.PHONY: run-uvloop
run-uvloop: venv ## run the asyncio echo server (uvloop; UVLOOP_ARGS="--loop asyncio") on :9002
	$(PY) -m services.uvloop_echo $(UVLOOP_ARGS)

# --- containers (compose stack) ---------------------------------------------
# Images are built with `docker build` (docker/build-image.sh) and compose only runs
# them: docker-compose v1's own builder misbehaves on newer engines. The base image
# is the official slim Python where a registry answers, else one built locally
# (docker/base-image.sh: debootstrap + docker import); Python packages always come
# from a host-built wheelhouse (docker/wheelhouse.sh), so builds need no network.
# To build another image the same way (e.g. Locust):
#   make base-image wheelhouse LOCK=requirements/loadtest.txt
#   docker/build-image.sh lab/locust:latest locust loadtest/Dockerfile requirements/loadtest.txt

# `docker compose` (v2) when present, else v1, which does not find compose.yaml by
# itself. Probed once, on first use, so targets that never touch Docker never probe.
COMPOSE ?= $(eval COMPOSE := $(shell docker compose version >/dev/null 2>&1 \
  && echo 'docker compose' || echo 'docker-compose -f compose.yaml'))$(COMPOSE)
# A fixed project name: tests and docker/wait-healthy.sh find the containers by it,
# whatever folder the clone lives in.
export COMPOSE_PROJECT_NAME ?= asynclab
# The services `make up` starts and waits for (profiles such as loadtest come on top).
STACK_SERVICES := trio-echo uvloop-echo unsync-worker
# AIRGAP=1 forces the locally built base image, AIRGAP=0 the registry's; unset: auto.
AIRGAP ?=
BASE_MODE := $(if $(filter 1 yes true,$(AIRGAP)),airgap,$(if $(filter 0 no false,$(AIRGAP)),registry,auto))
BASE_IMAGE_REF := build/base-image.ref
WHEELHOUSE := build/wheels
# Lock file for `make wheelhouse`; the service images need runtime.txt.
LOCK ?= requirements/runtime.txt
# Generous for a cold 2-core machine: healthy usually within 10-15 s of `up`.
UP_TIMEOUT_S ?= 120
# Extra pytest arguments for `make integration-test`, e.g. INTEGRATION_ARGS="-k stop".
INTEGRATION_ARGS ?=

.PHONY: base-image wheelhouse images up down logs ps integration-test docker-check

docker-check:
	@docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers ('docker info' failed); start one, or use 'make test' (no Docker)" >&2; exit 1; }

base-image: docker-check ## pick or build the image the service images build FROM (AIRGAP=1: local debootstrap one)
	@mkdir -p build
	@docker/base-image.sh $(BASE_MODE) > $(BASE_IMAGE_REF).tmp \
	  && mv $(BASE_IMAGE_REF).tmp $(BASE_IMAGE_REF) || { rm -f $(BASE_IMAGE_REF).tmp; exit 1; }
	@echo "base image: $$(cat $(BASE_IMAGE_REF))"

# One stamp per lock file, so a changed lock refills the wheelhouse.
$(WHEELHOUSE)/.stamp-%: requirements/%.txt docker/wheelhouse.sh $(VENV_STAMP)
	@docker/wheelhouse.sh $< $(WHEELHOUSE)
	@touch $@

wheelhouse: $(WHEELHOUSE)/.stamp-$(basename $(notdir $(LOCK))) ## wheels for the containers' Python from LOCK into build/wheels

images: base-image $(WHEELHOUSE)/.stamp-runtime ## build lab/<service>:latest for every service
	@for service in $(STACK_SERVICES); do \
	  docker/build-image.sh lab/$$service:latest $$service || exit 1; \
	done

# `down` first: v1 can fail with KeyError: 'ContainerConfig' when it recreates
# containers on a newer engine, so every `up` starts from nothing.
up: images ## build, start the stack and wait until every service is healthy
	@$(COMPOSE) down --remove-orphans >/dev/null 2>&1 || true
	@$(COMPOSE) up -d --no-build; status=$$?; \
	  wait_s=$$( [ $$status = 0 ] && echo $(UP_TIMEOUT_S) || echo 0 ); \
	  docker/wait-healthy.sh $$wait_s $(STACK_SERVICES) && exit $$status

down: ## stop and remove the stack: containers, networks, volumes (nothing left)
	@docker info >/dev/null 2>&1 || { echo "down: no Docker engine answers; nothing to remove"; exit 0; }
	@# '-': a failing compose down (v1 quirks, a network still used by a profile's
	@# containers) must not skip the sweep below, which exists for exactly that case.
	-$(COMPOSE) down -v --remove-orphans
	@# Also what another profile (e.g. loadtest) or an interrupted run left behind.
	@label=com.docker.compose.project=$(COMPOSE_PROJECT_NAME); \
	  docker ps -aq --filter label=$$label | xargs -r docker rm -fv >/dev/null; \
	  docker network ls -q --filter label=$$label | xargs -r docker network rm >/dev/null; \
	  docker volume ls -q --filter label=$$label | xargs -r docker volume rm >/dev/null; \
	  left=$$(docker ps -aq --filter label=$$label); \
	  if [ -n "$$left" ]; then echo "down: containers left: $$left" >&2; exit 1; fi

logs: ## the stack's recent logs (FOLLOW=1 to follow, LINES=N per service)
	$(COMPOSE) logs --tail=$(or $(LINES),100) $(if $(FOLLOW),--follow)

ps: ## the stack's containers, state and health
	$(COMPOSE) ps

integration-test: venv ## make up, then the integration tests against the containers; always make down
	@$(MAKE) --no-print-directory up || { $(MAKE) --no-print-directory down; exit 1; }
	@LAB_TARGET=compose $(PY) -m pytest tests/integration $(INTEGRATION_ARGS); \
	  status=$$?; $(MAKE) --no-print-directory down; exit $$status


# --- unsync worker experiments ----------------------------------------------

WORKER_HOST ?= 127.0.0.1
WORKER_PORT ?= 8080
EXPERIMENTS_OUT ?= reports/experiments
EXPERIMENTS_ARGS ?=

.PHONY: experiments run-worker

experiments: venv ## unsync worker: CPU and I/O jobs per mode -> table, results.json, PNGs in reports/experiments/
	$(PY) -m services.unsync_worker.experiments --out $(EXPERIMENTS_OUT) $(EXPERIMENTS_ARGS)

run-worker: venv ## run the unsync worker in the foreground (WORKER_HOST/WORKER_PORT, env WORKER_*)
	$(PY) -m services.unsync_worker --host $(WORKER_HOST) --port $(WORKER_PORT)

# --- load tests (Locust) ----------------------------------------------------
# make loadtest        headless and distributed: the compose stack (make up), a Locust
#                      master and WORKERS workers (compose profile "loadtest"); the gate in
#                      loadtest/locustfile.py sets the exit code. Reports in reports/loadtest/.
# make locust          the same master and workers with the web UI on 127.0.0.1:8089.
# make loadtest-local  no Docker: the services as local processes, `locust --processes`.
# make loadtest-smoke  CI: about 20 s headless against the stack, any failure fails.
# make locust-bench    requests/s of one Locust process (efficiency; not a test).
# Gate thresholds and targets pass through the environment, e.g.
#   make loadtest LOADTEST_GATE_MAX_P95_MS=200 LOADTEST_ECHO_PAYLOAD_BYTES=4096
USERS ?= 30
SPAWN_RATE ?= 10
RUN_TIME ?= 1m
WORKERS ?= 2
# Workers the master waits for (up to 120 s) and the gate requires: more than WORKERS
# when workers on other hosts join (README, section loadtest).
EXPECT_WORKERS ?= $(WORKERS)
LOADTEST_REPORTS := reports/loadtest
LOCUST_IMAGE := lab/locust:latest
# docker/Dockerfile's deps stage built with requirements/loadtest.txt: the Locust
# image copies its virtualenv, so pip runs exactly as for the service images.
LOCUST_DEPS_IMAGE := lab/locust-deps:latest
LOCUST_UI := http://127.0.0.1:8089
# Seconds `make locust` waits for the web UI to answer.
LOCUST_UI_TIMEOUT_S ?= 60
# The uid the master writes reports as: the caller's, so they own them on the host;
# root callers get the images' unprivileged 10001 (the containers never run as root).
LOADTEST_UID := $(shell u=$$(id -u); [ "$$u" = 0 ] && echo 10001 || echo $$u)
LOADTEST_GID := $(shell g=$$(id -g); [ "$$(id -u)" = 0 ] && echo 10001 || echo $$g)
LOCUST_COMPOSE = LOADTEST_UID=$(LOADTEST_UID) LOADTEST_GID=$(LOADTEST_GID) \
  LOCUST_WORKERS=$(EXPECT_WORKERS) LOCUST_USERS=$(USERS) LOCUST_SPAWN_RATE=$(SPAWN_RATE) \
  $(COMPOSE) --profile loadtest
LOCUST_SERVICES := locust-master locust-worker

.PHONY: locust-image loadtest locust loadtest-local loadtest-smoke locust-bench locust-rm loadtest-reports

locust-image: base-image $(WHEELHOUSE)/.stamp-loadtest ## build lab/locust:latest (master and workers) like the service images
	@docker/build-image.sh $(LOCUST_DEPS_IMAGE) deps docker/Dockerfile requirements/loadtest.txt
	@# A minimal context (no .dockerignore needed): the load test and the shared helpers.
	@mkdir -p build/logs; start=$$SECONDS; log=build/logs/image-lab_locust_latest.log; \
	  tar -c --exclude=__pycache__ loadtest services/__init__.py services/common \
	  | docker build -f loadtest/Dockerfile -t $(LOCUST_IMAGE) \
	      --build-arg BASE_IMAGE="$${BASE_IMAGE:-$$(cat $(BASE_IMAGE_REF))}" \
	      --build-arg DEPS_IMAGE=$(LOCUST_DEPS_IMAGE) - >$$log 2>&1 \
	  || { tail -n 40 $$log >&2; echo "locust-image: docker build failed (full log: $$log)" >&2; exit 1; }; \
	  echo "built $(LOCUST_IMAGE) in $$((SECONDS - start)) s"

locust-rm: ## remove the Locust containers (the stack stays up)
	@docker info >/dev/null 2>&1 || exit 0; \
	  $(COMPOSE) --profile loadtest rm -fsv $(LOCUST_SERVICES) >/dev/null 2>&1 || true

# A fresh reports directory the master's uid may write to.
loadtest-reports:
	@mkdir -p $(LOADTEST_REPORTS)
	@rm -f $(LOADTEST_REPORTS)/run_*.csv $(LOADTEST_REPORTS)/report.html
	@if [ "$$(id -u)" = 0 ]; then chown $(LOADTEST_UID):$(LOADTEST_GID) $(LOADTEST_REPORTS); fi

loadtest: locust-image ## headless distributed load test of the stack (USERS SPAWN_RATE RUN_TIME WORKERS); exit code = gate
	@$(MAKE) --no-print-directory locust-rm
	@$(MAKE) --no-print-directory up
	@$(MAKE) --no-print-directory loadtest-reports
	@echo "loadtest: $(USERS) users, $(WORKERS) workers, $(RUN_TIME) against the stack"
	@# Not `up --exit-code-from`: it stops the master as soon as the first worker exits,
	@# before the gate has run. Follow the master's log and take its own exit code.
	@LOCUST_HEADLESS=true LOCUST_RUN_TIME=$(RUN_TIME) $(LOCUST_COMPOSE) up -d --no-deps --no-build \
	  --scale locust-worker=$(WORKERS) $(LOCUST_SERVICES) \
	  && cid=$$($(COMPOSE) --profile loadtest ps -q locust-master) \
	  && { docker logs -f $$cid; status=$$(docker wait $$cid); } || status=1; \
	  $(MAKE) --no-print-directory locust-rm; \
	  echo "loadtest: exit $$status ($$([ "$$status" = 0 ] && echo passed || echo FAILED)); report $(LOADTEST_REPORTS)/report.html, stats $(LOADTEST_REPORTS)/run_stats.csv"; \
	  exit $$status

locust: locust-image ## the stack plus Locust's web UI on 127.0.0.1:8089 with WORKERS workers (make down stops it)
	@$(MAKE) --no-print-directory locust-rm
	@$(MAKE) --no-print-directory up
	@$(MAKE) --no-print-directory loadtest-reports
	@LOCUST_HEADLESS=false $(LOCUST_COMPOSE) up -d --no-deps --no-build \
	  --scale locust-worker=$(WORKERS) $(LOCUST_SERVICES)
	@for i in $$(seq $(LOCUST_UI_TIMEOUT_S)); do \
	  $(PY) -m services.common.probe 127.0.0.1 8089 --http / 2>/dev/null && break; \
	  [ $$i = $(LOCUST_UI_TIMEOUT_S) ] && { $(COMPOSE) logs --tail=40 locust-master; exit 1; }; sleep 1; \
	done
	@echo "Locust web UI: $(LOCUST_UI)  ($(WORKERS) workers; 'make down' removes everything)"

loadtest-local: venv ## no Docker: services as local processes + `locust --processes WORKERS`, same gate
	$(PY) -m loadtest.local --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(RUN_TIME) \
	  --processes $(WORKERS) --report-dir $(LOADTEST_REPORTS)

loadtest-smoke: ## CI: ~20 s headless distributed run against the stack, fails on any failure; always make down
	@$(MAKE) --no-print-directory loadtest USERS=12 SPAWN_RATE=12 RUN_TIME=20s WORKERS=2 \
	  LOADTEST_GATE_MAX_FAIL_RATIO=0; status=$$?; $(MAKE) --no-print-directory down; exit $$status

locust-bench: venv ## one Locust process's TCP echo requests/s against the C echo reference -> reports/loadtest-bench/
	$(PY) -m loadtest.bench


# --- benchmarks -------------------------------------------------------------
# `make bench` (full grid, about 11 minutes on 2 cores) and `make bench-quick` (about
# a minute, for CI) write reports/bench/: results.json, summary.md and PNG plots.
# BENCH_TARGET=compose benchmarks the running stack's published ports instead of local
# project servers (run `make up` first), each via docker-proxy and via the bridge IP.
BENCH_TARGET ?= local
# Worker experiments: auto runs them first only when reports/experiments has no
# results yet (a fresh clone gets the whole report); include, run or skip otherwise.
BENCH_EXPERIMENTS ?= auto
# Extra arguments for python -m bench, e.g. BENCH_ARGS="--only c_epoll,trio_service".
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-readme

bench: venv ## full side-by-side echo benchmark (~11 min on 2 cores) -> reports/bench/
	$(PY) -m bench --mode full --target $(BENCH_TARGET) --experiments $(BENCH_EXPERIMENTS) $(BENCH_ARGS)

bench-quick: venv ## quick benchmark subset (~1 min, CI) -> reports/bench/
	$(PY) -m bench --mode quick --target $(BENCH_TARGET) --experiments include $(BENCH_ARGS)

bench-readme: venv ## put the latest results table and plots (bench/results/) into README
	$(PY) -m bench.report reports/bench/results.json --readme README.md --publish-plots bench/results
