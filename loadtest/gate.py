"""The pass/fail gate of a load test: thresholds in, one message per broken one out.

The gate runs on the Locust master (or the single standalone process) when the
test ends; ``locustfile.py`` turns Locust's statistics into a
:class:`RunSummary` and sets the process exit code from :func:`evaluate`. This
module is plain Python (no Locust, no gevent) so its rules are unit-tested
directly.

Latency and failure-ratio limits apply per request name, with glob overrides:
``"500"`` means 500 for every name, ``"500,jobs:sleep:*=1500"`` gives the
worker's sleep jobs more room, ``"off"`` disables the check.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.config import SettingError

# Exit status when a threshold fails: Locust's own "the test failed" status,
# so CI treats a gate failure like any other failed load test.
EXIT_GATE_FAILED = 1

# Words that switch a limit off.
_OFF = ("off", "none", "-")


@dataclass(frozen=True)
class Limit:
    """A per-name upper bound: the first matching glob override wins, else ``default``.

    ``None`` means unchecked.
    """

    default: float | None
    overrides: tuple[tuple[str, float], ...] = ()

    def for_name(self, name: str) -> float | None:
        for pattern, value in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                return value
        return self.default

    def __str__(self) -> str:
        parts = ["off" if self.default is None else f"{self.default:g}"]
        parts += [f"{pattern}={value:g}" for pattern, value in self.overrides]
        return ",".join(parts)


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SettingError(f"{raw!r} must be a finite number >= 0")
    return value


def parse_limit(raw: str) -> Limit:
    """Parse ``"DEFAULT[,GLOB=VALUE...]"``; DEFAULT may be ``off``.

    Raises :class:`SettingError` (a ValueError) with a short reason on bad input.
    """
    default: float | None = None
    default_seen = False
    overrides: list[tuple[str, float]] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if "=" in item:
            pattern, _, value = item.partition("=")
            if not pattern.strip():
                raise SettingError(f"override {item!r} has no name pattern")
            overrides.append((pattern.strip(), _number(value.strip())))
        elif default_seen:
            raise SettingError(f"more than one default value in {raw!r}")
        else:
            default_seen = True
            default = None if item.lower() in _OFF else _number(item)
    if not default_seen and not overrides:
        raise SettingError("is empty (give a number, off, or NAME=VALUE overrides)")
    return Limit(default, tuple(overrides))


@dataclass(frozen=True)
class Thresholds:
    """What a passing run looks like. Each field names the option that sets it."""

    max_fail_ratio: Limit = field(default_factory=lambda: Limit(0.01))  # --gate-max-fail-ratio
    max_p95_ms: Limit = field(default_factory=lambda: Limit(500.0))  # --gate-max-p95-ms
    max_p99_ms: Limit = field(default_factory=lambda: Limit(1000.0))  # --gate-max-p99-ms
    min_requests: int = 1  # --gate-min-requests
    min_workers: int = 0  # --gate-min-workers (0: not checked)
    fail_on_cpu_warning: bool = True  # --gate-cpu-warning fail|ignore


@dataclass(frozen=True)
class NameStats:
    """Locust's numbers for one request name (one row of ``run_stats.csv``)."""

    request_type: str
    name: str
    requests: int
    failures: int
    p95_ms: float
    p99_ms: float

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def label(self) -> str:
        return f"{self.request_type} {self.name}"


@dataclass(frozen=True)
class RunSummary:
    """What the gate looks at, taken from the runner when the test ends."""

    names: Sequence[NameStats]
    user_exceptions: int = 0  # exceptions raised by user code: locustfile bugs
    workers: int | None = None  # most workers seen at once; None for a standalone run
    cpu_warning: str | None = None  # where the load generator ran hot ("master", "workers")

    @property
    def requests(self) -> int:
        return sum(n.requests for n in self.names)

    @property
    def failures(self) -> int:
        return sum(n.failures for n in self.names)


def evaluate(summary: RunSummary, limits: Thresholds) -> list[str]:
    """Check ``summary`` against ``limits``; return one message per broken threshold.

    An empty list means the run passed. Each message names the option that
    sets the threshold it broke, so a failed CI log says what to look at.
    """
    problems: list[str] = []
    if summary.requests < limits.min_requests:
        problems.append(
            f"only {summary.requests} requests were made, fewer than "
            f"{limits.min_requests} (--gate-min-requests): the targets were not exercised"
        )
    if summary.requests:
        total = summary.failures / summary.requests
        bound = limits.max_fail_ratio.default
        if bound is not None and total > bound:
            problems.append(
                f"failure ratio of all requests is {total:.2%} "
                f"({summary.failures}/{summary.requests}) > {bound:.2%} (--gate-max-fail-ratio)"
            )
    for stats in sorted(summary.names, key=lambda s: s.label):
        bound = limits.max_fail_ratio.for_name(stats.name)
        if bound is not None and stats.fail_ratio > bound:
            problems.append(
                f"failure ratio of {stats.label} is {stats.fail_ratio:.2%} "
                f"({stats.failures}/{stats.requests}) > {bound:.2%} (--gate-max-fail-ratio)"
            )
        for pct, value, limit, option in (
            ("p95", stats.p95_ms, limits.max_p95_ms, "--gate-max-p95-ms"),
            ("p99", stats.p99_ms, limits.max_p99_ms, "--gate-max-p99-ms"),
        ):
            bound = limit.for_name(stats.name)
            if bound is not None and stats.requests and value > bound:
                problems.append(
                    f"{pct} response time of {stats.label} is {value:g} ms "
                    f"> {bound:g} ms ({option})"
                )
    if summary.user_exceptions:
        problems.append(
            f"user code raised {summary.user_exceptions} distinct exception(s): "
            "a bug in the load test itself (see the exceptions report)"
        )
    if limits.min_workers and (summary.workers or 0) < limits.min_workers:
        problems.append(
            f"{summary.workers or 0} Locust worker(s) took part, fewer than "
            f"{limits.min_workers} (--gate-min-workers)"
        )
    if limits.fail_on_cpu_warning and summary.cpu_warning:
        problems.append(
            f"the load generator itself ran above Locust's CPU warning level on the "
            f"{summary.cpu_warning}, so the numbers measure Locust, not the services: "
            "add workers or lower USERS (--gate-cpu-warning ignore to accept)"
        )
    return problems
