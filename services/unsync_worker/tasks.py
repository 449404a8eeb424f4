"""The fixed task catalogue: what a client may run, with which arguments, in which modes.

Nothing a client sends is evaluated, imported or unpickled: a request names a
task from :data:`PUBLIC_TASKS`, and its arguments are validated against that
task's pydantic model (strict types, no unknown fields, bounded values).

Each task is written the way unsync wants it for its natural mode (what
``"auto"`` picks), and is also offered in the other modes that make sense, so
the same work can be compared across thread, process, event loop and plain call.
The job functions are distinct module-level functions because unsync's process
registry is keyed by ``(module, __name__)``; process-pool workers import this
module, which registers them again there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from services.unsync_worker import work
from services.unsync_worker.adapter import Mode, Runner, cpu_bound, inline, on_loop, threaded
from services.unsync_worker.work import EchoTarget, Ran, ran

Kind: TypeAlias = Literal["cpu", "io"]

# ~3.5 s on one core of the lab machine: the largest job stays "a few seconds".
PRIMES_MAX_N = 1_000_000
# ~1.4 s on one core of the lab machine, the same order as the largest primes job.
PBKDF2_MAX_ITERATIONS = 5_000_000
# A sync-mode sleep blocks the whole server, so keep it short.
SLEEP_MAX_MS = 5_000
# 1000 round trips of 64 KiB stay well under a second on loopback or a bridge network.
ECHO_MAX_COUNT = 1_000
ECHO_MAX_SIZE = 64 * 1024
# A healthy round trip takes well under a millisecond; 2 s means down or stalled.
ECHO_IO_TIMEOUT_S = 2.0


def _integral(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer, so do we; 5.5, "5" and true stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer as JSON Schema defines it: strict (no strings or booleans), but 5.0 is 5.
JsonInt = Annotated[int, BeforeValidator(_integral)]


class TaskArgs(BaseModel):
    """Base of every task's arguments: strict JSON types, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)


class PrimesArgs(TaskArgs):
    n: JsonInt = Field(ge=0, le=PRIMES_MAX_N, description="count the primes below n")


class Pbkdf2Args(TaskArgs):
    iterations: JsonInt = Field(
        ge=1, le=PBKDF2_MAX_ITERATIONS, description="PBKDF2-HMAC-SHA256 iterations"
    )


class SleepArgs(TaskArgs):
    ms: JsonInt = Field(ge=0, le=SLEEP_MAX_MS, description="milliseconds to sleep")


class EchoProbeArgs(TaskArgs):
    target: Literal["trio", "uvloop", "both"] = Field(
        "both", description="which echo service(s) to probe"
    )
    count: JsonInt = Field(10, ge=1, le=ECHO_MAX_COUNT, description="round trips per service")
    size: JsonInt = Field(64, ge=1, le=ECHO_MAX_SIZE, description="bytes per round trip")


@dataclass(frozen=True)
class JobContext:
    """Server-side inputs a job may need that no client chooses (echo addresses)."""

    trio_echo: EchoTarget
    uvloop_echo: EchoTarget


def _plain_kwargs(args: BaseModel, _context: JobContext) -> dict[str, Any]:
    return args.model_dump()


@dataclass(frozen=True)
class TaskSpec:
    """One catalogue entry. ``written`` is the mode unsync picks for ``"auto"``."""

    name: str
    kind: Kind
    description: str
    args_model: type[TaskArgs]
    written: Mode
    runners: Mapping[Mode, Runner]
    prepare: Callable[[Any, JobContext], dict[str, Any]] = _plain_kwargs

    @property
    def modes(self) -> list[str]:
        return ["auto", *self.runners]

    def kwargs(self, args: TaskArgs, context: JobContext) -> dict[str, Any]:
        """The keyword arguments the job function gets: validated args plus server inputs."""
        return self.prepare(args, context)


# ------------------------------------------------------------------ job functions


def primes_job(n: int) -> Ran:
    started = time.monotonic()
    return ran(started, work.count_primes_below(n))


def pbkdf2_job(iterations: int) -> Ran:
    started = time.monotonic()
    return ran(started, {"digest": work.pbkdf2_digest(iterations)})


def sleep_job(ms: int) -> Ran:
    started = time.monotonic()
    return ran(started, {"slept_ms": work.sleep_blocking(ms)})


async def sleep_job_async(ms: int) -> Ran:
    started = time.monotonic()
    return ran(started, {"slept_ms": await work.sleep_async(ms)})


def echo_probe_job(targets: list[EchoTarget], count: int, size: int) -> Ran:
    started = time.monotonic()
    return ran(started, work.probe_all_blocking(targets, count, size, ECHO_IO_TIMEOUT_S))


async def echo_probe_job_async(targets: list[EchoTarget], count: int, size: int) -> Ran:
    started = time.monotonic()
    return ran(started, await work.probe_all_async(targets, count, size, ECHO_IO_TIMEOUT_S))


def _echo_kwargs(args: EchoProbeArgs, context: JobContext) -> dict[str, Any]:
    chosen = {
        "trio": [context.trio_echo],
        "uvloop": [context.uvloop_echo],
        "both": [context.trio_echo, context.uvloop_echo],
    }[args.target]
    return {"targets": chosen, "count": args.count, "size": args.size}


PUBLIC_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="primes",
            kind="cpu",
            description="count primes below n by pure-Python trial division (holds the GIL)",
            args_model=PrimesArgs,
            written="process",
            runners={
                "process": cpu_bound(primes_job),
                "thread": threaded(primes_job),
                "sync": inline(primes_job),
            },
        ),
        TaskSpec(
            name="pbkdf2",
            kind="cpu",
            description="PBKDF2-HMAC-SHA256 in hashlib's C code (releases the GIL)",
            args_model=Pbkdf2Args,
            written="process",
            runners={
                "process": cpu_bound(pbkdf2_job),
                "thread": threaded(pbkdf2_job),
                "sync": inline(pbkdf2_job),
            },
        ),
        TaskSpec(
            name="sleep",
            kind="io",
            description="wait ms milliseconds (an I/O stand-in)",
            args_model=SleepArgs,
            written="async",
            runners={
                "async": on_loop(sleep_job_async),
                "thread": threaded(sleep_job),
                "process": cpu_bound(sleep_job),
                "sync": inline(sleep_job),
            },
        ),
        TaskSpec(
            name="echo_probe",
            kind="io",
            description="round trips over TCP to the trio and/or uvloop echo services",
            args_model=EchoProbeArgs,
            written="async",
            runners={
                "async": on_loop(echo_probe_job_async),
                "thread": threaded(echo_probe_job),
                "sync": inline(echo_probe_job),
            },
            prepare=_echo_kwargs,
        ),
    )
}
