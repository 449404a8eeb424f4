"""Endpoints of the compose stack, for ``--target compose`` (``BENCH_TARGET=compose``).

For each published echo port the harness benchmarks two paths to the same
container: the published port on 127.0.0.1, which Docker serves through its
userland proxy (``docker-proxy``, one extra process copying every byte both
ways), and the container's own bridge IP, which skips the proxy. Server CPU is
read from host /proc for the container's main process and its children (the
container's PID from ``docker inspect -f {{.State.Pid}}``); the proxy's CPU is
read from its own process, so the report can say what the proxy costs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import descendants, tree_cpu_ticks

# docker CLI calls are quick; anything slower means the engine is stuck.
DOCKER_TIMEOUT_S = 20.0


class ComposeError(RuntimeError):
    """The stack is not up, or a port is not published by a running container."""


@dataclass
class ComposeEndpoint:
    """A container publishing ``host_port``: its ids, PIDs and both ways to reach it."""

    host_port: int
    container: str
    name: str
    main_pid: int
    server_pids: list[int]
    container_ip: str | None
    container_port: int
    proxy_pids: list[int] = field(default_factory=list)

    def server_ticks(self) -> int:
        return tree_cpu_ticks(self.server_pids)

    def proxy_ticks(self) -> int:
        return tree_cpu_ticks(self.proxy_pids)


def _docker(*args: str) -> str:
    try:
        proc = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComposeError(f"docker {' '.join(args)}: {exc}") from None
    if proc.returncode != 0:
        raise ComposeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def proxy_pids_for(host_port: int) -> list[int]:
    """PIDs of docker-proxy processes forwarding ``host_port`` (empty: no userland proxy)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"docker-proxy"):
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg.lstrip(b"-") == b"host-port" and argv[i + 1] == str(host_port).encode():
                found.append(int(entry.name))
    return found


def discover(host_port: int) -> ComposeEndpoint:
    """Find the running container that publishes ``host_port``; ComposeError if none."""
    ids = _docker("ps", "-q", "--filter", f"publish={host_port}").split()
    if not ids:
        raise ComposeError(f"no running container publishes port {host_port} (make up?)")
    cid = ids[0]
    info = _docker(
        "inspect",
        "-f",
        "{{.Name}}|{{.State.Pid}}|{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        cid,
    )
    name, pid_text, ips = info.split("|", 2)
    main_pid = int(pid_text)
    if main_pid <= 0:
        raise ComposeError(f"container {name} publishing {host_port} is not running")
    container_port = host_port
    for line in _docker("port", cid).splitlines():  # "9001/tcp -> 127.0.0.1:9001"
        inner, _, outer = line.partition(" -> ")
        if outer.rsplit(":", 1)[-1] == str(host_port):
            container_port = int(inner.split("/")[0])
            break
    ip_list = ips.split()
    return ComposeEndpoint(
        host_port=host_port,
        container=cid,
        name=name.lstrip("/"),
        main_pid=main_pid,
        server_pids=descendants(main_pid),
        container_ip=ip_list[0] if ip_list else None,
        container_port=container_port,
        proxy_pids=proxy_pids_for(host_port),
    )
