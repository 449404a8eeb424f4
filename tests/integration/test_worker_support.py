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
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

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


def closed_port_address() -> str:
    """A loopback address where (a moment ago) nothing listened."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...), from /proc."""
    children: dict[int, set[int]] = defaultdict(set)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # a zombie has already exited
            children[int(fields[1])].add(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


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
