"""``python -m services.client echo`` as a user runs it: a real subprocess.

Against the real echo services (the echo suite's shared servers, ``echo_address``
in conftest.py) it must verify, print statistics and exit 0; against servers
that misbehave (small threaded fixtures in this module) or a closed port it must
exit 1 with one line saying why; bad flags exit 2.
"""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from services.common.ports import free_port
from tests.helpers import REPO_ROOT, Address

# A CLI run here does a few hundred round trips; this only stops a hung one.
RUN_TIMEOUT_S = 120


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.client", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_json_report_of_a_clean_run(echo_address: Address, backend: str) -> None:
    result = run_cli(
        "echo",
        f"--host={echo_address.host}",
        f"--port={echo_address.port}",
        "--size=1024",
        "--count=300",
        "--concurrency=4",
        f"--backend={backend}",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["completed"], report["not_run"], report["concurrency"]) == (300, 0, 4)
    assert set(report["errors"].values()) == {0}
    assert report["backend"] == backend
    assert report["requests_per_s"] > 0
    assert report["mib_per_s"] > 0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_text_report_shows_rates_and_latencies(echo_address: Address) -> None:
    host, port = echo_address.host, str(echo_address.port)
    result = run_cli(
        "echo",
        "--host",
        host,
        "--port",
        port,
        "--size",
        "65537",
        "--count",
        "40",
        "--concurrency=3",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"echo {echo_address}" in out
    assert "40 ok, 0 errors, 0 not run" in out
    for needle in ("req/s", "MiB/s", "p50", "p99", "max"):
        assert needle in out
    assert result.stderr == ""


def test_closed_port_exits_1_with_one_line() -> None:
    port = free_port()  # nothing listens there any more
    result = run_cli("echo", "--port", str(port), "--count", "10")
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr == f"client: error: cannot connect to 127.0.0.1:{port}: Connection refused\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["echo", "--size", "0"],
        ["echo", "--bogus"],
        ["echo", "--backend", "gevent"],
        ["echo", "--port", "70000"],
        [],
    ],
    ids=["size-0", "unknown-flag", "bad-backend", "bad-port", "no-command"],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str]) -> None:
    result = run_cli(*argv)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("client")
    assert "error:" in result.stderr


# -- misbehaving servers ---------------------------------------------------------


class _CorruptingHandler(socketserver.BaseRequestHandler):
    """Echoes everything, but with the first byte of each read inverted."""

    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(bytes([data[0] ^ 0xFF]) + data[1:])


class _EarlyCloseHandler(socketserver.BaseRequestHandler):
    """Reads one 100-byte message, answers nothing and closes."""

    def handle(self) -> None:
        received = b""
        while len(received) < 100 and (data := self.request.recv(100 - len(received))):
            received += data


class _SilentHandler(socketserver.BaseRequestHandler):
    """Reads until the client closes and never answers."""

    def handle(self) -> None:
        while self.request.recv(65536):
            pass


@pytest.fixture(
    params=[_CorruptingHandler, _EarlyCloseHandler, _SilentHandler],
    ids=["corrupting", "early-close", "silent"],
)
def bad_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), request.param)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield request.param.__name__, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# The round-trip limit against the silent server: short, since every run waits it
# out. Only that server gets it: against the others the default (10 s) applies, so a
# stall of this busy machine cannot turn a mismatch or an early EOF into a timeout.
SILENT_TIMEOUT_S = 0.2


def test_mismatch_early_eof_or_timeout_exits_1_and_is_reported(
    bad_server: tuple[str, int],
) -> None:
    kind, port = bad_server
    timeout = [f"--timeout={SILENT_TIMEOUT_S}"] if kind == "_SilentHandler" else []
    result = run_cli(
        "echo", "--port", str(port), "--size=100", "--count=20", "--concurrency=2", *timeout
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("client: error: 20 of 20 round trips failed (first: ")
    if kind == "_CorruptingHandler":
        assert "20 mismatch" in result.stdout
        assert "echoed bytes differ from those sent" in result.stderr
    elif kind == "_EarlyCloseHandler":
        assert "0 ok, 2 errors, 18 not run" in result.stdout
        assert "2 eof" in result.stdout
        assert "server closed the connection after echoing 0 of 100 bytes" in result.stderr
    else:
        assert "0 ok, 2 errors, 18 not run" in result.stdout
        assert "2 timeout" in result.stdout
        assert "echo of 100 bytes to 127.0.0.1" in result.stderr
        assert f"took longer than {SILENT_TIMEOUT_S} s" in result.stderr
