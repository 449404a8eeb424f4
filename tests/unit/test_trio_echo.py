"""trio echo server specifics: command line, log lines, accounting, accept-error logging.

The echo contract itself (shared with the uvloop server) is tested in
tests/integration/test_echo.py.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import Counter

import pytest
import trio

from services.common import config
from services.common.echo import EchoSettings
from services.trio_echo.server import TrioEchoServer, _AcceptErrorLog
from tests.helpers import REPO_ROOT, ServiceProcess, parse_events, wait_until

# Ceiling on any single step that should succeed quickly.
STEP_TIMEOUT_S = 10.0

# Idle timeout in the accounting test: the first connection must outlive the steps
# before `extra` is rejected (two connects and a round trip), even when this
# shared 2-core machine stalls the test for a second; the test then waits it out once.
ACCOUNTING_IDLE_S = 2.0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.trio_echo", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S * 3,
    )


def test_help_lists_every_setting_with_its_environment_variable() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("host", "port", "max-connections", "idle-timeout-s", "drain-s", "backlog"):
        assert f"--{flag}" in result.stdout
        assert "TRIO_ECHO_" + flag.upper().replace("-", "_") in result.stdout
    assert "default 9001" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--port", "abc"], {}, "--port / TRIO_ECHO_PORT: 'abc' is not an integer"),
        ([], {"TRIO_ECHO_IDLE_TIMEOUT_S": "-1"}, "TRIO_ECHO_IDLE_TIMEOUT_S: '-1' must be >= 0"),
        (["--max-connections", "0"], {}, "--max-connections / TRIO_ECHO_MAX_CONNECTIONS"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args, env, needle) -> None:
    result = run_cli(*args, env={**os.environ, **env})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("trio_echo: error: ")
    assert needle in result.stderr


def test_a_taken_port_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == config.EXIT_START_FAILED
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--host / --port: cannot listen on 127.0.0.1:" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_logs_start_one_line_per_connection_and_a_summary(sig: signal.Signals) -> None:
    svc = ServiceProcess("services.trio_echo", args=["--drain-s", "1"]).start()
    try:
        messages, size = 50, 100
        with socket.create_connection((svc.address.host, svc.address.port), STEP_TIMEOUT_S) as s:
            for _ in range(messages):
                s.sendall(b"m" * size)
                got = b""
                while len(got) < size:
                    got += s.recv(size)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""
        svc.signal(sig)
        assert svc.wait(STEP_TIMEOUT_S) == 0
        events = parse_events(svc.output())
    finally:
        svc.cleanup()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start"
    assert kinds[-2:] == ["stopping", "stopped"]
    ours = [e for e in events if e["event"] == "connection" and e["bytes_in"] == "5000"]
    assert len(ours) == 1, "one line per connection, none per message"
    line = ours[0]
    assert line["end"] == "eof"
    assert line["bytes_out"] == "5000"
    assert line["peer"].startswith("127.0.0.1:")
    assert float(line["duration"]) >= 0
    summary = events[-1]
    assert summary["signal"] == sig.name
    # The readiness probe's connections count too; ours ended with eof.
    assert int(summary["eof"]) >= 1
    assert int(summary["accepted"]) == kinds.count("connection")
    assert float(summary["drain_used_s"]) < 1.0, "nothing was open: no need to wait"


def test_counts_how_each_connection_ended() -> None:
    """In-process: eof, rejected (over max_connections) and idle, each counted once."""
    settings = EchoSettings(
        host="127.0.0.1", port=0, max_connections=1, idle_timeout_s=ACCOUNTING_IDLE_S
    )
    server = TrioEchoServer(settings)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.run)
            host, port = bound[0].rsplit(":", 1)
            with trio.fail_after(STEP_TIMEOUT_S):
                first = await trio.open_tcp_stream(host, int(port))
                await first.send_all(b"hi")
                assert await first.receive_some() == b"hi"
                extra = await trio.open_tcp_stream(host, int(port))
                assert await extra.receive_some() == b"", "over the limit: closed at once"
                assert await first.receive_some() == b"", "closed once idle"
                last = await trio.open_tcp_stream(host, int(port))
                await last.send_all(b"bye")
                await last.send_eof()
                assert await last.receive_some() == b"bye"
                assert await last.receive_some() == b""
                for stream in (first, extra, last):
                    await stream.aclose()
            nursery.cancel_scope.cancel()

    trio.run(scenario)
    assert server.ended == Counter(eof=1, rejected=1, idle=1)
    assert server.accepted == 2, "served ones; the rejected one is counted in `ended`"


def make_record(exc: OSError) -> logging.LogRecord:
    return logging.LogRecord(
        "trio.serve_listeners",
        logging.ERROR,
        __file__,
        1,
        "accept returned %s (%s); retrying in %s seconds",
        ("EMFILE", "Too many open files", 0.1),
        (type(exc), exc, None),
    )


def test_accept_errors_become_one_structured_line_per_window() -> None:
    log = _AcceptErrorLog(window_s=60.0)
    emfile = OSError(errno.EMFILE, "Too many open files")
    first = make_record(emfile)
    assert log.filter(first)
    assert (
        first.getMessage() == "event=accept_error errno=EMFILE retrying=True total=1 suppressed=0"
    )
    assert first.exc_info is None, "no traceback per retry"
    assert not any(log.filter(make_record(emfile)) for _ in range(20))
    assert log.total == 21


def test_a_second_signal_cuts_the_drain_short() -> None:
    svc = ServiceProcess("services.trio_echo", args=["--drain-s", "60"]).start()
    try:
        with socket.create_connection((svc.address.host, svc.address.port), STEP_TIMEOUT_S) as s:
            s.sendall(b"open")
            assert s.recv(4) == b"open"
            svc.signal(signal.SIGTERM)
            # Wait until the drain has begun (the log says so), then ask again.
            wait_until(lambda: "event=stopping" in svc.output(), STEP_TIMEOUT_S, "the drain")
            svc.signal(signal.SIGINT)
            assert svc.wait(STEP_TIMEOUT_S) == 0, "a 60 s drain was not cut short"
            assert s.recv(1) == b"", "the open connection was closed"
        events = parse_events(svc.output())
    finally:
        svc.cleanup()
    assert [e["event"] for e in events][-3:] == ["drain_cut_short", "connection", "stopped"]
    assert events[-1]["cut"] == "1"
