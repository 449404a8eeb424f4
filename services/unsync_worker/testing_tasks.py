"""Test-only tasks: accepted only with ``WORKER_ENABLE_TEST_TASKS=1``, never listed.

They exist to prove failure handling against a real server: ``crash`` kills
the pool process that runs it (so the pool breaks and must be rebuilt), and
``fail`` raises in whichever mode it runs (so every failed job must be logged,
including async ones nobody else would await).

This module is imported only when the flag is set; a pool worker imports it
by itself when it is asked to run ``crash_job``.
"""

from __future__ import annotations

import os

from services.unsync_worker.adapter import cpu_bound, inline, on_loop, threaded
from services.unsync_worker.tasks import TaskArgs, TaskSpec
from services.unsync_worker.work import Ran

# What a crashing pool worker exits with: anything but 0, recognisable in logs.
CRASH_EXIT_CODE = 86


class NoArgs(TaskArgs):
    pass


class DeliberateFailure(RuntimeError):
    """The deliberate failure of the ``fail`` task."""


def crash_job() -> Ran:
    os._exit(CRASH_EXIT_CODE)


def fail_job() -> Ran:
    raise DeliberateFailure("deliberate failure from the fail test task")


async def fail_job_async() -> Ran:
    raise DeliberateFailure("deliberate failure from the fail test task (async)")


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
}
