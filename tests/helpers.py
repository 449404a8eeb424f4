"""Helpers for tests that run the services as real processes.

Tests talk to a service through an address. Locally (``make test``) a fixture
starts the service as a subprocess on a loopback port; against the
compose stack (``LAB_TARGET=compose``, ``make integration-test``) the same tests
use the containers' published ports.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.common.ports import free_port
from services.common.probe import ProbeError, probe_echo, probe_http

REPO_ROOT = Path(__file__).resolve().parent.parent

# Generous: a cold interpreter importing uvloop or FastAPI on a loaded 2-core CI
# machine can take a few seconds; readiness is polled, so a fast start is fast.
START_TIMEOUT_S = 30.0

# Pause between readiness polls: short, because it only bounds the wait.
POLL_INTERVAL_S = 0.05

# Services that log the port they bound at start, by module: the event that carries
# ``port=``. ServiceProcess starts these with ``--port 0`` and reads the port back,
# so no other process can take it between choosing and binding (free_port's race).
# Anything else (the benchmark's reference servers) still gets a free_port().
BOUND_PORT_EVENTS = {
    "services.trio_echo": "start",
    "services.uvloop_echo": "start",
    "services.unsync_worker": "listening",
}


def target() -> str:
    """``local`` (default): start subprocesses; ``compose``: use the running stack."""
    value = os.environ.get("LAB_TARGET", "local").strip().lower()
    if value not in ("local", "compose"):
        raise RuntimeError(f"LAB_TARGET must be local or compose, not {value!r}")
    return value


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it returns true; raise AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


@dataclass
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``host:port`` (as in LAB_*_ADDR variables) to an Address; ValueError if malformed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, not {text!r}")
    return Address(host.strip("[]"), int(port))


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` from /proc (Linux), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fd_count(pid: int) -> int:
    """How many file descriptors process ``pid`` has open right now (Linux /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# One ``key=value`` field of a log line (services.common.logs); quoted values may
# contain spaces and escaped quotes.
_LOG_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_events(output: str) -> list[dict[str, str]]:
    """Every ``event=...`` log line in ``output`` as a dict of its key=value fields, in order."""
    events = []
    for line in output.splitlines():
        fields = dict(_LOG_FIELD.findall(line))
        if "event" in fields:
            events.append(fields)
    return events


@dataclass
class ServiceProcess:
    """A service started as ``python -m <module> --host 127.0.0.1 --port <port> <args>``.

    For the modules in :data:`BOUND_PORT_EVENTS` the port is 0 and
    :attr:`address` is read from the service's start log line; for any other,
    a :func:`free_port`. Its stdout and stderr go to a temporary file (read with
    :meth:`output`), so a chatty service can never block on a full pipe.
    ``rlimit_nofile`` lowers the process's soft descriptor limit right after it
    is spawned (while the interpreter is still starting), for tests that
    exhaust descriptors.
    """

    module: str
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    health_path: str | None = None  # HTTP path to poll; None: echo probe
    rlimit_nofile: int | None = None  # soft RLIMIT_NOFILE for the process; None: inherit
    address: Address = field(init=False)
    proc: subprocess.Popen[bytes] = field(init=False)
    _log: Path = field(init=False)

    def start(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Spawn the service and return once it answers its probe; stops it on any failure.

        AssertionError (with the service's output) if it exits during start-up
        or is not ready within ``timeout``.
        """
        port_event = BOUND_PORT_EVENTS.get(self.module)
        self.address = Address("127.0.0.1", 0 if port_event else free_port())
        fd, name = tempfile.mkstemp(prefix=self.module.replace(".", "_") + "-", suffix=".log")
        self._log = Path(name)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    self.module,
                    "--host",
                    self.address.host,
                    "--port",
                    str(self.address.port),
                    *self.args,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            if self.rlimit_nofile is not None:
                _, hard = resource.prlimit(self.proc.pid, resource.RLIMIT_NOFILE)
                resource.prlimit(self.proc.pid, resource.RLIMIT_NOFILE, (self.rlimit_nofile, hard))
            deadline = time.monotonic() + timeout
            if port_event is not None:
                wait_until(
                    lambda: self._read_bound_port(port_event),
                    timeout,
                    f"{self.module} to log event={port_event} with its port",
                )
            wait_until(
                self._ready,
                max(0.0, deadline - time.monotonic()),
                f"{self.module} on {self.address}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _check_running(self) -> None:
        if self.proc.poll() is not None:
            code = self.proc.returncode
            raise AssertionError(f"{self.module} exited {code} during start-up:\n{self.output()}")

    def _read_bound_port(self, event: str) -> bool:
        """True once the log has ``event=<event> ... port=N``; sets :attr:`address` to it."""
        self._check_running()
        for fields in parse_events(self.output()):
            if fields["event"] == event and fields.get("port", "").isdigit():
                self.address = Address(self.address.host, int(fields["port"]))
                return True
        return False

    def _ready(self) -> bool:
        self._check_running()
        try:
            if self.health_path is None:
                probe_echo(self.address.host, self.address.port, timeout=1.0)
            else:
                probe_http(self.address.host, self.address.port, self.health_path, timeout=1.0)
        except ProbeError:
            return False
        return True

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self._log.read_text(errors="replace")

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if the process outlives ``timeout``; always reaps it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)


def docker_available() -> bool:
    """True when a Docker engine answers (not merely when the client is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
