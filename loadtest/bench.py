"""How fast one Locust process can drive the TCP echo user (``make locust-bench``).

The load generator must not be the bottleneck of a load test, so this measures
its ceiling: one standalone Locust process (the same code a worker runs) with
echo users that never wait, against the fastest echo server at hand on
loopback. The server is the C epoll reference (``bench/reference/epoll_echo.c``,
built by ``make bench``'s own builder into ``build/bench/``: ``$CC``, else cc, gcc
or clang), else the bare asyncio Protocol reference; both start as ``make bench``
starts them. With two or more usable CPUs the server and Locust are pinned to
different ones, chosen from this process's affinity mask as ``make bench`` does,
so the number is Locust's, not a fight over one core. ``--server c`` without a
working compiler is an environment problem: one error line, exit status 1.

It prints one result line and writes ``bench.json`` beside Locust's CSVs in
``--report-dir``: requests per second of wall time, and requests per second of
CPU time Locust used (start-up included), which is what a fully available core
would give and stays meaningful on a busy machine. A benchmark, not a test: it
asserts nothing. The server is always stopped, however the run ends.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.servers import (
    CONTESTANTS,
    Contestant,
    ServerProcess,
    build_c_server,
    choose_placement,
)
from loadtest.local import REPO_ROOT, parse_run_time, run_time
from services.common import config
from services.common.logs import log_event, setup_logging

logger = logging.getLogger("loadtest.bench")

# Locust start-up plus report writing, on top of the measured run time.
LOCUST_GRACE_S = 60.0


@dataclass(frozen=True)
class BenchSettings:
    users: int = config.setting(
        16,
        help="echo users in the one Locust process (enough to keep it busy)",
        parse=config.positive_int,
    )
    run_time: str = config.setting("20s", help="measured duration", parse=run_time)
    payload_bytes: int = config.setting(
        1024, help="bytes per round trip", parse=config.positive_int
    )
    server: str = config.setting(
        "auto",
        help="reference server: auto (C if it builds, else asyncio), c, asyncio",
        parse=config.choice("auto", "c", "asyncio"),
    )
    report_dir: str = config.setting(
        "reports/loadtest-bench", help="where bench.json and Locust's CSVs go", parse=str
    )


@dataclass(frozen=True)
class BenchResult:
    server: str
    users: int
    payload_bytes: int
    requests: int
    failures: int
    requests_per_s: float
    locust_cpu_s: float  # CPU time Locust used, start-up included
    requests_per_cpu_s: float  # what one fully available core would give
    median_ms: float
    p99_ms: float
    pinned: bool
    cpus: int
    python: str
    machine: str
    date: str


# The bench contestants this measurement may use, and their names in bench.json.
SERVERS = {"c_epoll": "c-epoll", "protocol_asyncio": "asyncio-protocol"}


class NoServer(Exception):
    """The requested reference server cannot run here (an environment problem)."""


def reference_contestant(choice: str) -> Contestant:
    """The bench contestant to start for ``choice`` (auto, c or asyncio).

    The C reference is built by :func:`bench.servers.build_c_server` (the same
    binary and flags as ``make bench``); ``auto`` falls back to the bare asyncio
    Protocol server when that fails. Raises :class:`NoServer` with the builder's
    reason for ``c`` without a working compiler.
    """
    by_key = {c.key: c for c in CONTESTANTS}
    if choice in ("auto", "c"):
        binary, why = build_c_server()
        if binary is not None:
            return by_key["c_epoll"]
        if choice == "c":
            raise NoServer(f"--server c, but the C reference cannot be built: {why}")
        log_event(logger, "c_reference_unavailable", logging.WARNING, reason=why)
    return by_key["protocol_asyncio"]


@contextmanager
def reference_server(
    contestant: Contestant, log: Path, cpus: frozenset[int] | None
) -> Iterator[int]:
    """Run ``contestant`` pinned to ``cpus`` on a free port until it echoes; yield the port.

    Raises RuntimeError (with the tail of its output in ``log``) if it exits or
    never answers; the server is stopped (SIGTERM, then SIGKILL) however the block ends.
    """
    server = ServerProcess(contestant, log, cpus)
    try:
        server.launch()
        server.wait_ready()
        yield server.port
    finally:
        server.stop()


def pin_self(cpus: frozenset[int] | None) -> None:
    """Restrict the calling process to ``cpus`` (no-op for None); a preexec_fn for Popen.

    Only ever given CPUs from :func:`bench.servers.choose_placement`, i.e. CPUs
    this process may already use, so the call cannot fail on the affinity mask.
    """
    if cpus:
        os.sched_setaffinity(0, cpus)


def locust_command(settings: BenchSettings, port: int, report_dir: Path) -> list[str]:
    """One standalone, headless Locust process of echo users that never wait, against ``port``."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtest/locustfile.py",
        "--headless",
        "--only-summary",
        "--users",
        str(settings.users),
        "--spawn-rate",
        str(settings.users),  # all at once: the ramp is not what we measure
        "--run-time",
        settings.run_time,
        "--csv",
        str(report_dir / "bench"),
        "--trio-echo",
        f"127.0.0.1:{port}",
        "--echo-rate",
        "0",
        "--echo-payload-bytes",
        str(settings.payload_bytes),
        # This run saturates Locust on purpose: only failures may fail it.
        "--gate-cpu-warning",
        "ignore",
        "--gate-max-p95-ms",
        "off",
        "--gate-max-p99-ms",
        "off",
        "--gate-max-fail-ratio",
        "0",
        "TrioEchoUser",
    ]


def _children_cpu_s() -> float:
    """User + system CPU seconds of all reaped child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_aggregate(stats_csv: Path) -> dict[str, str]:
    """The "Aggregated" row of Locust's ``*_stats.csv``."""
    with stats_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                return row
    raise RuntimeError(f"no Aggregated row in {stats_csv}")


def main(argv: Sequence[str] | None = None) -> int:
    settings = config.load_settings(
        BenchSettings,
        prog="loadtest.bench",
        env_prefix="LOADTEST_BENCH_",
        description=__doc__,
        argv=argv,
    )
    setup_logging()
    report_dir = (REPO_ROOT / settings.report_dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    placement = choose_placement()  # the CPUs this process may use, as `make bench` pins
    try:
        contestant = reference_contestant(settings.server)
    except NoServer as exc:
        print(f"loadtest.bench: error: {exc}", file=sys.stderr)
        return 1
    name = SERVERS[contestant.key]
    log_event(logger, "bench_start", server=name, users=settings.users, cpus=cpus)
    try:
        with reference_server(contestant, report_dir / "server.log", placement.server) as port:
            before = _children_cpu_s()
            code = subprocess.run(
                locust_command(settings, port, report_dir),
                cwd=REPO_ROOT,
                preexec_fn=lambda: pin_self(placement.client),
                timeout=parse_run_time(settings.run_time) + LOCUST_GRACE_S,
            ).returncode
            cpu_s = _children_cpu_s() - before  # Locust only: the server is reaped later
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"loadtest.bench: error: {exc}", file=sys.stderr)
        return 1
    row = read_aggregate(report_dir / "bench_stats.csv")
    requests = int(row["Request Count"])
    result = BenchResult(
        server=name,
        users=settings.users,
        payload_bytes=settings.payload_bytes,
        requests=requests,
        failures=int(row["Failure Count"]),
        requests_per_s=round(float(row["Requests/s"]), 1),
        locust_cpu_s=round(cpu_s, 2),
        requests_per_cpu_s=round(requests / cpu_s, 1) if cpu_s > 0 else 0.0,
        median_ms=float(row["50%"]),
        p99_ms=float(row["99%"]),
        pinned=placement.server is not None,
        cpus=cpus,
        python=platform.python_version(),
        machine=platform.machine(),
        date=time.strftime("%Y-%m-%d"),
    )
    (report_dir / "bench.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(
        f"locust-bench: one Locust process, {result.users} TCP echo users, "
        f"{result.payload_bytes} B payloads vs {result.server} server: "
        f"{result.requests_per_s:,.0f} req/s, {result.requests_per_cpu_s:,.0f} per CPU-second "
        f"({result.requests} requests, "
        f"{result.failures} failures, median {result.median_ms:g} ms, p99 {result.p99_ms:g} ms, "
        f"{'pinned to separate cores' if result.pinned else 'unpinned'})"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
