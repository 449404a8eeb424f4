"""The worker's settings: one frozen dataclass filled from flags and ``WORKER_*`` variables.

Pool sizes default to the CPUs this process may really use (its affinity mask
and its cgroup CPU quota, as a container limit sets them), not to
``os.cpu_count()``, which reports the host's cores even inside a 1-CPU container.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from services.common import config
from services.common.shutdown import DEFAULT_DRAIN_S

# Names in error lines and --help, and the prefix of every setting's variable (DESIGN.md).
PROG = "unsync_worker"
ENV_PREFIX = "WORKER_"

# cgroup v2 (unified) exposes "<quota> <period>" or "max <period>" here.
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# cgroup v1 splits quota and period; -1 quota means "no limit".
CGROUP_V1_DIRS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"))

# The echo servers' compose service names and default ports (DESIGN.md contract).
DEFAULT_TRIO_ECHO = "trio-echo:9001"
DEFAULT_UVLOOP_ECHO = "uvloop-echo:9002"

# Sync jobs block the server's loop one at a time, so each one waiting is one more
# job of loop time owed. 20 is the experiments' largest sync batch (20 sleeps) and
# leaves most of the default queue (256) to the other modes during a sync burst.
DEFAULT_SYNC_MAX_JOBS = 20


def cgroup_cpu_limit(
    v2_file: Path = CGROUP_V2_CPU_MAX, v1_dirs: tuple[Path, ...] = CGROUP_V1_DIRS
) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5 for ``--cpus=1.5``), or None.

    None means no quota, or no cgroup files we can read; unreadable or odd
    files are treated as "no limit" rather than an error.
    """
    try:
        quota, period = v2_file.read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for directory in v1_dirs:
        try:
            quota_us = int((directory / "cpu.cfs_quota_us").read_text())
            period_us = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def available_cpus(limit: float | None = None, affinity: int | None = None) -> int:
    """CPUs this process can keep busy: its affinity mask, capped by the cgroup quota.

    A fractional quota rounds up (1.5 CPUs → 2 workers keep the quota full).
    Never less than 1. Arguments override the measured values (for tests).
    """
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if limit is None:
        limit = cgroup_cpu_limit()
    cpus = affinity if limit is None else min(affinity, math.ceil(limit))
    return max(1, cpus)


def default_threads(cpus: int) -> int:
    """ThreadPoolExecutor's own rule (min(32, cpus + 4)), but from the CPUs we may use."""
    return min(32, cpus + 4)


@dataclass(frozen=True)
class EchoAddress:
    """Where an echo service listens; ``repr`` is the ``host:port`` form used in flags."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    __repr__ = __str__


def echo_address(raw: str) -> EchoAddress:
    """Parse ``host:port`` (``[v6]:port`` for IPv6 literals) into an :class:`EchoAddress`."""
    value = raw.strip()
    host_part, sep, port_part = value.rpartition(":")
    if not sep or not host_part:
        raise config.SettingError("is not HOST:PORT")
    if host_part.startswith("[") and host_part.endswith("]"):
        host_part = host_part[1:-1]
    elif ":" in host_part:
        raise config.SettingError("is not HOST:PORT (write IPv6 addresses as [addr]:port)")
    try:
        host = config.host(host_part)
        port = config.parse_int(port_part, low=1, high=65535)
    except config.SettingError as exc:
        raise config.SettingError(f"is not HOST:PORT ({exc})") from None
    return EchoAddress(host, port)


def non_negative_int(raw: str) -> int:
    return config.parse_int(raw, low=0)


def flag(raw: str) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (case-insensitive)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise config.SettingError("must be 1/true/yes/on or 0/false/no/off")


# Measured once at import: the help text shows the defaults this machine gets.
_CPUS = available_cpus()


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker needs to know at start-up; see ``--help`` for each."""

    host: str = config.setting("0.0.0.0", help="interface to listen on", parse=config.host)
    port: int = config.setting(
        8080, help="HTTP port to listen on (0: any free port)", parse=config.port
    )
    threads: int = config.setting(
        default_threads(_CPUS),
        help="unsync thread pool size (thread mode); default min(32, usable CPUs + 4)",
        parse=config.positive_int,
    )
    processes: int = config.setting(
        _CPUS,
        help="unsync process pool size (process mode); default the usable CPUs "
        "(affinity mask capped by the cgroup CPU quota)",
        parse=config.positive_int,
    )
    concurrency: int = config.setting(
        64,
        help="jobs run at once (consumers of the job queue); the rest wait in the queue",
        parse=config.positive_int,
    )
    queue_size: int = config.setting(
        256,
        help="jobs that may wait in the queue; beyond it POST /jobs gets 503",
        parse=config.positive_int,
    )
    sync_max_jobs: int = config.setting(
        DEFAULT_SYNC_MAX_JOBS,
        help="sync-mode jobs accepted at once (queued or running); beyond it POST /jobs "
        "gets 503 sync_busy; 0 turns sync mode off (422, and it is not listed)",
        parse=non_negative_int,
    )
    default_timeout_s: float = config.setting(
        10.0, help="a job's timeout when the request gives none", parse=config.positive_float
    )
    max_timeout_s: float = config.setting(
        30.0, help="the largest timeout_s a request may ask for", parse=config.positive_float
    )
    drain_s: float = config.setting(
        DEFAULT_DRAIN_S,
        help="on SIGTERM/SIGINT, how long queued and running jobs may still finish",
        parse=config.non_negative_float,
    )
    max_body_bytes: int = config.setting(
        16 * 1024,
        help="largest POST /jobs body accepted (Content-Length or streamed)",
        parse=config.positive_int,
    )
    # EchoAddress is a frozen dataclass, so a shared default is safe (RUF009).
    trio_echo_addr: EchoAddress = config.setting(  # noqa: RUF009
        echo_address(DEFAULT_TRIO_ECHO),
        help="trio echo service for echo_probe, HOST:PORT",
        parse=echo_address,
    )
    uvloop_echo_addr: EchoAddress = config.setting(  # noqa: RUF009
        echo_address(DEFAULT_UVLOOP_ECHO),
        help="uvloop echo service for echo_probe, HOST:PORT",
        parse=echo_address,
    )
    enable_test_tasks: bool = config.setting(
        False,
        help="also accept the test-only tasks (crash, fail, hold); never listed in GET /tasks",
        parse=flag,
    )
    log_level: str = config.setting(
        "info", help="debug, info, warning or error", parse=config.log_level
    )

    def problem(self) -> str | None:
        """A one-line description of settings that contradict each other, or None."""
        if self.default_timeout_s > self.max_timeout_s:
            return (
                f"--default-timeout-s / {ENV_PREFIX}DEFAULT_TIMEOUT_S: {self.default_timeout_s} "
                f"must be <= --max-timeout-s ({self.max_timeout_s})"
            )
        return None
