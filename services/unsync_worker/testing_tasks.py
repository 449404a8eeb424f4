"""Test-only tasks: accepted only with ``WORKER_ENABLE_TEST_TASKS=1``, never listed.

They exist to prove failure handling against a real server: ``crash`` kills
the pool process that runs it (so the pool breaks and must be rebuilt), and
``fail`` raises in whichever mode it runs (so every failed job must be logged,
including async ones nobody else would await). ``hold`` keeps a consumer busy
until the test releases it, so "busy" and "full" states last exactly as long as
a test needs them, however slow the machine.

This module is imported only when the flag is set; a pool worker imports it
by itself when it is asked to run ``crash_job``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from pydantic import Field

from services.unsync_worker.adapter import cpu_bound, inline, on_loop, threaded
from services.unsync_worker.tasks import JsonInt, TaskArgs, TaskSpec
from services.unsync_worker.work import Ran, ran

# What a crashing pool worker exits with: anything but 0, recognisable in logs.
CRASH_EXIT_CODE = 86

# hold only ever connects to the test's own listener on loopback.
HOLD_HOST = "127.0.0.1"
# The default largest job timeout (--max-timeout-s): a hold never outlives its job's
# timeout, at which it is cancelled anyway (async mode).
HOLD_MAX_MS = 30_000


class NoArgs(TaskArgs):
    pass


class HoldArgs(TaskArgs):
    port: JsonInt = Field(ge=1, le=65535, description="the test's release listener on loopback")
    max_ms: JsonInt = Field(ge=0, le=HOLD_MAX_MS, description="give up waiting after this")


class DeliberateFailure(RuntimeError):
    """The deliberate failure of the ``fail`` task."""


def crash_job() -> Ran:
    os._exit(CRASH_EXIT_CODE)


def fail_job() -> Ran:
    raise DeliberateFailure("deliberate failure from the fail test task")


async def fail_job_async() -> Ran:
    raise DeliberateFailure("deliberate failure from the fail test task (async)")


async def hold_job_async(port: int, max_ms: int) -> Ran:
    """Connect to ``HOLD_HOST:port`` and wait until the peer sends a byte or closes.

    Returns ``{"released": True}``, or ``{"released": False}`` after ``max_ms``.
    The connection is always closed; a refused connection raises (job_failed).
    """
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(HOLD_HOST, port)
    try:
        try:
            async with asyncio.timeout(max_ms / 1000):
                await reader.read(1)
            released = True
        except TimeoutError:
            released = False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return ran(started, {"released": released})


TEST_TASKS: dict[str, TaskSpec] = {
    "crash": TaskSpec(
        name="crash",
        kind="cpu",
        description="test only: the pool process running it exits at once",
        args_model=NoArgs,
        written="process",
        runners={"process": cpu_bound(crash_job)},
    ),
    "fail": TaskSpec(
        name="fail",
        kind="cpu",
        description="test only: raises in whichever mode it runs",
        args_model=NoArgs,
        written="thread",
        runners={
            "thread": threaded(fail_job),
            "process": cpu_bound(fail_job),
            "async": on_loop(fail_job_async),
            "sync": inline(fail_job),
        },
    ),
    "hold": TaskSpec(
        name="hold",
        kind="io",
        description="test only: waits until the test's listener releases it",
        args_model=HoldArgs,
        written="async",
        runners={"async": on_loop(hold_job_async)},
    ),
}
