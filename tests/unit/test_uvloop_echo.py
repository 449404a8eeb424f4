"""asyncio/uvloop echo server: settings, flow control and listener recovery.

The server runs in-process here (real sockets on 127.0.0.1, on each loop) so the
tests can look at its state: whether it stopped reading, how much it buffered,
whether it re-created its listener.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from services.common import config
from services.uvloop_echo.server import HIGH_WATER, EchoConnection, EchoServer
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

# A send that makes no progress for this long means the server may have stopped reading...
STALL_S = 0.5

# ...and it has if it takes no byte for this much longer: one scheduling gap on a
# busy 2-core machine can exceed STALL_S, not this as well. If the server does take
# bytes meanwhile, it was a gap and the push goes on.
STALL_CONFIRM_S = 2.0

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
                    # Kernel buffers full: confirm the server has stopped reading us.
                    (conn,) = server.conns
                    taken = conn.bytes_in
                    await asyncio.sleep(STALL_CONFIRM_S)
                    if conn.bytes_in == taken:
                        break
                    continue  # a scheduling gap, not a stall: push on
                sent += CHUNK  # a chunk cut short by the timeout is left uncounted
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


# -- how a connection ended ---------------------------------------------------------

# Client chunk size while filling the server's socket send buffer: small, so the
# server's own write buffer is far below HIGH_WATER (still reading) once it fills.
FILL_CHUNK = 4 * 1024

# Most bytes pushed before the server buffers in user space: above what the kernel
# buffers on loopback with autotuning (a few MiB), bounded anyway.
FILL_LIMIT = 64 << 20


# Pause between looks at the in-process server's state: it runs on this same loop,
# so each pause is a chance for its callbacks to run.
POLL_S = 0.001


async def until(check: Callable[[], bool], what: str) -> None:
    """Give the loop turns until ``check()`` holds; fail after about STEP_TIMEOUT_S."""
    for _ in range(int(STEP_TIMEOUT_S / POLL_S)):
        if check():
            return
        await asyncio.sleep(POLL_S)
    pytest.fail(f"timed out waiting for {what}")


def has_read(conn: EchoConnection, size: int) -> bool:
    return conn.bytes_in == size


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_reset_while_the_echo_flushes_after_eof_ends_as_reset(loop_name):
    """The client half-closes while its echo is still buffered, then resets: ``end=reset``."""

    async def scenario(loop_name: str) -> None:
        server = await started(loop_name, idle_timeout_s=0.0)
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FILL_CHUNK)
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("127.0.0.1", server.port))
            await until(lambda: len(server.conns) == 1, "the server to accept")
            (conn,) = server.conns
            sent = 0
            # The client never reads: push until the server has to buffer its echo.
            while conn.transport.get_write_buffer_size() == 0:
                assert sent < FILL_LIMIT, "the server never buffered"
                await loop.sock_sendall(client, b"\x5a" * FILL_CHUNK)
                sent += FILL_CHUNK
                await until(functools.partial(has_read, conn, sent), "the server to read it all")
            assert conn.transport.is_reading()  # below HIGH_WATER: it will see our EOF
            client.shutdown(socket.SHUT_WR)
            await until(conn.transport.is_closing, "the server to answer the EOF")
            assert conn.transport.get_write_buffer_size() > 0, "the echo is still buffered"
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # RST while the server waits to flush
            await until(lambda: not server.conns, "the server to drop the connection")
            assert server.ended == Counter(reset=1)
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
