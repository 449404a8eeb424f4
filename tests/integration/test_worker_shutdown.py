"""SIGTERM/SIGKILL against a real worker: drain, exit 0, and no orphan processes.

Each test starts its own worker (local only: it is signalled, so it must not
be the shared compose container), lists every process below it (forkserver,
resource tracker, pool workers) before the signal, and checks that all of
them are gone afterwards, including any that were re-parented away from it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from services.common.config import EXIT_START_FAILED, EXIT_USAGE
from tests.helpers import REPO_ROOT, ServiceProcess, wait_until
from tests.integration.test_worker_support import (
    EXIT_TIMEOUT_S,
    ORPHAN_TIMEOUT_S,
    ReleaseServer,
    alive,
    children_of,
    job,
    metric,
    skip_in_compose,
    start_worker,
)
from tests.integration.test_worker_support import client as make_client

pytestmark = pytest.mark.slow

# forkserver + resource tracker + 2 warm pool workers
MIN_CHILDREN = 4


class Workers:
    """Starts workers for one test and, afterwards, kills anything they left behind."""

    def __init__(self) -> None:
        self.procs: list[ServiceProcess] = []
        self.spawned: set[int] = set()

    def start(self, env: dict[str, str]) -> tuple[ServiceProcess, set[int]]:
        proc = start_worker({"WORKER_PROCESSES": "2", "WORKER_THREADS": "2", **env})
        self.procs.append(proc)
        children = children_of(proc.proc.pid)
        self.spawned |= children
        assert len(children) >= MIN_CHILDREN, f"expected forkserver, tracker, pool: {children}"
        return proc, children

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.cleanup()
        for pid in alive(self.spawned):  # only processes this test's workers started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workers() -> Iterator[Workers]:
    skip_in_compose()
    started = Workers()
    try:
        yield started
    finally:
        started.cleanup()


def test_sigterm_drains_then_exits_0_without_orphans(workers: Workers) -> None:
    proc, children = workers.start({"WORKER_DRAIN_S": "10", "WORKER_ENABLE_TEST_TASKS": "1"})
    with (
        make_client(proc.address) as http,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        ReleaseServer() as gate,  # exits first: releases the job before the pool joins it
    ):
        # held until released below, however long the checks take on a slow machine
        in_flight = pool.submit(http.post, "/jobs", json=gate.hold_job())
        wait_until(lambda: metric(http, "worker_jobs_running") == 1, 10, "the job to start")
        proc.signal(signal.SIGTERM)

        def refused() -> bool:
            response = job(http, "sleep", {"ms": 0}, mode="async")
            return response.status_code == 503 and response.json()["error"] == "shutting_down"

        wait_until(refused, 5, "new jobs to be refused with 503")
        assert http.get("/healthz").json()["status"] == "draining"
        assert not in_flight.done()
        gate.release()
        finished = in_flight.result(timeout=EXIT_TIMEOUT_S)
        assert finished.status_code == 200, finished.text  # drained, not cut
        assert finished.json()["result"] == {"released": True}
    assert proc.wait(EXIT_TIMEOUT_S) == 0
    wait_until(lambda: not alive(children), ORPHAN_TIMEOUT_S, "the worker's children to exit")
    log = proc.output()
    assert "event=draining" in log
    assert "cut_short=False" in log
    assert "event=pools_stopped" in log


def test_sigterm_cuts_jobs_past_the_drain_deadline(workers: Workers) -> None:
    proc, children = workers.start({"WORKER_DRAIN_S": "0.5"})
    long_jobs = [
        ("sleep", {"ms": 4000}, "async"),
        ("sleep", {"ms": 4000}, "thread"),
        ("primes", {"n": 1000000}, "process"),
    ]
    with make_client(proc.address) as http, concurrent.futures.ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(job, http, t, a, mode=m) for t, a, m in long_jobs]
        wait_until(lambda: metric(http, "worker_jobs_running") == 3, 10, "3 running jobs")
        proc.signal(signal.SIGTERM)
        answers = [f.result(timeout=EXIT_TIMEOUT_S) for f in pending]
    assert [a.status_code for a in answers] == [503, 503, 503]
    assert {a.json()["error"] for a in answers} == {"shutting_down"}
    # exit 0 without waiting for the thread's 4 s sleep; the pool job is ended
    assert proc.wait(EXIT_TIMEOUT_S) == 0
    wait_until(lambda: not alive(children), ORPHAN_TIMEOUT_S, "the worker's children to exit")
    log = proc.output()
    assert "cut_short=True" in log
    assert "event=abandoning_thread_jobs" in log


def test_sigkill_leaves_no_orphan_pool_processes(workers: Workers) -> None:
    """The parent cannot clean up after SIGKILL: the pool workers' watchdogs must."""
    proc, children = workers.start({})
    with make_client(proc.address) as http:
        assert job(http, "primes", {"n": 1000}, mode="process").status_code == 200
    proc.signal(signal.SIGKILL)
    proc.wait(EXIT_TIMEOUT_S)
    wait_until(lambda: not alive(children), ORPHAN_TIMEOUT_S, "the orphaned children to exit")


def test_an_address_in_use_fails_at_start_with_one_line_and_status_1() -> None:
    """Like the echo servers: 1 (could not start), not 2 (bad settings)."""
    skip_in_compose()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "services.unsync_worker", "--host", "127.0.0.1"],
            cwd=REPO_ROOT,
            env={**os.environ, "WORKER_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == EXIT_START_FAILED == 1
    assert result.stderr.strip().splitlines() == [
        f"unsync_worker: error: --host/--port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]


def test_contradictory_settings_fail_at_start_with_one_line() -> None:
    skip_in_compose()
    result = subprocess.run(
        [sys.executable, "-m", "services.unsync_worker", "--default-timeout-s", "50"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_USAGE == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--default-timeout-s / WORKER_DEFAULT_TIMEOUT_S" in result.stderr
