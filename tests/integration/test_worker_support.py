"""Shared helpers for the unsync worker tests (no tests here).

The worker runs as a real subprocess (``tests.helpers.ServiceProcess``) or, with
``LAB_TARGET=compose``, is the container published on 127.0.0.1:8080 (override
with ``LAB_WORKER_ADDR=host:port``).
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procstat import descendants
from tests.helpers import Address, ServiceProcess, target

# The worker's contract (DESIGN.md): how it is started and how readiness is polled.
MODULE = "services.unsync_worker"
HEALTH_PATH = "/healthz"

# Long enough for the slowest job a test sends on a loaded 2-core machine.
HTTP_TIMEOUT_S = 30.0

# Bounds for waiting on processes to go away after a shutdown (polled, not slept).
EXIT_TIMEOUT_S = 20.0
ORPHAN_TIMEOUT_S = 10.0

# echo server: bytes read per recv; the probes send at most 64 KiB at a time.
ECHO_CHUNK = 64 * 1024

# ReleaseServer: how often its accept loop checks whether to stop (bounds its exit).
ACCEPT_POLL_S = 0.1

# Why a test is skipped against the compose stack (its container has default settings).
NEEDS_LOCAL = "needs a custom-configured local worker process (LAB_TARGET=compose)"


def compose() -> bool:
    return target() == "compose"


def compose_address() -> Address:
    """The compose stack's worker: LAB_WORKER_ADDR=host:port, default 127.0.0.1:8080."""
    host, _, port = os.environ.get("LAB_WORKER_ADDR", "127.0.0.1:8080").rpartition(":")
    return Address(host or "127.0.0.1", int(port))


def client(address: Address) -> httpx.Client:
    return httpx.Client(base_url=f"http://{address}", timeout=HTTP_TIMEOUT_S)


def start_worker(env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> ServiceProcess:
    """A worker subprocess on a free loopback port, healthy when this returns."""
    return ServiceProcess(module=MODULE, args=args, health_path=HEALTH_PATH, env=env or {}).start()


def job(
    http: httpx.Client, task: str, args: dict[str, Any] | None = None, **fields: Any
) -> httpx.Response:
    return http.post("/jobs", json={"task": task, "args": args or {}, **fields})


def metric(http: httpx.Client, name: str) -> float:
    """The value of an unlabelled metric from GET /metrics."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(HTTP_TIMEOUT_S)  # bounds a stalled peer
        while chunk := sock.recv(ECHO_CHUNK):
            sock.sendall(chunk)


class EchoServer:
    """A plain threaded TCP echo server on 127.0.0.1 (a stand-in for trio/uvloop echo)."""

    def __init__(self) -> None:
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class ReleaseServer:
    """A loopback listener for the test-only ``hold`` task: jobs wait until :meth:`release`.

    Each hold job connects here and waits for the connection to close. Until
    :meth:`release` every connection is held open; after it, held and new ones
    are closed at once. Leaving the ``with`` block releases too, so no job is
    left waiting on a failed test.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(ACCEPT_POLL_S)
        self._lock = threading.Lock()
        self._released = False
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="release-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def hold_job(self, timeout_s: float = 25.0) -> dict[str, Any]:
        """A POST /jobs body that holds a consumer until :meth:`release` (or its timeout)."""
        return {
            "task": "hold",
            "args": {"port": self.port, "max_ms": int(timeout_s * 1000)},
            "mode": "async",
            "timeout_s": timeout_s,
        }

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._released:
                    conn.close()
                else:
                    self._held.append(conn)

    def release(self) -> None:
        with self._lock:
            self._released = True
            for conn in self._held:
                conn.close()
            self._held.clear()

    def __enter__(self) -> ReleaseServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def children_of(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...), zombies left out."""
    return alive(set(descendants(pid)) - {pid})


def alive(pids: set[int]) -> set[int]:
    """The pids in ``pids`` that still exist and are not zombies."""
    result = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            result.add(pid)
    return result


def skip_in_compose() -> None:
    if compose():
        pytest.skip(NEEDS_LOCAL)
