"""How fast one Locust process can drive the TCP echo user (``make locust-bench``).

The load generator must not be the bottleneck of a load test, so this measures
its ceiling: one standalone Locust process (the same code a worker runs) with
echo users that never wait, against the fastest echo server at hand on
loopback. The server is the C epoll reference (``bench/reference/epoll_echo.c``,
compiled on the fly when a C compiler exists), else the bare asyncio Protocol
reference. With two or more CPUs the server and Locust are pinned to different
cores, so the number is Locust's, not a fight over one core.

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
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtest.local import REPO_ROOT, free_port, parse_run_time, run_time, stop
from services.common import config
from services.common.logs import log_event, setup_logging
from services.common.probe import ProbeError, probe_echo

logger = logging.getLogger("loadtest.bench")

C_SOURCE = REPO_ROOT / "bench" / "reference" / "epoll_echo.c"
C_BINARY = REPO_ROOT / "build" / "loadtest" / "epoll_echo"

# How long the reference server may take to answer its first probe.
START_TIMEOUT_S = 15.0

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


def c_server() -> list[str] | None:
    """The C reference's command, compiling it first if needed; None if no compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not C_SOURCE.exists() or compiler is None:
        return None
    if not C_BINARY.exists() or C_BINARY.stat().st_mtime < C_SOURCE.stat().st_mtime:
        C_BINARY.parent.mkdir(parents=True, exist_ok=True)
        build = subprocess.run(
            [compiler, "-O2", "-o", str(C_BINARY), str(C_SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if build.returncode != 0:
            log_event(logger, "c_build_failed", logging.WARNING, error=build.stderr.strip())
            return None
    return [str(C_BINARY), "127.0.0.1"]


def server_command(choice: str, port: int) -> tuple[str, list[str]]:
    """(name, argv) of the reference server to start on ``port``."""
    if choice in ("auto", "c"):
        cmd = c_server()
        if cmd is not None:
            return "c-epoll", [*cmd, str(port)]
        if choice == "c":
            raise RuntimeError("the C reference server cannot be built here (no cc?)")
    module = ["-m", "bench.reference.asyncio_protocol", "--loop", "asyncio"]
    return "asyncio-protocol", [sys.executable, *module, "--port", str(port)]


def pin(cpu: int | None) -> None:
    """Restrict the calling process to one CPU (a preexec_fn for Popen)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


@contextmanager
def reference_server(argv: list[str], port: int, cpu: int | None) -> Iterator[None]:
    """Run the server pinned to ``cpu`` until it echoes; stop it (always) on exit."""
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: pin(cpu),  # noqa: PLW1509 - only sched_setaffinity, no locks
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"reference server exited {proc.returncode} at start")
            try:
                probe_echo("127.0.0.1", port, timeout=1.0)
                break
            except ProbeError:
                if time.monotonic() > deadline:
                    raise RuntimeError("reference server never answered") from None
                time.sleep(0.05)
        yield
    finally:
        stop(proc)


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
    server_cpu, locust_cpu = (1, 0) if cpus >= 2 else (None, None)
    port = free_port()
    try:
        name, server_argv = server_command(settings.server, port)
    except RuntimeError as exc:
        print(f"loadtest.bench: error: {exc}", file=sys.stderr)
        return config.EXIT_USAGE
    locust = [
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
    log_event(logger, "bench_start", server=name, users=settings.users, cpus=cpus)
    try:
        with reference_server(server_argv, port, server_cpu):
            before = _children_cpu_s()
            code = subprocess.run(
                locust,
                cwd=REPO_ROOT,
                preexec_fn=lambda: pin(locust_cpu),
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
        pinned=server_cpu is not None,
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
