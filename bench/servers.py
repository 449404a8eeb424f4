"""The contestants: what to start, how to start and pin them, how to stop them.

Every server runs as a real subprocess listening on a free loopback port; the
harness waits until it echoes (the project's TCP probe), pins it to the server
CPU and samples its CPU time from /proc. Project servers run with their default
settings (idle timeout, connection limit and logging on): features must be paid
for in the figures, not switched off for them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from bench.procstat import cpu_ticks
from services.common.logs import log_event
from services.common.ports import free_port
from services.common.probe import ProbeError, probe_echo

logger = logging.getLogger("bench.servers")

REPO_ROOT = Path(__file__).resolve().parent.parent

# C reference source and where the harness compiles it (build/ is git-ignored).
C_SOURCE = REPO_ROOT / "bench" / "reference" / "epoll_echo.c"
C_BINARY = REPO_ROOT / "build" / "bench" / "epoll_echo"

# -O2 is what a distribution would ship; warnings on so a broken edit shows up.
C_FLAGS = ("-O2", "-Wall", "-Wextra")

# A cold interpreter importing trio or uvloop on a loaded 2-core box can take a few
# seconds; readiness is polled, so a quick start costs nothing.
START_TIMEOUT_S = 30.0

# Pause between readiness probes: it only bounds the wait.
POLL_INTERVAL_S = 0.05

# SIGTERM, then SIGKILL after this long: project servers drain open connections for
# up to 5 s by default, and the harness has closed all of its connections by then.
STOP_TIMEOUT_S = 10.0

# Environment variables that would change a project server's defaults; removed so a
# user's shell cannot quietly tune the contestants.
_SETTING_PREFIXES = ("TRIO_ECHO_", "UVLOOP_ECHO_")


@dataclass(frozen=True)
class Contestant:
    """One server in the comparison.

    ``runtime`` groups it with its minimal reference (``reference``, a key);
    ``kind`` is project, reference or ceiling. ``argv`` holds ``{host}`` and
    ``{port}`` placeholders; ``module`` is checked for existence before start.
    """

    key: str
    label: str
    runtime: str
    kind: str
    argv: tuple[str, ...]
    module: str | None = None
    reference: str | None = None


def _py(module: str, *extra: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, "--host", "{host}", "--port", "{port}", *extra)


PROJECT = "project"
REFERENCE = "reference"
CEILING = "ceiling"

# Order matters only for the report's tables; the run order is ABBA over this list.
CONTESTANTS: tuple[Contestant, ...] = (
    Contestant(
        "trio_service", "trio echo (project)", "trio", PROJECT,
        _py("services.trio_echo"), "services.trio_echo", "trio_tutorial",
    ),
    Contestant(
        "uvloop_service", "uvloop echo (project, uvloop)", "uvloop", PROJECT,
        _py("services.uvloop_echo", "--loop", "uvloop"), "services.uvloop_echo",
        "protocol_uvloop",
    ),
    Contestant(
        "uvloop_service_asyncio", "uvloop echo (project, asyncio loop)", "asyncio", PROJECT,
        _py("services.uvloop_echo", "--loop", "asyncio"), "services.uvloop_echo",
        "protocol_asyncio",
    ),
    Contestant(
        "trio_tutorial", "trio tutorial shape", "trio", REFERENCE,
        _py("bench.reference.trio_tutorial"), "bench.reference.trio_tutorial",
    ),
    Contestant(
        "protocol_uvloop", "bare Protocol on uvloop", "uvloop", REFERENCE,
        _py("bench.reference.asyncio_protocol", "--loop", "uvloop"),
        "bench.reference.asyncio_protocol",
    ),
    Contestant(
        "protocol_asyncio", "bare Protocol on asyncio", "asyncio", REFERENCE,
        _py("bench.reference.asyncio_protocol", "--loop", "asyncio"),
        "bench.reference.asyncio_protocol",
    ),
    Contestant(
        "streams_asyncio", "bare streams on asyncio", "asyncio", REFERENCE,
        _py("bench.reference.asyncio_streams", "--loop", "asyncio"),
        "bench.reference.asyncio_streams",
    ),
    Contestant(
        "streams_uvloop", "bare streams on uvloop", "uvloop", REFERENCE,
        _py("bench.reference.asyncio_streams", "--loop", "uvloop"),
        "bench.reference.asyncio_streams",
    ),
    Contestant("c_epoll", "C epoll (ceiling)", "c", CEILING, (str(C_BINARY), "{host}", "{port}")),
)  # fmt: skip


def module_present(module: str) -> bool:
    """True when ``python -m module`` would find something to run (package or module)."""
    try:
        spec = find_spec(module)
    except ModuleNotFoundError:
        return False
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package: needs a __main__
        return find_spec(module + ".__main__") is not None
    return True


def build_c_server(binary: Path = C_BINARY) -> tuple[Path | None, str]:
    """Compile the C reference with the system compiler ($CC, else cc/gcc/clang).

    Returns (path, "") on success, reusing a binary newer than its source, or
    (None, reason) when there is no compiler or compilation fails; never raises
    for those, so the run goes on without the ceiling.
    """
    if binary.exists() and binary.stat().st_mtime >= C_SOURCE.stat().st_mtime:
        return binary, ""
    candidates = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    compiler = next((c for c in candidates if shutil.which(c)), None)
    if compiler is None:
        return None, "no C compiler found (tried $CC, cc, gcc, clang)"
    binary.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [compiler, *C_FLAGS, "-o", str(binary), str(C_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["?"])[0]
        return None, f"{compiler} failed ({first})"
    return binary, ""


@dataclass(frozen=True)
class Placement:
    """Which CPUs the servers and the clients get (None: not pinned)."""

    server: frozenset[int] | None
    client: frozenset[int] | None
    note: str


def choose_placement(
    server: frozenset[int] | None = None, client: frozenset[int] | None = None
) -> Placement:
    """Server on the first CPU this process may use, clients on the second, unless told otherwise.

    The CPUs come from ``os.sched_getaffinity(0)``, so a restricted mask such as
    {2, 3} gives server 2 and clients 3, never a CPU the process may not use.
    With one CPU nothing is pinned (and the note says so): server and client
    then share it, which makes CPU per request the only fair figure.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if server is not None or client is not None:
        return Placement(server, client, "CPUs given on the command line")
    if len(allowed) < 2:
        return Placement(None, None, "one CPU: server and clients share it, nothing pinned")
    return Placement(
        frozenset({allowed[0]}),
        frozenset({allowed[1]}),
        f"server pinned to CPU {allowed[0]}, clients and harness to CPU {allowed[1]}",
    )


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (no-op for None); ignores threads that exit."""
    if not cpus:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            continue


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, then SIGKILL if ``proc`` outlives ``timeout``; always reaps it; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ServerProcess:
    """A contestant running as a subprocess on a free loopback port.

    ``start()`` returns once the server echoes, or raises RuntimeError with the
    tail of its output; ``stop()`` always reaps it. Output goes to ``log_path``
    (a file, so a chatty server can never block on a pipe).
    """

    def __init__(self, contestant: Contestant, log_path: Path, cpus: frozenset[int] | None):
        self.contestant = contestant
        self.log_path = log_path
        self.cpus = cpus
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the process (without waiting for readiness) and pin it."""
        self.port = free_port(self.host)
        argv = [a.format(host=self.host, port=self.port) for a in self.contestant.argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        pin(self.proc.pid, self.cpus)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll the echo probe until it answers; RuntimeError if the process exits or times out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"exited with status {self.proc.returncode} during start-up: {self.tail()}"
                )
            try:
                probe_echo(self.host, self.port, timeout=1.0)
                break
            except ProbeError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not echoing after {timeout:.0f}s: {self.tail()}") from None
                time.sleep(POLL_INTERVAL_S)
        pin(self.proc.pid, self.cpus)  # again: threads started during start-up
        log_event(
            logger, "server_ready", key=self.contestant.key, pid=self.proc.pid, port=self.port
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_ticks(self) -> int:
        assert self.proc is not None
        return cpu_ticks(self.proc.pid)

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`; returns the exit status.

        None if the process was never started; always reaps it.
        """
        if self.proc is None:
            return None
        return stop_process(self.proc)
