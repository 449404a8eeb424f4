"""Locust entry point: the lab's users, its custom options and the pass/fail gate.

Run from the repository root, e.g.::

    locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 30s \\
        --trio-echo 127.0.0.1:9001 --uvloop-echo 127.0.0.1:9002 \\
        --worker-url http://127.0.0.1:8080

Without target options the users aim at the compose service names. When the
test ends, the master (or the single standalone process) checks the run
against the ``--gate-*`` thresholds, logs one line per broken threshold and
sets the exit code: 0 if the run passed, 1 if any threshold failed.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from typing import Any

from locust import events, log
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtest import gate
from loadtest import options as lt_options
from loadtest.users import TrioEchoUser, UvloopEchoUser, WorkerUser
from services.common.logs import log_event

# Locust picks its user classes from this module's namespace.
__all__ = ["TrioEchoUser", "UvloopEchoUser", "WorkerUser"]

logger = logging.getLogger("loadtest.gate")

# Percentiles the gate checks, as fractions for StatsEntry.get_response_time_percentile.
P95, P99 = 0.95, 0.99

# Most workers seen at once during the run, per environment (the gate's worker check).
_peak_workers: dict[int, int] = {}


def _listen(hook: Any, handler: Callable[..., None]) -> None:
    """``hook.add_listener(handler)``, kept typed (Locust's EventHook is not)."""
    hook.add_listener(handler)


def _add_options(parser: Any, **_kwargs: Any) -> None:
    lt_options.add_arguments(parser)


_listen(events.init_command_line_parser, _add_options)


def _watch_workers(environment: Environment, **_kwargs: Any) -> None:
    """On a master, remember the most workers connected while users ran."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    key = id(environment)

    def note(**_kw: Any) -> None:
        _peak_workers[key] = max(_peak_workers.get(key, 0), runner.worker_count)

    _listen(environment.events.spawning_complete, note)
    _listen(environment.events.test_stop, note)


_listen(events.init, _watch_workers)


def summarize(environment: Environment) -> gate.RunSummary:
    """What the gate needs from the runner: per-name stats, exceptions, workers, CPU."""
    runner = environment.runner
    names = [
        gate.NameStats(
            request_type=str(entry.method),
            name=entry.name,
            requests=entry.num_requests,
            failures=entry.num_failures,
            p95_ms=float(entry.get_response_time_percentile(P95) or 0.0),
            p99_ms=float(entry.get_response_time_percentile(P99) or 0.0),
        )
        for entry in environment.stats.entries.values()
    ]
    cpu: str | None = None
    workers: int | None = None
    exceptions = 0
    if runner is not None:
        exceptions = len(runner.exceptions)
        if isinstance(runner, MasterRunner):
            workers = max(_peak_workers.get(id(environment), 0), runner.worker_count)
            hot = [
                where
                for where, flag in (
                    ("master", runner.cpu_warning_emitted),
                    ("workers", runner.worker_cpu_warning_emitted),
                )
                if flag
            ]
            cpu = " and ".join(hot) or None
        elif runner.cpu_warning_emitted:
            cpu = "load generator process"
    return gate.RunSummary(
        names=names, user_exceptions=exceptions, workers=workers, cpu_warning=cpu
    )


def _write_final_csv(environment: Environment) -> None:
    """Rewrite ``<prefix>_stats.csv`` and ``_failures.csv`` with the final numbers.

    Locust's CSV writer refreshes them once a second, so its last write can
    miss the final second of a run; at quitting the statistics are final.
    """
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    with open(f"{prefix}_stats.csv", "w", newline="") as f:
        writer.requests_csv(csv.writer(f))
    with open(f"{prefix}_failures.csv", "w", newline="") as f:
        writer.failures_csv(csv.writer(f))


def _gate(environment: Environment, **_kwargs: Any) -> None:
    """Check the finished run and set the exit code (master or standalone only).

    Also writes the final CSVs (see :func:`_write_final_csv`).

    Overrides Locust's default "any failed request exits 1": the failure-ratio
    threshold decides instead. An unhandled error in Locust itself (exit 2) is
    left alone.
    """
    if isinstance(environment.runner, WorkerRunner):
        return
    _write_final_csv(environment)
    parsed = environment.parsed_options
    expect = int(getattr(parsed, "expect_workers", 0) or 0)
    is_master = isinstance(environment.runner, MasterRunner)
    opts = lt_options.read(parsed, expect_workers=expect if is_master else 0)
    summary = summarize(environment)
    problems = gate.evaluate(summary, opts.thresholds)
    for problem in problems:
        logger.error("gate FAILED: %s", problem)
    log_event(
        logger,
        "gate",
        logging.ERROR if problems else logging.INFO,
        result="failed" if problems else "passed",
        requests=summary.requests,
        failures=summary.failures,
        names=len(summary.names),
        workers="standalone" if summary.workers is None else summary.workers,
        broken_thresholds=len(problems),
    )
    if problems:
        environment.process_exit_code = gate.EXIT_GATE_FAILED
    elif environment.process_exit_code is None and not log.unhandled_greenlet_exception:
        environment.process_exit_code = 0


_listen(events.quitting, _gate)
