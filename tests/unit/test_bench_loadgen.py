"""The load generator and reference servers, against real processes on loopback.

Behaviour only (counts, byte checks, error reporting, CPU sampling): speed belongs
to ``make bench``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from bench.loadgen import LoadSpec, run_load
from bench.procstat import cpu_ticks, descendants
from bench.servers import C_SOURCE, build_c_server
from services.common.ports import free_port
from tests.helpers import ServiceProcess, wait_until

# Short windows: enough for hundreds of round trips, little CPU for a shared CI box.
WARMUP_S = 0.05
DURATION_S = 0.3


@pytest.fixture
def protocol_server():
    server = ServiceProcess("bench.reference.asyncio_protocol", ["--loop", "asyncio"]).start()
    yield server
    server.cleanup()


def test_ping_pong_counts_requests_latencies_and_server_cpu(protocol_server):
    addr, pid = protocol_server.address, protocol_server.proc.pid
    spec = LoadSpec(addr.host, addr.port, 1024, 3, WARMUP_S, DURATION_S, max_processes=2)
    assert spec.groups() == [2, 1]
    result = run_load(spec, {"server": lambda: cpu_ticks(pid)})
    assert result.ok, result.errors
    assert result.requests > 0 and result.histogram.total == result.requests
    assert result.window_s == pytest.approx(DURATION_S)
    assert result.req_per_s == pytest.approx(result.requests / DURATION_S)
    assert 0 < result.histogram.percentile(50) <= result.histogram.percentile(99.9)
    assert result.cpu_ticks["server"] >= 0
    assert protocol_server.proc.poll() is None  # clients closed cleanly, server still up


def test_large_messages_are_echoed_in_full(protocol_server):
    addr = protocol_server.address
    result = run_load(LoadSpec(addr.host, addr.port, 100 * 1024, 2, WARMUP_S, DURATION_S))
    assert result.ok, result.errors
    assert result.mib_per_s == pytest.approx(result.req_per_s * 100 / 1024)


def test_unreachable_server_is_reported_not_raised():
    port = free_port()  # nobody listens here
    result = run_load(LoadSpec("127.0.0.1", port, 1024, 2, WARMUP_S, DURATION_S))
    assert not result.ok
    assert any("ConnectionRefusedError" in e for e in result.errors)


WRONG_ECHO = textwrap.dedent(
    """
    import socket, sys
    srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    srv.settimeout(20)
    conn, _ = srv.accept()
    conn.settimeout(20)
    while data := conn.recv(65536):
        conn.sendall(bytes(len(data)))  # zeros, not the bytes received
    """
)


def test_wrong_bytes_are_detected():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", WRONG_ECHO, str(port)])
    try:
        # Wait for LISTEN without connecting: the server accepts one connection only.
        wait_until(lambda: _listening(port), 10, "wrong-echo server")
        result = run_load(LoadSpec("127.0.0.1", port, 512, 1, WARMUP_S, DURATION_S))
        assert not result.ok
        assert any("echoed bytes differ" in e for e in result.errors)
    finally:
        proc.kill()
        proc.wait()


def _listening(port):
    """True when /proc/net/tcp shows a socket in LISTEN state (0A) on ``port``."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return any(r[1].endswith(f":{port:04X}") and r[3] == "0A" for r in rows)


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("bench.reference.trio_tutorial", []),
        ("bench.reference.asyncio_protocol", ["--loop", "uvloop"]),
        ("bench.reference.asyncio_streams", ["--loop", "asyncio"]),
    ],
)
def test_reference_servers_echo_under_load(module, args):
    server = ServiceProcess(module, args).start()
    try:
        addr = server.address
        result = run_load(LoadSpec(addr.host, addr.port, 10 * 1024, 2, WARMUP_S, 0.2))
        assert result.ok, result.errors
    finally:
        server.cleanup()


def test_c_ceiling_builds_echoes_and_half_closes(tmp_path):
    binary, why = build_c_server(tmp_path / "epoll_echo")
    if binary is None:
        if os.environ.get("CI"):  # CI installs a compiler: a missing ceiling is a failure there
            pytest.fail(f"CI is set but the C reference did not build: {why}")
        pytest.skip(why)
    assert C_SOURCE.exists()
    port = free_port()
    proc = subprocess.Popen([str(binary), "127.0.0.1", str(port)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"listening")
        result = run_load(LoadSpec("127.0.0.1", port, 100 * 1024, 2, WARMUP_S, 0.2))
        assert result.ok, result.errors
        payload = bytes(range(256)) * 1000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # half-close: everything must still come back
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
        assert received == payload
        assert descendants(proc.pid)[0] == proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
