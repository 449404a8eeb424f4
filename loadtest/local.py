"""Run the load test without Docker: services as local processes, Locust distributed.

``python -m loadtest.local`` (``make loadtest-local``) starts the trio echo,
uvloop echo and unsync worker services as subprocesses on free loopback
ports, waits until each answers its health probe, then runs Locust headless
with ``--processes N`` (a master plus N forked workers, the same
master/worker protocol as the compose and multi-host setups) against them.
The gate in ``locustfile.py`` checks at least N workers took part. Reports go
to ``--report-dir`` (``report.html``, ``run_stats.csv`` ...), service logs
beside them. The exit status is Locust's, i.e. the gate's; every service is
stopped (SIGTERM, then SIGKILL) however the run ends.

Arguments after ``--`` go to Locust unchanged (``-- --gate-max-p95-ms 200``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.servers import stop_process
from services.common import config
from services.common.logs import log_event, setup_logging
from services.common.ports import free_port
from services.common.probe import ProbeError, probe_echo, probe_http

logger = logging.getLogger("loadtest.local")

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"

# A cold interpreter importing uvloop or FastAPI on a busy 2-core machine can
# take several seconds; readiness is polled, so a fast start stays fast.
START_TIMEOUT_S = 30.0

# Pause between readiness polls; it only bounds the wait.
POLL_INTERVAL_S = 0.1

# Upper bound on the Locust run beyond its --run-time: start-up, worker
# handshake, stop timeout and report writing.
LOCUST_GRACE_S = 120.0


@dataclass(frozen=True)
class Target:
    """A service the local run can start, and the Locust user that loads it."""

    key: str
    module: str
    args: tuple[str, ...]
    user_class: str
    locust_flag: str  # the option telling Locust where the service listens
    health_path: str | None = None  # HTTP health endpoint; None: echo probe

    def locust_value(self, port: int) -> str:
        if self.health_path is None:
            return f"127.0.0.1:{port}"
        return f"http://127.0.0.1:{port}"


TARGETS = {
    t.key: t
    for t in (
        Target("trio", "services.trio_echo", (), "TrioEchoUser", "--trio-echo"),
        Target(
            "uvloop",
            "services.uvloop_echo",
            ("--loop", "uvloop"),
            "UvloopEchoUser",
            "--uvloop-echo",
        ),
        Target(
            "worker",
            "services.unsync_worker",
            (),
            "WorkerUser",
            "--worker-url",
            health_path="/healthz",
        ),
    )
}


def targets(raw: str) -> tuple[str, ...]:
    """A comma-separated, non-empty subset of trio, uvloop, worker."""
    chosen = tuple(dict.fromkeys(t.strip().lower() for t in raw.split(",") if t.strip()))
    if not chosen or any(t not in TARGETS for t in chosen):
        raise config.SettingError(f"must be a comma-separated list of {', '.join(TARGETS)}")
    return chosen


def run_time(raw: str) -> str:
    """A Locust run time such as 30s, 2m or 1h30m (kept as text for Locust)."""
    value = raw.strip()
    if parse_run_time(value) <= 0:
        raise config.SettingError("is not a run time such as 30s, 2m or 1h30m")
    return value


def parse_run_time(value: str) -> int:
    """Seconds in ``1h2m3s``-style text (a bare number means seconds); 0 if malformed."""
    units = {"h": 3600, "m": 60, "s": 1}
    total, number = 0, ""
    for char in value.lower():
        if char.isdigit():
            number += char
        elif char in units and number:
            total, number = total + int(number) * units[char], ""
        else:
            return 0
    return total + int(number) if number else total


@dataclass(frozen=True)
class LocalSettings:
    users: int = config.setting(
        30, help="Locust users, spread over the targets", parse=config.positive_int
    )
    spawn_rate: float = config.setting(
        10.0, help="users started per second", parse=config.positive_float
    )
    run_time: str = config.setting("30s", help="test duration (30s, 2m, ...)", parse=run_time)
    processes: int = config.setting(
        2,
        help="Locust worker processes (the gate checks this many took part)",
        parse=config.positive_int,
    )
    targets: tuple[str, ...] = config.setting(
        ("trio", "uvloop", "worker"),
        help="services to start and load: trio, uvloop, worker (comma-separated)",
        parse=targets,
    )
    report_dir: str = config.setting(
        "reports/loadtest", help="where report.html, run_*.csv and service logs go", parse=str
    )


def wait_ready(target: Target, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll the service's probe until it answers; raise RuntimeError if it exits or times out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{target.module} exited {proc.returncode} at start-up:\n{tail}")
        try:
            if target.health_path is None:
                probe_echo("127.0.0.1", port, timeout=1.0)
            else:
                probe_http("127.0.0.1", port, target.health_path, timeout=1.0)
            return
        except ProbeError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{target.module} not ready on 127.0.0.1:{port} after {START_TIMEOUT_S}s"
                ) from None
            time.sleep(POLL_INTERVAL_S)


def start_order(chosen: Sequence[str]) -> list[str]:
    """The services to start for ``chosen`` targets, in dependency order.

    The worker's echo_probe jobs need both echo servers, so choosing the
    worker starts them too (they get no users unless chosen themselves).
    """
    needed = set(chosen) | ({"trio", "uvloop"} if "worker" in chosen else set())
    return [key for key in TARGETS if key in needed]


@contextlib.contextmanager
def services(chosen: Sequence[str], report_dir: Path) -> Iterator[dict[str, int]]:
    """Start what ``chosen`` needs on free ports; yield {key: port}; stop them all on exit."""
    running: list[tuple[Target, subprocess.Popen[bytes]]] = []
    ports: dict[str, int] = {}
    try:
        for key in start_order(chosen):
            target = TARGETS[key]
            port = free_port()
            log = report_dir / f"{key}.log"
            argv = [sys.executable, "-m", target.module, "--host", "127.0.0.1"]
            argv += ["--port", str(port), *target.args]
            if key == "worker":  # where its echo_probe jobs go
                argv += ["--trio-echo-addr", f"127.0.0.1:{ports['trio']}"]
                argv += ["--uvloop-echo-addr", f"127.0.0.1:{ports['uvloop']}"]
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    argv,
                    cwd=REPO_ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            running.append((target, proc))
            wait_ready(target, proc, port, log)
            log_event(logger, "service_ready", service=target.module, port=port, pid=proc.pid)
            ports[key] = port
        yield ports
    finally:
        for target, proc in reversed(running):
            code = stop_process(proc)
            log_event(logger, "service_stopped", service=target.module, exit_code=code)


def locust_command(
    settings: LocalSettings, ports: dict[str, int], report_dir: Path, extra: Sequence[str]
) -> list[str]:
    """The Locust command line for a headless, multi-process run against ``ports``."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE.relative_to(REPO_ROOT)),
        "--headless",
        "--only-summary",
        "--users",
        str(settings.users),
        "--spawn-rate",
        str(settings.spawn_rate),
        "--run-time",
        settings.run_time,
        "--processes",
        str(settings.processes),
        "--csv",
        str(report_dir / "run"),
        "--html",
        str(report_dir / "report.html"),
    ]
    for key, port in ports.items():
        cmd += [TARGETS[key].locust_flag, TARGETS[key].locust_value(port)]
    cmd += list(extra)
    cmd += [TARGETS[key].user_class for key in settings.targets]
    return cmd


def run_locust(cmd: Sequence[str], budget_s: float) -> int:
    """Run Locust to completion; past ``budget_s`` stop it (SIGTERM, then SIGKILL) and fail.

    SIGTERM lets the Locust master quit its forked workers and write its reports.
    """
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT)
    try:
        return proc.wait(budget_s)
    except subprocess.TimeoutExpired:
        log_event(logger, "locust_timeout", logging.ERROR, budget_s=budget_s)
        stop_process(proc)
        return 1
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): do not leave Locust behind
            stop_process(proc)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1 :]
    settings = config.load_settings(
        LocalSettings,
        prog="loadtest.local",
        env_prefix="LOADTEST_LOCAL_",
        description=__doc__,
        argv=args,
    )
    setup_logging()
    report_dir = (REPO_ROOT / settings.report_dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    try:
        with services(settings.targets, report_dir) as ports:
            cmd = locust_command(settings, ports, report_dir, extra)
            log_event(logger, "locust_start", processes=settings.processes, users=settings.users)
            code = run_locust(cmd, parse_run_time(settings.run_time) + LOCUST_GRACE_S)
    except RuntimeError as exc:
        log_event(logger, "start_failed", logging.ERROR, error=exc)
        return 1
    log_event(logger, "done", exit_code=code, report=report_dir / "report.html")
    return code


if __name__ == "__main__":
    sys.exit(main())
