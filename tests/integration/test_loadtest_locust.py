"""Locust itself, run as a real subprocess, against real servers: the gate's exit codes.

Locust monkey-patches the process with gevent, so it never runs inside pytest:
each test starts ``locust`` (or ``python -m loadtest.local``) headless for a
few seconds and asserts on its exit status, its log and its CSV files.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.echo_stub import StubEchoServer
from tests.helpers import REPO_ROOT, target

pytestmark = pytest.mark.slow

# Start-up, worker handshake and shutdown around a run of a few seconds; a
# bound on a hang, not a performance expectation.
RUN_TIMEOUT_S = 120


def locust(*args: str, csv_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless"]
    cmd += ["--only-summary", *args]
    if csv_prefix is not None:
        cmd += ["--csv", str(csv_prefix)]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def stats_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_distributed_run_of_all_services_passes_the_gate(tmp_path: Path) -> None:
    """Two worker processes load all three services; the gate checks both took part."""
    run = ["--users", "6", "--spawn-rate", "6", "--run-time", "5s", "--processes", "2"]
    if target() == "compose":  # the stack's published ports
        targets = ["--trio-echo", "127.0.0.1:9001", "--uvloop-echo", "127.0.0.1:9002"]
        targets += ["--worker-url", "http://127.0.0.1:8080"]
        result = locust(*run, *targets, csv_prefix=tmp_path / "run")
    else:
        result = subprocess.run(
            [sys.executable, "-m", "loadtest.local", *run, "--report-dir", str(tmp_path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "event=gate result=passed" in log
    assert "workers=2 " in log
    rows = stats_rows(tmp_path / "run_stats.csv")
    assert {"trio-echo", "uvloop-echo", "Aggregated"} <= rows.keys()
    assert any(name.startswith("jobs:") for name in rows)
    for name, row in rows.items():
        assert row["Failure Count"] == "0", (name, row)
    assert int(rows["trio-echo"]["Request Count"]) > 0
    assert rows["trio-echo"]["Average Content Size"] == "1024.0"  # every byte came back


def test_corrupted_echoes_fail_the_gate(tmp_path: Path) -> None:
    with StubEchoServer(corrupt_offset=100) as server:
        result = locust(
            "--users", "2", "--spawn-rate", "2", "--run-time", "3s",
            "--trio-echo", f"127.0.0.1:{server.port}", "TrioEchoUser",
            csv_prefix=tmp_path / "run",
        )  # fmt: skip
    assert result.returncode == 1, result.stderr[-4000:]
    assert "gate FAILED: failure ratio of tcp trio-echo is 100.00%" in result.stderr
    failures = (tmp_path / "run_failures.csv").read_text()
    assert "echoed bytes differ from those sent at offset 100 of 1024" in failures


def test_too_few_workers_and_no_requests_fail_the_gate() -> None:
    with StubEchoServer() as server:
        result = locust(
            "--users", "0", "--run-time", "2s", "--processes", "1", "--gate-min-workers", "2",
            "--trio-echo", f"127.0.0.1:{server.port}", "TrioEchoUser",
        )  # fmt: skip
    assert result.returncode == 1, result.stderr[-4000:]
    assert "gate FAILED: only 0 requests were made" in result.stderr
    assert "gate FAILED: 1 Locust worker(s) took part, fewer than 2" in result.stderr


def test_bad_option_is_a_one_line_usage_error() -> None:
    result = locust("--gate-max-p95-ms", "soon", "--run-time", "1s")
    assert result.returncode == 2
    assert "--gate-max-p95-ms: 'soon'" in result.stderr
