"""Container-level checks of the compose stack (``make integration-test``).

They run against the stack ``make up`` started (``LAB_TARGET=compose``), find its
containers by the labels compose sets (project ``$COMPOSE_PROJECT_NAME``, as the
Makefile exports it), talk to the services only through the ports published on
127.0.0.1, and leave every container running and healthy for the next test: what
a test stops it starts again, and what it kills comes back by itself.

- ``docker stop`` drains: exit status 0 (not 137) inside the grace period, and a
  client in mid-stream gets all its data back, or an exact prefix of it, then EOF;
- a crashed service comes back through the restart policy and turns healthy;
- every process runs as a non-root user on a read-only root filesystem;
- under a low ``nofile`` limit, running out of descriptors does not kill a server.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from services.common.probe import ProbeError, probe_echo, probe_http
from tests.helpers import Address, docker_available, target, wait_until

# Asked once; `docker info` only runs when the stack is the target.
_COMPOSE = target() == "compose"

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        not _COMPOSE, reason="runs against the compose stack: make integration-test"
    ),
    pytest.mark.skipif(
        _COMPOSE and not docker_available(), reason="no Docker engine answers (docker info)"
    ),
]

# Same default as the Makefile, for a stack started with `make up`.
PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "asynclab")

# compose.yaml's stop_grace_period: docker stop sends SIGKILL after this.
GRACE_S = 15.0

# The services' drain window (services/common/shutdown.py DEFAULT_DRAIN_S).
DRAIN_S = 5.0

# From (re)start to healthy: a first check one 5 s interval in, retried a few
# times on a loaded 2-core machine; the worker starts slowest.
HEALTHY_TIMEOUT_S = 60.0

# Bound on any single docker CLI call; they take well under a second normally.
DOCKER_TIMEOUT_S = 60.0

# Bound on one socket operation in these tests; loopback answers in microseconds.
SOCKET_TIMEOUT_S = 10.0

# The nofile limit for the exhaustion test: small enough to run out after a few
# dozen connections, large enough for the interpreter's own descriptors.
LOW_NOFILE = 64

# Connections opened to exhaust LOW_NOFILE descriptors: well past it, and bounded.
EXHAUST_CONNECTIONS = 3 * LOW_NOFILE


@dataclass(frozen=True)
class Service:
    name: str  # compose service name
    port: int  # published on 127.0.0.1
    health_path: str | None  # HTTP health path; None for the echo probe

    def healthy(self) -> bool:
        """One probe through the published port, as the healthcheck does inside."""
        try:
            if self.health_path is None:
                probe_echo("127.0.0.1", self.port, timeout=2.0)
            else:
                probe_http("127.0.0.1", self.port, self.health_path, timeout=2.0)
        except ProbeError:
            return False
        return True


TRIO = Service("trio-echo", 9001, None)
UVLOOP = Service("uvloop-echo", 9002, None)
WORKER = Service("unsync-worker", 8080, "/healthz")
ALL = [TRIO, UVLOOP, WORKER]
ECHO = [TRIO, UVLOOP]


def docker(*args: str, check: bool = True) -> str:
    """Run the docker CLI; returns stdout. Raises AssertionError with stderr on failure."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout.strip()


def container_of(service: Service) -> str:
    ids = docker(
        "ps",
        "-aq",
        "--filter",
        f"label=com.docker.compose.project={PROJECT}",
        "--filter",
        f"label=com.docker.compose.service={service.name}",
    ).split()
    assert len(ids) == 1, f"expected one {service.name} container of project {PROJECT}: {ids}"
    return ids[0]


def state(container: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(docker("inspect", "-f", "{{json .State}}", container))
    return result


def health(container: str) -> str:
    health_state = state(container).get("Health")
    return str(health_state.get("Status")) if isinstance(health_state, dict) else "none"


def wait_healthy(service: Service, container: str) -> None:
    """Until docker calls the container healthy and the published port answers."""
    wait_until(
        lambda: health(container) == "healthy" and service.healthy(),
        HEALTHY_TIMEOUT_S,
        f"{service.name} to be healthy",
    )


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from sock, or fewer if the peer closes first."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def recv_until_eof(sock: socket.socket) -> bytes:
    """Everything until EOF (bounded by the socket timeout per receive)."""
    chunks = bytearray()
    while chunk := sock.recv(65536):
        chunks += chunk
    return bytes(chunks)


def echo_connection(port: int, payload: bytes) -> socket.socket:
    """A connection whose first ``payload`` has come back: established end to end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return sock


def post_json(port: int, path: str, body: dict[str, object], timeout: float) -> dict[str, object]:
    """POST a JSON body with the standard library; returns the decoded 2xx response."""

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    assert 200 <= response.status < 300, f"HTTP {response.status}: {data[:200]!r}"
    result: dict[str, object] = json.loads(data)
    return result


def worker_jobs_running() -> float:
    """Jobs the worker is running now, from its Prometheus metrics (0 if unknown)."""

    conn = http.client.HTTPConnection("127.0.0.1", WORKER.port, timeout=SOCKET_TIMEOUT_S)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("worker_jobs_running"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(params=ALL, ids=lambda s: s.name)
def service(request: pytest.FixtureRequest) -> Service:
    svc: Service = request.param
    return svc


@pytest.fixture(params=ECHO, ids=lambda s: s.name)
def echo_service(request: pytest.FixtureRequest) -> Service:
    svc: Service = request.param
    return svc


@pytest.fixture
def running(service: Service) -> Iterator[str]:
    """The service's container, healthy before the test and brought back after it."""
    container = container_of(service)
    wait_healthy(service, container)
    yield container
    if not state(container).get("Running"):
        docker("start", container)
    wait_healthy(service, container)


# --- who and where the services run -----------------------------------------


def test_runs_as_non_root_on_a_read_only_root(service: Service, running: str) -> None:
    host_config = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", running))
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
    assert host_config["Memory"] > 0
    assert host_config["PidsLimit"] > 0

    # Every process of the container, as the host sees it (user ids are not remapped).
    rows = docker("top", running, "-eo", "pid,uid").splitlines()[1:]
    uids = [row.split()[1] for row in rows]
    assert uids, "docker top listed no processes"
    assert "0" not in uids, f"a process of {service.name} runs as root: {uids}"
    assert docker("exec", running, "id", "-u") != "0"

    # The code, the venv and / are not writable; /tmp is the one tmpfs.
    for path in ("/app/services/x", "/opt/venv/x", "/x"):
        proc = subprocess.run(
            ["docker", "exec", running, "touch", path],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT_S,
        )
        assert proc.returncode != 0, f"{service.name} could write {path}"
    docker("exec", running, "touch", "/tmp/x")


def test_the_worker_reaches_both_echo_services_by_name() -> None:
    """depends_on + the stack's network: echo_probe from inside the worker works."""
    wait_healthy(WORKER, container_of(WORKER))
    response = post_json(
        WORKER.port,
        "/jobs",
        {"task": "echo_probe", "args": {"target": "both", "count": 3, "size": 64}},
        timeout=SOCKET_TIMEOUT_S,
    )
    result = response["result"]
    assert isinstance(result, dict)
    addresses = {t["address"]: t["count"] for t in result["targets"]}
    assert addresses == {"trio-echo:9001": 3, "uvloop-echo:9002": 3}


# --- docker stop drains -----------------------------------------------------


class Stopper:
    """``docker stop`` in a background process, timed."""

    def __init__(self, container: str) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["docker", "stop", container], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def wait(self) -> float:
        """Seconds docker stop took; fails the test if it failed or outlived the grace."""
        _, err = self.proc.communicate(timeout=GRACE_S + DOCKER_TIMEOUT_S)
        elapsed = time.monotonic() - self.started
        assert self.proc.returncode == 0, f"docker stop failed: {err!r}"
        return elapsed


def test_docker_stop_drains_echo_streams_and_exits_0(echo_service: Service) -> None:
    container = container_of(echo_service)
    wait_healthy(echo_service, container)
    before, during, last = b"before stop|" * 100, b"during the drain|" * 1000, b"still here"
    finishing = echo_connection(echo_service.port, before)  # half-closes in the drain
    lingering = echo_connection(echo_service.port, before)  # outlives the drain
    stopper = Stopper(container)
    try:
        # The server stops accepting at once: when a new client is no longer echoed,
        # SIGTERM has arrived and the drain window is running.
        wait_until(lambda: not echo_service.healthy(), GRACE_S, "the server to stop accepting")

        # In the drain window, open connections are still served in full: all the
        # data back, then EOF after the client's own EOF ...
        finishing.sendall(during)
        assert recv_exactly(finishing, len(during)) == during
        finishing.shutdown(socket.SHUT_WR)
        assert recv_until_eof(finishing) == b"", "bytes after the echo"

        # ... and when the window closes, the one still open gets EOF, its echo an
        # exact prefix of its stream (here all of it: it left nothing unread).
        lingering.sendall(last)
        echoed = before + recv_exactly(lingering, len(last)) + recv_until_eof(lingering)
        assert (before + last).startswith(echoed), "the echo is not a prefix of the stream"
        assert echoed == before + last
    finally:
        finishing.close()
        lingering.close()
        elapsed = stopper.wait()
        container_state = state(container)
        docker("start", container)
        wait_healthy(echo_service, container)
    assert container_state["ExitCode"] == 0, f"exit code {container_state['ExitCode']}"
    assert not container_state["OOMKilled"]
    assert elapsed < GRACE_S, f"docker stop took {elapsed:.1f} s (grace {GRACE_S} s)"
    # A coarse bound: the lingering connection kept the server up for its drain window.
    assert elapsed >= DRAIN_S * 0.8, f"stopped after {elapsed:.1f} s: did it drain?"


# A job long enough to be in flight when the stop arrives, short enough for the drain.
JOB_MS = 2000


def test_docker_stop_lets_the_worker_finish_a_running_job_and_exit_0() -> None:
    container = container_of(WORKER)
    wait_healthy(WORKER, container)
    outcome: dict[str, object] = {}

    def run_job() -> None:
        try:
            outcome["response"] = post_json(
                WORKER.port,
                "/jobs",
                {"task": "sleep", "args": {"ms": JOB_MS}, "mode": "async"},
                timeout=GRACE_S + SOCKET_TIMEOUT_S,
            )
        except (OSError, AssertionError) as exc:
            outcome["error"] = exc

    job = threading.Thread(target=run_job, daemon=True)
    job.start()
    stopper: Stopper | None = None
    try:
        # In flight once the worker has accepted it: its metrics say so.
        wait_until(lambda: worker_jobs_running() > 0, SOCKET_TIMEOUT_S, "the job to start")
        stopper = Stopper(container)
        job.join(GRACE_S + SOCKET_TIMEOUT_S)
        assert not job.is_alive(), "the job's request never finished"
    finally:
        elapsed = stopper.wait() if stopper else 0.0
        container_state = state(container)
        docker("start", container)
        wait_healthy(WORKER, container)
    assert "error" not in outcome, f"the in-flight job failed: {outcome.get('error')}"
    response = outcome["response"]
    assert isinstance(response, dict) and response["task"] == "sleep", response
    assert response["mode"] == "async", response
    assert container_state["ExitCode"] == 0, f"exit code {container_state['ExitCode']}"
    assert elapsed < GRACE_S, f"docker stop took {elapsed:.1f} s (grace {GRACE_S} s)"


# --- crashes come back ------------------------------------------------------

# Run inside the container: SIGKILL the service, i.e. the children of PID 1 (tini).
# That is a crash (or an OOM kill) as the engine sees it; `docker kill` would not do:
# the engine counts it as a manual stop and does not apply the restart policy.
KILL_SERVICE = """
import os, signal
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        continue
    if ppid == 1:
        os.kill(int(pid), signal.SIGKILL)
"""


def test_a_crashed_service_is_restarted_and_turns_healthy(service: Service, running: str) -> None:
    restarts = int(json.loads(docker("inspect", "-f", "{{json .RestartCount}}", running)))
    # The container dies with its service, maybe before this exec reports (then 137).
    docker("exec", running, "python", "-c", KILL_SERVICE, check=False)
    wait_until(
        lambda: int(docker("inspect", "-f", "{{.RestartCount}}", running)) > restarts,
        HEALTHY_TIMEOUT_S,
        f"{service.name} to be restarted",
    )
    wait_healthy(service, running)


# --- descriptor exhaustion --------------------------------------------------


@dataclass(frozen=True)
class LowNofileServer:
    container: str
    port: int


# Run inside the container: how many descriptors the service (PID 1's child) holds.
COUNT_FDS = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    with open(f"/proc/{pid}/stat") as f:
        if int(f.read().rsplit(")", 1)[1].split()[1]) == 1:
            print(len(os.listdir(f"/proc/{pid}/fd")))
"""


def server_fds(server: LowNofileServer) -> int:
    return int(docker("exec", server.container, "python", "-c", COUNT_FDS) or 0)


@pytest.fixture
def low_nofile_server(echo_service: Service) -> Iterator[LowNofileServer]:
    """The service's image run alone with nofile=LOW_NOFILE, on a free loopback port."""
    image = docker("inspect", "-f", "{{.Config.Image}}", container_of(echo_service))
    name = f"lab-nofile-{echo_service.name}-{uuid.uuid4().hex[:8]}"
    docker(
        "run",
        "--detach",
        "--name",
        name,
        # So that `make down` removes it too, should this test be interrupted.
        "--label",
        f"com.docker.compose.project={PROJECT}",
        "--init",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--ulimit",
        f"nofile={LOW_NOFILE}:{LOW_NOFILE}",
        "--publish",
        f"127.0.0.1::{echo_service.port}",
        image,
    )
    try:
        host_port = docker("port", name, f"{echo_service.port}/tcp").splitlines()[0]
        address = Address("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
        wait_until(
            lambda: Service(name, address.port, None).healthy(),
            HEALTHY_TIMEOUT_S,
            f"{name} to echo",
        )
        yield LowNofileServer(name, address.port)
        assert docker("inspect", "-f", "{{.State.Running}}", name) == "true"
        logs = docker("logs", name)
        assert "Traceback" not in logs, logs[-2000:]
    finally:
        docker("rm", "--force", name, check=False)


def test_running_out_of_descriptors_does_not_kill_an_echo_server(
    low_nofile_server: LowNofileServer,
) -> None:
    port = low_nofile_server.port
    held: list[socket.socket] = []
    try:
        # Through the engine's port proxy every connect succeeds; past the server's
        # limit they wait unaccepted, so the last ones do not all get an echo.
        for i in range(EXHAUST_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
            held.append(sock)
            sock.sendall(b"%d|" % i)
        assert recv_exactly(held[0], 2) == b"0|", "the first connection was not echoed"
        # The server really ran out: it holds (nearly) all the descriptors it may.
        wait_until(
            lambda: server_fds(low_nofile_server) >= LOW_NOFILE - 1,
            SOCKET_TIMEOUT_S,
            f"the server to use up its {LOW_NOFILE} descriptors",
        )
        # While out of descriptors, a connection it has keeps being served.
        held[0].sendall(b"still here")
        assert recv_exactly(held[0], 10) == b"still here"
    finally:
        for sock in held:
            sock.close()
    # Descriptors free again: a fresh client is echoed (the server backs off accept
    # for a moment after EMFILE, hence the wait).
    wait_until(
        lambda: Service("nofile", port, None).healthy(),
        HEALTHY_TIMEOUT_S,
        "a fresh client to be echoed after the exhaustion",
    )
