"""asyncio/uvloop echo server: settings, flow control and listener recovery.

The server runs in-process here (real sockets on 127.0.0.1, on each loop) so the
tests can look at its state: whether it stopped reading, how much it buffered,
whether it re-created its listener.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from services.common import config
from services.uvloop_echo.server import HIGH_WATER, EchoServer
from services.uvloop_echo.settings import UvloopEchoSettings, load
from tests.helpers import REPO_ROOT

LOOPS = ["uvloop", "asyncio"]

# The most either loop reads in one go (asyncio: 256 KiB; uvloop: 256,000 bytes), which
# is how far past the high-water mark one read can push the write buffer before we pause.
MAX_READ = 256 * 1024

# Client chunk size and the most chunks a never-reading client sends: 64 MiB, far
# more than the kernel buffers on both ends hold, so the sender is sure to stall.
CHUNK = 64 * 1024
MAX_CHUNKS = 1024

# A send that makes no progress for this long means the server stopped reading.
STALL_S = 0.5

# Upper bound for any step that waits on the server in these tests.
STEP_TIMEOUT_S = 10.0


def run_on(loop_name: str, scenario: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    if loop_name == "uvloop":
        uvloop.run(scenario(loop_name))
    else:
        asyncio.run(scenario(loop_name))


async def started(loop_name: str, **overrides: object) -> EchoServer:
    settings = UvloopEchoSettings(host="127.0.0.1", port=0, loop=loop_name, **overrides)  # type: ignore[arg-type]
    server = EchoServer(settings, loop_name)
    await server.start()
    return server


async def stopped(server: EchoServer) -> None:
    server.request_shutdown(signal.SIGTERM)
    await server.drain()


# -- settings ------------------------------------------------------------------


def test_defaults_and_environment():
    s = load([], {})
    assert (s.port, s.loop, s.host) == (9002, "uvloop", "0.0.0.0")
    s = load([], {"UVLOOP_ECHO_LOOP": "asyncio", "UVLOOP_ECHO_PORT": "9100"})
    assert (s.port, s.loop) == (9100, "asyncio")
    assert load(["--loop", "uvloop"], {"UVLOOP_ECHO_LOOP": "asyncio"}).loop == "uvloop"


def test_bad_loop_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        load(["--loop", "trio"], {})
    assert exc.value.code == config.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (
        "uvloop_echo: error: --loop / UVLOOP_ECHO_LOOP: 'trio' must be one of uvloop, "
        "asyncio (see --help)\n"
    )


def test_help_lists_every_setting_with_its_environment_variable():
    proc = subprocess.run(
        [sys.executable, "-m", "services.uvloop_echo", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for name in ("HOST", "PORT", "MAX_CONNECTIONS", "IDLE_TIMEOUT_S", "DRAIN_S", "LOOP"):
        assert f"UVLOOP_ECHO_{name}" in text


# -- flow control ----------------------------------------------------------------


@pytest.mark.parametrize("loop_name", LOOPS)
def test_client_that_never_reads_costs_bounded_memory(loop_name):
    async def scenario(loop_name: str) -> None:
        server = await started(loop_name, idle_timeout_s=0.0)
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("127.0.0.1", server.port))
            sent = 0
            for _ in range(MAX_CHUNKS):
                try:
                    async with asyncio.timeout(STALL_S):
                        await loop.sock_sendall(client, b"\x5a" * CHUNK)
                except TimeoutError:
                    break  # kernel buffers full: the server has stopped reading us
                sent += CHUNK
            else:
                pytest.fail(f"sent {MAX_CHUNKS * CHUNK} bytes without stalling")

            (conn,) = server.conns
            assert not conn.transport.is_reading()
            assert HIGH_WATER <= conn.transport.get_write_buffer_size() <= HIGH_WATER + MAX_READ

            # Once the client reads, the server resumes and every byte comes back.
            received = 0
            async with asyncio.timeout(STEP_TIMEOUT_S):
                while received < sent:
                    data = await loop.sock_recv(client, 1 << 20)
                    assert data, "server closed the connection"
                    assert data.count(b"\x5a") == len(data)
                    received += len(data)
        finally:
            client.close()
            await stopped(server)

    run_on(loop_name, scenario)


# -- listener recovery -----------------------------------------------------------


@pytest.mark.parametrize("loop_name", LOOPS)
def test_listener_closed_behind_our_back_is_recreated(loop_name):
    async def scenario(loop_name: str) -> None:
        # idle 0.2 s: the sweep, which also checks the listener, runs every 0.05 s.
        server = await started(loop_name, idle_timeout_s=0.2)
        port = server.port
        try:
            assert server.listener is not None
            # What uvloop does by itself when libuv hands it an accept error.
            server.listener.close()
            for _ in range(int(STEP_TIMEOUT_S / server.tick_s)):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except ConnectionRefusedError:
                    await asyncio.sleep(server.tick_s)  # not listening again yet
                else:
                    break
            else:
                pytest.fail(f"nothing listens on port {port} {STEP_TIMEOUT_S} s later")
            assert (server.relistened, server.port) == (1, port)
            writer.write(b"back")
            async with asyncio.timeout(STEP_TIMEOUT_S):
                assert await reader.readexactly(4) == b"back"
            writer.close()
        finally:
            await stopped(server)

    run_on(loop_name, scenario)
