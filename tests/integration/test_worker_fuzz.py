"""Property-based fuzzing of the worker's API from its own OpenAPI schema (schemathesis).

Schemathesis generates valid and invalid requests for every operation in
``/openapi.json`` and checks each response: no server error, status and body
as documented, invalid input rejected with a 4xx. The only 5xx statuses
tolerated are the two a well-formed request can earn by design, both
documented with a JSON error body: 504 (a generated ``timeout_s`` shorter than
the job) and 503 (queue full). A 500 always fails.

The worker is a real subprocess with a local echo server, so ``echo_probe``
succeeds; its timeouts are capped at 1 s so that generated jobs at their
argument limits cannot make the run slow.

Against the compose stack (``LAB_TARGET=compose``) the container is shared and
keeps its own 10 s/30 s timeouts, so valid bodies are tamed before they are
sent (:func:`tame`): no sync mode (it blocks the whole container), small
arguments and ``timeout_s`` <= 1. Invalid bodies are fuzzed unchanged in both
modes: the worker rejects them before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

from tests.helpers import Address
from tests.integration.test_worker_support import EchoServer, compose, compose_address, start_worker

pytestmark = pytest.mark.slow

# Examples per operation: enough to hit every task, mode and error path, while
# the whole module stays well under a minute on 2 loaded cores.
MAX_EXAMPLES = 40

# Schemathesis' server-error check, told which 5xx the API documents for valid requests.
FUZZ_CONFIG = {
    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]}},
}

# Every operation, with the generation modes that make sense for it: the GET
# endpoints take no input, so there is nothing to make invalid.
OPERATIONS = [
    ("GET", "/healthz", ("positive",)),
    ("GET", "/tasks", ("positive",)),
    ("GET", "/metrics", ("positive",)),
    ("POST", "/jobs", ("positive", "negative")),
]

FUZZ_ENV = {
    # A generated job at its limits (primes n=1e6, sleep 5 s) times out after 1 s.
    "WORKER_MAX_TIMEOUT_S": "1",
    "WORKER_DEFAULT_TIMEOUT_S": "1",
}

# Compose: the largest job a tamed body may ask for. Each runs in tens of
# milliseconds (primes 20 000 ~ 30 ms, pbkdf2 20 000 ~ 10 ms, 200 ms sleep,
# 10 round trips of 1 KiB), so even abandoned thread/process jobs end at once.
COMPOSE_ARG_CAPS = {"n": 20_000, "iterations": 20_000, "ms": 200, "count": 10, "size": 1024}
# Compose: what FUZZ_ENV gives a local worker, per request instead.
COMPOSE_TIMEOUT_S = 1.0


def tame(case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
    """A valid POST /jobs case made safe for the shared container (module doc).

    Keeps the body valid: "sync" becomes "auto" (offered for every task),
    numbers are lowered to their caps, ``timeout_s`` to at most 1 s.
    """
    body = case.body
    if not isinstance(body, dict):
        return case
    tamed = dict(body)
    if tamed.get("mode") == "sync":
        tamed["mode"] = "auto"
    timeout = tamed.get("timeout_s")
    if not isinstance(timeout, int | float) or timeout > COMPOSE_TIMEOUT_S:
        tamed["timeout_s"] = COMPOSE_TIMEOUT_S
    if isinstance(args := tamed.get("args"), dict):
        tamed["args"] = {
            key: min(value, COMPOSE_ARG_CAPS[key])
            if key in COMPOSE_ARG_CAPS and isinstance(value, int | float)
            else value
            for key, value in args.items()
        }
    case.body = tamed
    return case


@pytest.fixture(scope="module")
def fuzz_worker() -> Iterator[Address]:
    if compose():
        yield compose_address()
        return
    with EchoServer() as echo:
        proc = start_worker(
            {
                **FUZZ_ENV,
                "WORKER_TRIO_ECHO_ADDR": echo.address,
                "WORKER_UVLOOP_ECHO_ADDR": echo.address,
            }
        )
        try:
            yield proc.address
        finally:
            proc.cleanup()


@pytest.fixture(scope="module")
def worker_schema(fuzz_worker: Address) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"http://{fuzz_worker}/openapi.json",
        config=SchemathesisConfig.from_dict(FUZZ_CONFIG),
        timeout=30,
    )


def test_schema_has_exactly_the_fuzzed_operations(worker_schema: schemathesis.BaseSchema) -> None:
    found = set()
    for result in worker_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        found.add((result.ok().method.upper(), result.ok().path))
    assert found == {(method, path) for method, path, _ in OPERATIONS}


# (The schemathesis pytest plugin's lazy fixture loader does not work with
# pytest 9, so each operation's hypothesis strategy is driven directly.)
@pytest.mark.parametrize(
    ("method", "path", "mode"), [(m, p, g) for m, p, gs in OPERATIONS for g in gs]
)
def test_api_conforms_to_its_schema_and_never_500s(
    worker_schema: schemathesis.BaseSchema, method: str, path: str, mode: str
) -> None:
    operation = worker_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    if compose() and (method, mode) == ("POST", "positive"):
        strategy = strategy.map(tame)

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(timeout=30)
        assert response.status_code != 500, response.text

    check()
