"""The ``echo`` load run: ``count`` round trips over ``concurrency`` connections.

Every echoed byte is compared with what was sent. The hot loop does only what a
round trip needs: one echo on a preallocated payload, two clock reads, one
comparison and one append. Nothing is logged per message; each connection logs
once when it closes (see :mod:`services.client.echo_client`).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio

from services.client.echo_client import EchoClient
from services.client.errors import EarlyEOFError, EchoError, EchoTimeoutError
from services.client.stats import Report, build_report, split_count

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """What to run; the CLI validates every field before building one."""

    host: str
    port: int
    size: int
    count: int
    concurrency: int
    timeout: float | None  # per connect and per round trip; None: no limit
    backend: str  # only reported here: the caller picks the event loop


@dataclass
class _Tally:
    """One connection's results, merged into the report after the run."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    not_run: int = 0
    first_error: str = ""

    def fail(self, kind: str, message: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if not self.first_error:
            self.first_error = message


def error_kind(exc: EchoError) -> str:
    """The report's name for what went wrong."""
    if isinstance(exc, EarlyEOFError):
        return "eof"
    if isinstance(exc, EchoTimeoutError):
        return "timeout"
    return "broken"


async def run_load(options: LoadOptions) -> Report:
    """Open the connections, run the round trips, and return the report.

    Connections are opened before the clock starts, so the rates measure echoing,
    not connecting; if one cannot be opened the run stops there and the
    :class:`~services.client.EchoConnectionError` (or ``EchoTimeoutError``) propagates, with
    every connection already opened closed. Once running, a failed round trip is
    counted, a connection that broke stops (its remaining round trips are "not
    run") and the others carry on. All connections are closed on return, on error
    and on cancellation.
    """
    shares = [n for n in split_count(options.count, options.concurrency) if n > 0]
    # Payloads differ per connection, so a server that crossed streams is caught.
    payloads = [os.urandom(options.size) for _ in shares]
    tallies = [_Tally() for _ in shares]
    async with AsyncExitStack() as stack:
        clients = []
        for _ in shares:
            client = EchoClient(options.host, options.port)  # _drive bounds each echo
            try:
                with anyio.fail_after(options.timeout):
                    await stack.enter_async_context(client)
            except TimeoutError:
                assert options.timeout is not None  # raised by fail_after only
                raise EchoTimeoutError(f"connecting to {client.peer}", options.timeout) from None
            clients.append(client)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for client, rounds, payload, tally in zip(
                clients, shares, payloads, tallies, strict=True
            ):
                tg.start_soon(_drive, client, rounds, payload, options.timeout, tally)
        elapsed = time.perf_counter() - started

    latencies: list[float] = []
    errors: dict[str, int] = {}
    first_error = ""
    for tally in tallies:
        latencies.extend(tally.latencies)
        for kind, n in tally.errors.items():
            errors[kind] = errors.get(kind, 0) + n
        first_error = first_error or tally.first_error
    return build_report(
        host=options.host,
        port=options.port,
        backend=options.backend,
        size=options.size,
        count=options.count,
        concurrency=len(shares),
        latencies_s=latencies,
        errors=errors,
        not_run=sum(t.not_run for t in tallies),
        elapsed_s=elapsed,
        first_error=first_error,
    )


async def _drive(
    client: EchoClient, rounds: int, payload: bytes, round_trip_s: float | None, tally: _Tally
) -> None:
    """``rounds`` verified echoes of ``payload`` on one connection (the hot loop).

    ``round_trip_s`` bounds each round trip by moving the deadline of one cancel
    scope, rather than entering a new scope per echo (``client.echo(timeout=...)``):
    a timer reschedule instead of a scope's set-up and tear-down, which cut 1 KiB
    throughput by about a third. On a timeout the connection stops, like on any
    other error.
    """
    latencies = tally.latencies
    clock = time.perf_counter
    echo = client.echo
    now = anyio.current_time
    done = 0
    with anyio.CancelScope() as scope:
        for done in range(rounds):
            if round_trip_s is not None:
                scope.deadline = now() + round_trip_s
            sent_at = clock()
            try:
                reply = await echo(payload)
            except EchoError as exc:
                tally.fail(error_kind(exc), str(exc))
                tally.not_run = rounds - done - 1
                return
            latencies.append(clock() - sent_at)
            if reply != payload:
                tally.fail("mismatch", f"echoed bytes differ from those sent ({client.peer})")
    if scope.cancelled_caught:
        tally.fail(
            "timeout",
            f"echo of {len(payload)} bytes to {client.peer} took longer than {round_trip_s} s",
        )
        tally.not_run = rounds - done - 1
