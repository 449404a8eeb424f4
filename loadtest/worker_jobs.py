"""The jobs the worker user posts to the unsync worker, and how each answer is checked.

A :class:`JobKind` knows its task name, its weight in the mix, the arguments it
sends and what a correct result is. ``GET /tasks`` tells which modes each task
runs in and which one ``auto`` resolves to; :func:`plan` spreads the weighted
kinds over those modes. Sizes are small on purpose: a load test measures the
service under many concurrent jobs, not one long job (``make experiments`` is
for that). This module does not import Locust, so it is unit-tested directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# primes n: the worker counts by trial division; 10,000 (1,229 primes) takes about
# 10 ms of GIL-holding CPU, so thread vs process shows without hogging a core.
PRIMES_N = 10_000
PRIMES_BELOW_N = 1_229

# pbkdf2 iterations: about 5 ms in hashlib's C code (releases the GIL).
PBKDF2_ITERATIONS = 20_000

# The worker's fixed password and salt (services/unsync_worker/work.py), so the
# load test can recompute the digest and check the worker's answer bit for bit.
PBKDF2_PASSWORD = b"unsync-worker"
PBKDF2_SALT = b"concurrency-lab"

# sleep ms: long enough that I/O-style concurrency matters, short next to the
# default p95 limit (500 ms) so only a real backlog fails the gate.
SLEEP_MS = 20

# echo_probe: a few small round trips per job through both echo services.
PROBE_TARGET = "both"
PROBE_COUNT = 5
PROBE_SIZE = 256


def _expected_digest() -> str:
    return hashlib.pbkdf2_hmac("sha256", PBKDF2_PASSWORD, PBKDF2_SALT, PBKDF2_ITERATIONS).hex()


def _check_primes(result: Any) -> str | None:
    if result != PRIMES_BELOW_N:
        return f"primes below {PRIMES_N}: got {result!r}, expected {PRIMES_BELOW_N}"
    return None


def _check_pbkdf2(result: Any) -> str | None:
    digest = result.get("digest") if isinstance(result, Mapping) else None
    if digest != _expected_digest():
        return f"pbkdf2 digest {digest!r} is not the expected one"
    return None


def _check_sleep(result: Any) -> str | None:
    slept = result.get("slept_ms") if isinstance(result, Mapping) else None
    # A timer may fire a millisecond early after rounding; never much earlier.
    if not isinstance(slept, int) or slept < SLEEP_MS - 1:
        return f"sleep {SLEEP_MS} ms: slept_ms is {slept!r}"
    return None


def _check_echo_probe(result: Any) -> str | None:
    targets = result.get("targets") if isinstance(result, Mapping) else None
    if not isinstance(targets, list) or len(targets) != 2:  # "both": trio and uvloop
        return f"echo_probe: expected 2 target reports, got {targets!r}"[:300]
    for report in targets:
        if not isinstance(report, Mapping):
            return "echo_probe: a target report is not an object"
        if report.get("count") != PROBE_COUNT or report.get("size") != PROBE_SIZE:
            return f"echo_probe: {report.get('target')!r} did {report.get('count')!r} round trips"
    return None


@dataclass(frozen=True)
class JobKind:
    """One task of the worker API as the load test uses it."""

    task: str
    weight: int  # relative frequency of this task in the mix, per mode
    args: Mapping[str, Any]
    check_result: Callable[[Any], str | None]  # None if right, else why not

    def request(self, mode: str, timeout_s: float) -> dict[str, Any]:
        """The ``POST /jobs`` body."""
        return {"task": self.task, "args": dict(self.args), "mode": mode, "timeout_s": timeout_s}


JOB_KINDS: tuple[JobKind, ...] = (
    JobKind("primes", 2, {"n": PRIMES_N}, _check_primes),
    JobKind("pbkdf2", 1, {"iterations": PBKDF2_ITERATIONS}, _check_pbkdf2),
    JobKind("sleep", 3, {"ms": SLEEP_MS}, _check_sleep),
    JobKind(
        "echo_probe",
        1,
        {"target": PROBE_TARGET, "count": PROBE_COUNT, "size": PROBE_SIZE},
        _check_echo_probe,
    ),
)


@dataclass(frozen=True)
class PlannedJob:
    """A job to post: which kind, the mode asked for, the mode the answer must name."""

    kind: JobKind
    mode: str
    expected_mode: str

    @property
    def name(self) -> str:
        """The name Locust reports it under, e.g. ``jobs:primes:process``."""
        return f"jobs:{self.kind.task}:{self.mode}"


def plan(offered: Any, wanted_modes: Iterable[str]) -> list[PlannedJob]:
    """The weighted job mix for a ``GET /tasks`` body and the modes asked for.

    Each kind appears ``weight`` times per mode it runs in; a task the worker
    does not list, or a mode it does not offer for a task, is left out. Raises
    ValueError if the body is not the worker's task list.
    """
    tasks = offered.get("tasks") if isinstance(offered, Mapping) else None
    if not isinstance(tasks, list):
        raise ValueError("GET /tasks did not return {'tasks': [...]}")
    by_name = {t.get("name"): t for t in tasks if isinstance(t, Mapping)}
    wanted = list(wanted_modes)
    jobs: list[PlannedJob] = []
    for kind in JOB_KINDS:
        info = by_name.get(kind.task)
        if info is None:
            continue
        modes = info.get("modes") or []
        auto_mode = str(info.get("auto_mode", ""))
        for mode in (m for m in wanted if m in modes):
            expected = auto_mode if mode == "auto" else mode
            jobs += [PlannedJob(kind, mode, expected)] * kind.weight
    return jobs


def check_job_response(job: PlannedJob, status: int | None, text: str | None) -> str | None:
    """Why a ``POST /jobs`` response is wrong, or None if it is right.

    Right means: HTTP 200, a JSON object naming the same task and the mode
    the job had to run in (``auto`` resolved as ``GET /tasks`` said), and a
    result the job's kind accepts.
    """
    if status != 200:
        return f"HTTP {status}: {(text or '')[:200]}"
    try:
        body = json.loads(text or "")
    except ValueError:
        return "response is not JSON"
    if not isinstance(body, dict):
        return "response is not a JSON object"
    if body.get("task") != job.kind.task or body.get("mode") != job.expected_mode:
        return (
            f"response names {body.get('task')!r} in mode {body.get('mode')!r}, "
            f"expected {job.kind.task!r} in mode {job.expected_mode!r}"
        )
    if "result" not in body:
        return "response has no result"
    return job.kind.check_result(body["result"])
