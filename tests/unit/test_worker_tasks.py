"""The worker's tasks and the adapter's guards, without a server.

The echo probes talk to a real echo server on 127.0.0.1 (a plain thread),
or to a port where nothing listens.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from unsync import unsync

from services.unsync_worker import adapter, work
from services.unsync_worker.tasks import (
    PBKDF2_MAX_ITERATIONS,
    PRIMES_MAX_N,
    PUBLIC_TASKS,
    EchoProbeArgs,
    Pbkdf2Args,
    PrimesArgs,
    SleepArgs,
)
from services.unsync_worker.work import EchoError, EchoTarget


def sieve_count(n: int) -> int:
    if n < 3:
        return 0
    flags = bytearray([1]) * n
    flags[0] = flags[1] = 0
    for k in range(2, int(n**0.5) + 1):
        if flags[k]:
            flags[k * k :: k] = bytearray(len(range(k * k, n, k)))
    return sum(flags)


# ------------------------------------------------------------------ work


def test_primes_below_10000_is_1229() -> None:
    assert work.count_primes_below(10000) == 1229


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 11, 12, 100, 1000, 7919, 7920])
def test_trial_division_agrees_with_a_sieve(n: int) -> None:
    assert work.count_primes_below(n) == sieve_count(n)


def test_pbkdf2_is_hashlibs() -> None:
    expected = hashlib.pbkdf2_hmac("sha256", work.PBKDF2_PASSWORD, work.PBKDF2_SALT, 10).hex()
    assert work.pbkdf2_digest(10) == expected


def test_ran_records_where_it_ran() -> None:
    result = work.ran(0.0, 42)
    assert result.result == 42
    assert result.thread == threading.current_thread().name
    assert result.finished >= result.started


def test_rtt_stats_summarise_in_ms() -> None:
    stats = work.rtt_stats(EchoTarget("trio", "h", 1), [0.001, 0.002, 0.003], 8, 0.01)
    assert stats["rtt_ms"] == {"min": 1.0, "mean": 2.0, "p50": 2.0, "p95": 3.0, "max": 3.0}
    assert stats["count"] == 3 and stats["wall_ms"] == 10.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(10)
        while chunk := self.request.recv(65536):
            self.request.sendall(chunk)


@pytest.fixture
def echo_target() -> Iterator[EchoTarget]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield EchoTarget("trio", "127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def dead_target() -> EchoTarget:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return EchoTarget("uvloop", "127.0.0.1", sock.getsockname()[1])


def test_blocking_probe_round_trips(echo_target: EchoTarget) -> None:
    result = work.probe_all_blocking([echo_target, echo_target], 3, 70000, 5.0)
    assert [t["count"] for t in result["targets"]] == [3, 3]


def test_async_probe_round_trips(echo_target: EchoTarget) -> None:
    result = asyncio.run(work.probe_all_async([echo_target, echo_target], 3, 1000, 5.0))
    assert [t["size"] for t in result["targets"]] == [1000, 1000]


def test_unreachable_target_is_an_echo_error_naming_it(
    echo_target: EchoTarget, dead_target: EchoTarget
) -> None:
    with pytest.raises(EchoError, match=r"uvloop echo at 127\.0\.0\.1:\d+"):
        work.probe_all_blocking([dead_target], 1, 10, 2.0)
    with pytest.raises(EchoError, match="uvloop echo"):
        asyncio.run(work.probe_all_async([echo_target, dead_target], 1, 10, 2.0))


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("model", "args"),
    [
        (PrimesArgs, {"n": "10"}),
        (PrimesArgs, {"n": True}),
        (PrimesArgs, {"n": 10.5}),
        (PrimesArgs, {"n": PRIMES_MAX_N + 1}),
        (PrimesArgs, {"n": 10, "extra": 1}),
        (Pbkdf2Args, {"iterations": 0}),
        (Pbkdf2Args, {"iterations": PBKDF2_MAX_ITERATIONS + 1}),
        (SleepArgs, {}),
        (EchoProbeArgs, {"target": "apache"}),
        (EchoProbeArgs, {"size": 0}),
    ],
)
def test_arguments_are_strict_and_bounded(model: type[Any], args: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(args)


def test_integral_floats_are_integers_as_in_json_schema() -> None:
    assert PrimesArgs.model_validate({"n": 10.0}).n == 10


def test_catalogue_modes_and_auto() -> None:
    assert PUBLIC_TASKS["primes"].written == "process"
    assert PUBLIC_TASKS["sleep"].written == "async"
    assert "async" not in PUBLIC_TASKS["primes"].runners
    for spec in PUBLIC_TASKS.values():
        assert spec.modes[0] == "auto"
        assert spec.written in spec.runners
        for mode, runner in spec.runners.items():
            assert runner.mode == mode


# ------------------------------------------------------------------ unsync registry guard


def _closure_factory() -> Callable[[], work.Ran]:
    def inner() -> work.Ran:
        return work.ran(0.0, None)

    return inner


class _Holder:
    def method(self) -> work.Ran:
        return work.ran(0.0, None)


def test_cpu_bound_refuses_closures_and_methods() -> None:
    """unsync keys its process registry by (module, __name__): these would collide."""
    with pytest.raises(TypeError, match="module-level"):
        adapter.cpu_bound(_closure_factory())
    with pytest.raises(TypeError, match="module-level"):
        adapter.cpu_bound(_Holder.method)


@pytest.fixture
def unsync_registry() -> Iterator[dict[tuple[str, str], Any]]:
    """unsync's process-global cpu_bound registry, restored as it was after the test."""
    registry: dict[tuple[str, str], Any] = unsync.unsync_functions
    saved = dict(registry)
    try:
        yield registry
    finally:
        registry.clear()
        registry.update(saved)


def _twin_a() -> work.Ran:
    return work.ran(0.0, "a")


def test_cpu_bound_refuses_a_second_function_with_the_same_name(
    unsync_registry: dict[tuple[str, str], Any],
) -> None:
    adapter.cpu_bound(_twin_a)
    assert unsync_registry[(__name__, "_twin_a")] is _twin_a

    def impostor() -> work.Ran:
        return work.ran(0.0, "b")

    # Looks module-level and shares _twin_a's name: unsync would run the wrong one.
    impostor.__name__ = impostor.__qualname__ = "_twin_a"
    with pytest.raises(TypeError, match="different function has this name"):
        adapter.cpu_bound(impostor)
    assert unsync_registry[(__name__, "_twin_a")] is _twin_a


def test_on_loop_needs_an_async_function() -> None:
    with pytest.raises(TypeError, match="not an async function"):
        adapter.on_loop(_twin_a)  # type: ignore[arg-type]
