"""asyncio/uvloop echo server: its log contract, on both loops.

The shared echo suite (test_echo.py) covers the wire contract of every echo
server, descriptor exhaustion included; this module checks what an operator
reads: a start line naming the loop, one line per connection saying how it
ended (never one per message), and a shutdown summary.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator

import pytest

from tests.helpers import ServiceProcess, target

# These tests read a local server process's log.
pytestmark = pytest.mark.skipif(
    target() != "local", reason="needs a local server process (LAB_TARGET=local)"
)

LOOPS = ["uvloop", "asyncio"]

# Ceiling on one client operation on a loaded CI machine.
ECHO_TIMEOUT_S = 10.0


@pytest.fixture(params=LOOPS)
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# Drain window of the server under test: short, since one test waits it out.
DRAIN_S = 0.5


@pytest.fixture
def server(loop_name: str) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        "services.uvloop_echo",
        args=["--loop", loop_name, "--idle-timeout-s", "0", "--drain-s", str(DRAIN_S)],
    )
    svc.start()
    try:
        yield svc
    finally:
        svc.cleanup()


def test_logs_one_line_per_connection_not_per_message(
    server: ServiceProcess, loop_name: str
) -> None:
    messages, size = 10, 100  # bytes_in=1000 marks our connections among probe ones
    for _ in range(3):
        with socket.create_connection(
            (server.address.host, server.address.port), timeout=ECHO_TIMEOUT_S
        ) as sock:
            for _ in range(messages):
                sock.sendall(b"m" * size)
                received = b""
                while len(received) < size:
                    chunk = sock.recv(size - len(received))
                    assert chunk
                    received += chunk
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1) == b""  # the server's EOF after the echo

    assert server.stop() == 0
    lines = server.output().splitlines()
    ours = [line for line in lines if "event=connection" in line and "bytes_in=1000 " in line]
    assert len(ours) == 3, lines
    assert all("bytes_out=1000 " in line and line.endswith("end=eof") for line in ours)
    assert len(lines) < 12, "more than a handful of lines: something logs per message"
    (start,) = [line for line in lines if "event=start" in line]
    assert f"loop={loop_name} loop_version=" in start and " python=" in start
    assert any("event=stopped signal=SIGTERM" in line for line in lines)


def test_connection_open_after_the_drain_is_cut_and_logged(server: ServiceProcess) -> None:
    with socket.create_connection(
        (server.address.host, server.address.port), timeout=ECHO_TIMEOUT_S
    ) as sock:
        sock.sendall(b"12345")
        assert sock.recv(5) == b"12345"
        server.signal(signal.SIGTERM)
        assert server.wait(DRAIN_S + ECHO_TIMEOUT_S) == 0
        with contextlib.suppress(ConnectionResetError):  # aborted: the drain is over
            assert sock.recv(1) == b""
    lines = server.output().splitlines()
    (cut,) = [line for line in lines if "bytes_in=5 " in line]
    assert "bytes_out=5 " in cut and cut.endswith("end=shutdown")
    assert any("event=stopping signal=SIGTERM open=1" in line for line in lines)
    assert any("event=stopped signal=SIGTERM" in line and " cut=1 " in line for line in lines)
