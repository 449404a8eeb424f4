"""The Locust TCP echo client against real echo servers on loopback.

The client is plain blocking-socket code (gevent makes it cooperative only
under Locust), so it runs here as is, against real sockets: the trio echo
service as a subprocess, and the load test's own stub server
(faithful, corrupting, or echoing in tiny pieces) in background threads.
GreenletExit handling is checked under real gevent, in a subprocess.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loadtest.echo_stub import StubEchoServer
from loadtest.tcp_client import REQUEST_TYPE, EchoClient, EchoMismatch, ShortEcho
from services.common.ports import free_port
from tests.helpers import REPO_ROOT, ServiceProcess


class Recorder:
    """Stands in for Locust's request EventHook: records every fire()."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def fire(self, *, reverse: bool = False, **kwargs: Any) -> None:
        self.events.append(kwargs)


@pytest.fixture(params=["stub", "trio_echo"])
def echo_address(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    if request.param == "stub":
        with StubEchoServer() as server:
            yield server.host, server.port
        return
    service = ServiceProcess("services.trio_echo").start()
    try:
        yield service.address.host, service.address.port
    finally:
        service.cleanup()


@pytest.mark.parametrize("size", [1, 1024, 300_000])
def test_round_trips_report_every_field(echo_address: tuple[str, int], size: int) -> None:
    host, port = echo_address
    events = Recorder()
    client = EchoClient(host, port, events, name="echo-test", timeout_s=10.0)
    try:
        payloads = [bytes([i]) * size for i in range(3)]
        assert all(client.echo(p) for p in payloads)
    finally:
        client.close()
    assert client.connections == 1  # one persistent connection for all round trips
    assert len(events.events) == 3
    for event in events.events:
        assert event["request_type"] == REQUEST_TYPE
        assert event["name"] == "echo-test"
        assert event["exception"] is None
        assert event["response_length"] == size
        assert isinstance(event["response_time"], float)
        assert event["response_time"] >= 0.0
        assert event["context"] == {"target": f"{host}:{port}", "payload_bytes": size}
        assert abs(event["start_time"] - time.time()) < 60


def test_split_echo_is_reassembled() -> None:
    events = Recorder()
    payload = bytes(range(256)) * 40  # 10 KiB, echoed back 7 bytes per send
    with StubEchoServer(chunk=7) as server:
        client = EchoClient(server.host, server.port, events, name="split")
        assert client.echo(payload)
        client.close()
    assert events.events[0]["exception"] is None
    assert events.events[0]["response_length"] == len(payload)


def test_corrupted_byte_is_reported_as_mismatch() -> None:
    events = Recorder()
    with StubEchoServer(corrupt_offset=100) as server:
        client = EchoClient(server.host, server.port, events, name="corrupt")
        assert not client.echo(b"x" * 1024)
        client.close()
    (event,) = events.events
    assert isinstance(event["exception"], EchoMismatch)
    assert event["exception"].offset == 100
    assert "offset 100 of 1024" in str(event["exception"])
    assert event["response_length"] == 1024  # the whole echo came back, just wrong


def test_mismatch_drops_the_connection() -> None:
    events = Recorder()
    with StubEchoServer(corrupt_offset=10) as server:
        client = EchoClient(server.host, server.port, events, name="corrupt")
        assert not client.echo(b"a" * 64)
        assert not client.echo(b"b" * 64)  # new connection, corrupted at offset 10 again
        client.close()
        assert server.connections == 2
    assert [type(e["exception"]) for e in events.events] == [EchoMismatch, EchoMismatch]
    assert client.connections == 2


def test_reconnects_after_server_restart() -> None:
    events = Recorder()
    server = StubEchoServer().start()
    port = server.port
    client = EchoClient(server.host, port, events, name="restart", timeout_s=5.0)
    try:
        assert client.echo(b"before" * 100)
        server.stop()  # closes the client's connection under it
        assert not client.echo(b"during" * 100)  # the dead connection fails...
        assert not client.echo(b"during" * 100)  # ...and so does reconnecting to nothing
        server = StubEchoServer(port).start()
        assert client.echo(b"after" * 100)  # after a short backoff, back on a new connection
    finally:
        client.close()
        server.stop()
    outcomes = [e["exception"] for e in events.events]
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], ConnectionError | ShortEcho)
    assert isinstance(outcomes[2], ConnectionRefusedError)
    assert client.connections == 2


def test_unanswered_echo_times_out() -> None:
    events = Recorder()
    with socket_that_never_answers() as port:
        client = EchoClient("127.0.0.1", port, events, name="silent", timeout_s=0.3)
        started = time.monotonic()
        assert not client.echo(b"anyone there?")
        elapsed = time.monotonic() - started
        client.close()
    assert isinstance(events.events[0]["exception"], TimeoutError)
    assert elapsed < 5.0  # coarse: bounded by the timeout, not hanging


def test_slow_connect_and_silent_server_share_one_timeout() -> None:
    """connect() and the wait for the echo together stay within ``timeout_s``.

    The listener's accept queue (backlog 0: one connection) is full, so the
    kernel drops the client's SYN and retransmits it about 1 s later; the queue
    is freed meanwhile, so connect() succeeds after ~1 s, and nobody ever
    answers. Each call getting the whole timeout would take ~1 s + 2 s.
    """
    events = Recorder()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as filler:
            client = EchoClient("127.0.0.1", port, events, name="slow", timeout_s=2.0)

            def free_the_queue() -> None:
                listener.accept()[0].close()

            timer = threading.Timer(0.3, free_the_queue)
            timer.start()
            try:
                started = time.monotonic()
                assert not client.echo(b"anyone there?")
                elapsed = time.monotonic() - started
            finally:
                timer.join()
                client.close()
            filler.close()
    assert isinstance(events.events[0]["exception"], TimeoutError)
    assert client.connections == 1  # it did connect (late), then waited for the echo
    assert elapsed < 2.6  # coarse: one 2 s limit for the round trip, not 2 s per call


class socket_that_never_answers:
    """A listener whose backlog accepts connections that nobody ever reads."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


def test_connect_failure_is_reported_not_raised() -> None:
    events = Recorder()
    client = EchoClient("127.0.0.1", free_port(), events, name="nobody", timeout_s=1.0)
    assert not client.echo(b"hello")
    assert isinstance(events.events[0]["exception"], ConnectionRefusedError)
    assert events.events[0]["response_length"] == 0


GREENLET_EXIT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import socket

    import gevent
    from gevent import GreenletExit

    from loadtest.tcp_client import EchoClient

    events = []

    class Recorder:
        def fire(self, **kwargs):
            events.append(kwargs)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = EchoClient("127.0.0.1", listener.getsockname()[1], Recorder(), name="x", timeout_s=30)
    worker = gevent.spawn(client.echo, b"hello")
    conn, _ = listener.accept()          # the client connected...
    received = conn.recv(5)              # ...and sent: it now waits for the echo
    worker.kill(block=True, timeout=5)   # what Locust does to stop a user
    conn.settimeout(5)
    after = conn.recv(1)                 # b"" once the client closed its socket
    print(json.dumps({
        "received": received.decode(),
        "killed_by_greenlet_exit": isinstance(worker.value, GreenletExit),
        "events": len(events),
        "socket_dropped": client._sock is None,
        "peer_saw_close": after == b"",
    }))
    """
)


def test_greenlet_exit_is_never_swallowed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", GREENLET_EXIT_SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "received": "hello",
        "killed_by_greenlet_exit": True,
        "events": 0,
        "socket_dropped": True,
        "peer_saw_close": True,
    }
