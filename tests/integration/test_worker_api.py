"""The unsync worker's HTTP API against a real worker process.

``worker`` is a default-configured worker (or the compose container);
``lab`` is a local one with test tasks, tiny pools and queue, at most one sync
job at a time, and ``PYTHONDEVMODE=1`` (unsync's async calls break under
``-X dev`` unless the adapter makes them from unsync's own loop thread, so
every test on it proves that too). Tests that need consumers busy hold them
with the test-only ``hold`` task and release them themselves (no timing races).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from services.common.ports import free_port
from tests.helpers import Address, ServiceProcess, wait_until
from tests.integration.test_worker_support import (
    HTTP_TIMEOUT_S,
    EchoServer,
    ReleaseServer,
    compose,
    compose_address,
    job,
    metric,
    skip_in_compose,
    start_worker,
)
from tests.integration.test_worker_support import client as make_client

# The catalogue; the test-only tasks must never show up in it.
PUBLIC_TASKS = {"primes", "pbkdf2", "sleep", "echo_probe"}

# Small pools and queue so that "full" and "busy" are easy to reach.
LAB_ENV = {
    "WORKER_ENABLE_TEST_TASKS": "1",
    "WORKER_THREADS": "2",
    "WORKER_PROCESSES": "2",
    "WORKER_CONCURRENCY": "2",
    "WORKER_QUEUE_SIZE": "2",
    "WORKER_SYNC_MAX_JOBS": "1",
    "WORKER_MAX_BODY_BYTES": "2048",
    "PYTHONDEVMODE": "1",
}


# The async-overlap claim: ten sleeps of this long, at once.
OVERLAP_JOBS = 10
OVERLAP_SLEEP_MS = 200

# A job_done log line: its time (when the job ended, ms resolution), id and run time.
JOB_DONE_LINE = re.compile(
    r"^ts=(?P<ts>\S+ \S+) .*event=job_done id=(?P<id>\d+) .*run_ms=(?P<run_ms>[\d.]+)"
)


@pytest.fixture(scope="module")
def worker_proc() -> Iterator[ServiceProcess | None]:
    """The default-configured local worker, or None against the compose stack."""
    if compose():
        yield None
        return
    with EchoServer() as echo:
        proc = start_worker(
            {"WORKER_TRIO_ECHO_ADDR": echo.address, "WORKER_UVLOOP_ECHO_ADDR": echo.address}
        )
        try:
            yield proc
        finally:
            proc.cleanup()


@pytest.fixture(scope="module")
def worker(worker_proc: ServiceProcess | None) -> Address:
    return compose_address() if worker_proc is None else worker_proc.address


@pytest.fixture
def http(worker: Address) -> Iterator[httpx.Client]:
    with make_client(worker) as c:
        yield c


@pytest.fixture(scope="module")
def lab_proc() -> Iterator[ServiceProcess]:
    skip_in_compose()
    unreachable = f"127.0.0.1:{free_port()}"  # nothing listens there any more
    proc = start_worker(
        {**LAB_ENV, "WORKER_TRIO_ECHO_ADDR": unreachable, "WORKER_UVLOOP_ECHO_ADDR": unreachable}
    )
    try:
        yield proc
    finally:
        proc.cleanup()


@pytest.fixture
def lab(lab_proc: ServiceProcess) -> Iterator[httpx.Client]:
    """A client for the lab worker, once nothing is running or abandoned there."""
    with make_client(lab_proc.address) as c:
        wait_until(
            lambda: (
                metric(c, "worker_jobs_running") == 0 and metric(c, "worker_jobs_abandoned") == 0
            ),
            20,
            "the lab worker to be idle",
        )
        yield c


def server_pid(http: httpx.Client) -> int:
    return int(http.get("/healthz").json()["pid"])


# ------------------------------------------------------------------ contract


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["threads"] >= 1 and body["processes"] >= 1


def test_catalogue_lists_public_tasks_with_schemas_and_modes(http: httpx.Client) -> None:
    tasks = {t["name"]: t for t in http.get("/tasks").json()["tasks"]}
    assert set(tasks) == PUBLIC_TASKS
    assert tasks["primes"]["kind"] == "cpu"
    assert tasks["primes"]["auto_mode"] == "process"
    assert set(tasks["primes"]["modes"]) == {"auto", "process", "thread", "sync"}
    assert tasks["primes"]["args_schema"]["properties"]["n"]["maximum"] >= 10000
    assert tasks["sleep"]["kind"] == "io"
    assert tasks["sleep"]["auto_mode"] == "async"
    assert tasks["echo_probe"]["auto_mode"] == "async"
    assert tasks["pbkdf2"]["auto_mode"] == "process"


def test_test_tasks_run_but_are_never_listed(lab: httpx.Client) -> None:
    assert {t["name"] for t in lab.get("/tasks").json()["tasks"]} == PUBLIC_TASKS
    assert "crash" not in lab.get("/openapi.json").text
    assert job(lab, "fail", mode="thread").status_code == 500  # accepted, ran, failed


def test_test_tasks_are_unknown_without_the_flag(http: httpx.Client) -> None:
    response = job(http, "crash")
    assert response.status_code == 422
    assert response.json()["error"] == "unknown_task"


@pytest.mark.parametrize("mode", ["auto", "process", "thread", "sync"])
def test_primes_counts_primes_below_n(http: httpx.Client, mode: str) -> None:
    response = job(http, "primes", {"n": 10000}, mode=mode)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == 1229
    assert body["task"] == "primes"
    assert set(body) >= {"task", "mode", "result", "pid", "thread", "queued_ms", "run_ms"}
    assert body["queued_ms"] >= 0 and body["run_ms"] > 0


def test_pbkdf2_returns_a_digest(http: httpx.Client) -> None:
    response = job(http, "pbkdf2", {"iterations": 1000}, mode="thread")
    assert response.status_code == 200, response.text
    assert len(response.json()["result"]["digest"]) == 64


# ------------------------------------------------------------------ where each mode runs


@pytest.mark.parametrize(
    ("task", "args", "mode", "expect"),
    [
        ("primes", {"n": 1000}, "auto", ("process", "pool process")),
        ("primes", {"n": 1000}, "process", ("process", "pool process")),
        ("primes", {"n": 1000}, "thread", ("thread", "pool thread")),
        ("primes", {"n": 1000}, "sync", ("sync", "server loop thread")),
        ("sleep", {"ms": 1}, "auto", ("async", "unsync loop thread")),
        ("sleep", {"ms": 1}, "async", ("async", "unsync loop thread")),
        ("sleep", {"ms": 1}, "thread", ("thread", "pool thread")),
        ("sleep", {"ms": 1}, "sync", ("sync", "server loop thread")),
        ("pbkdf2", {"iterations": 10}, "auto", ("process", "pool process")),
    ],
)
def test_each_mode_runs_where_it_says(
    http: httpx.Client, task: str, args: dict[str, int], mode: str, expect: tuple[str, str]
) -> None:
    used, where = expect
    pid = server_pid(http)
    body = job(http, task, args, mode=mode).json()
    assert body["mode"] == used
    if where == "pool process":
        assert body["pid"] != pid
        assert body["thread"] == "MainThread"
    elif where == "pool thread":
        assert body["pid"] == pid
        assert body["thread"].startswith("unsync-thread")
    elif where == "unsync loop thread":
        assert body["pid"] == pid
        assert body["thread"] == "unsync-loop"
    else:
        assert body["pid"] == pid
        assert body["thread"] == "MainThread"


def job_spans(log: str, ids: set[int]) -> dict[int, tuple[float, float]]:
    """(start, end) in seconds of each job in ``ids``, from the worker's job_done lines."""
    spans = {}
    for line in log.splitlines():
        if (match := JOB_DONE_LINE.match(line)) and int(match["id"]) in ids:
            end = datetime.datetime.strptime(match["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            spans[int(match["id"])] = (end - float(match["run_ms"]) / 1000, end)
    return spans


def test_ten_async_sleeps_overlap(worker: Address, worker_proc: ServiceProcess | None) -> None:
    """10 concurrent 200 ms sleeps in async mode finish well under a second (not 2 s).

    The requests go out together from one asyncio client; the server's own
    evidence says they overlapped: no job waited for another (queued_ms well
    under one sleep), all ran on unsync's one loop thread, and (local worker)
    their run spans from the log share a common instant.
    """
    body = {"task": "sleep", "args": {"ms": OVERLAP_SLEEP_MS}, "mode": "async"}

    async def burst() -> tuple[float, list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=f"http://{worker}", timeout=HTTP_TIMEOUT_S) as c:
            start = time.perf_counter()
            responses = await asyncio.gather(
                *(c.post("/jobs", json=body) for _ in range(OVERLAP_JOBS))
            )
            return time.perf_counter() - start, responses

    wall, responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * OVERLAP_JOBS
    bodies = [r.json() for r in responses]
    assert {(b["pid"], b["thread"]) for b in bodies} == {(bodies[0]["pid"], "unsync-loop")}
    assert all(b["run_ms"] >= OVERLAP_SLEEP_MS * 0.95 for b in bodies)
    # A job that waited for another would have queued for a whole sleep.
    assert max(b["queued_ms"] for b in bodies) < OVERLAP_SLEEP_MS / 2, bodies
    if worker_proc is not None:
        ids = {b["id"] for b in bodies}
        spans = job_spans(worker_proc.output(), ids)
        assert set(spans) == ids
        latest_start = max(start for start, _ in spans.values())
        earliest_end = min(end for _, end in spans.values())
        assert latest_start < earliest_end, f"run spans do not all overlap: {spans}"
    assert wall < 1.0, f"{OVERLAP_JOBS} async sleeps of {OVERLAP_SLEEP_MS} ms took {wall:.2f} s"


# ------------------------------------------------------------------ echo probe


@pytest.mark.parametrize("mode", ["auto", "async", "thread", "sync"])
def test_echo_probe_round_trips(http: httpx.Client, mode: str) -> None:
    response = job(http, "echo_probe", {"target": "both", "count": 5, "size": 512}, mode=mode)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert [t["target"] for t in result["targets"]] == ["trio", "uvloop"]
    for stats in result["targets"]:
        assert stats["count"] == 5 and stats["size"] == 512
        assert 0 < stats["rtt_ms"]["min"] <= stats["rtt_ms"]["p50"] <= stats["rtt_ms"]["max"]


@pytest.mark.parametrize("mode", ["async", "thread", "sync"])
def test_unreachable_echo_service_is_a_502_naming_it(lab: httpx.Client, mode: str) -> None:
    response = job(lab, "echo_probe", {"target": "uvloop", "count": 1}, mode=mode)
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "echo_unreachable"
    assert "uvloop echo at 127.0.0.1:" in body["detail"]


# ------------------------------------------------------------------ bad input


def _post(
    http: httpx.Client, content: bytes, content_type: str = "application/json"
) -> httpx.Response:
    return http.post("/jobs", content=content, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("content", "status", "code", "names"),
    [
        (b'{"task": "primes",', 400, "invalid_json", "not valid JSON"),
        (b'{"task": "primes", "args": {"n": NaN}}', 400, "invalid_json", "NaN"),
        (b"[" * 1500 + b"]" * 1500, 400, "invalid_json", "nested"),
        (b"[1, 2]", 422, "invalid_request", "JSON object"),
        (b'{"task": "nope", "args": {}}', 422, "unknown_task", "'nope'"),
        (
            b'{"task": "primes", "args": {"n": 5}, "colour": 1}',
            422,
            "invalid_request",
            "colour: unknown field",
        ),
        (
            b'{"task": "primes", "args": {"n": 5, "m": 1}}',
            422,
            "invalid_request",
            "args.m: unknown field",
        ),
        (b'{"task": "primes", "args": {"n": "5"}}', 422, "invalid_request", "args.n"),
        (b'{"task": "primes", "args": {"n": 5.5}}', 422, "invalid_request", "args.n"),
        (b'{"task": "primes", "args": {"n": true}}', 422, "invalid_request", "args.n"),
        (b'{"task": "primes", "args": {}}', 422, "invalid_request", "args.n: required"),
        (b'{"task": "primes", "args": {"n": 1000000000}}', 422, "invalid_request", "args.n"),
        (b'{"task": "primes", "args": {"n": -1}}', 422, "invalid_request", "args.n"),
        (b'{"task": "sleep", "args": {"ms": 99999}}', 422, "invalid_request", "args.ms"),
        (
            b'{"task": "echo_probe", "args": {"target": "nginx"}}',
            422,
            "invalid_request",
            "args.target",
        ),
        (b'{"task": "primes", "args": {"n": 5}, "mode": "fiber"}', 422, "invalid_request", "mode"),
        (
            b'{"task": "primes", "args": {"n": 5}, "mode": "async"}',
            422,
            "mode_not_allowed",
            "async",
        ),
        (
            b'{"task": "primes", "args": {"n": 5}, "timeout_s": 0}',
            422,
            "invalid_request",
            "timeout_s",
        ),
        (
            b'{"task": "primes", "args": {"n": 5}, "timeout_s": 9999}',
            422,
            "invalid_request",
            "timeout_s",
        ),
        (b'{"task": 7, "args": {}}', 422, "invalid_request", "task"),
        (b'{"task": "primes", "args": [1]}', 422, "invalid_request", "args"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(
    http: httpx.Client, content: bytes, status: int, code: str, names: str
) -> None:
    response = _post(http, content)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert names in body["detail"]


def test_wrong_content_type_is_415(http: httpx.Client) -> None:
    response = _post(http, b'{"task": "primes", "args": {"n": 5}}', "text/plain")
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_oversized_body_by_content_length_is_413(lab: httpx.Client) -> None:
    response = _post(lab, b'{"task": "primes", "args": {"n": 5}, "x": "' + b"a" * 5000 + b'"}')
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_oversized_streamed_body_is_413(lab: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"task": "primes", "args": {"n": 5}, "x": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    response = lab.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "2048-byte limit" in response.json()["detail"]


def test_unknown_path_and_method_are_json_errors(http: httpx.Client) -> None:
    missing = http.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = http.get("/jobs")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


# ------------------------------------------------------------------ queue, timeouts, failures


def test_full_queue_is_503_with_retry_after(lab: httpx.Client) -> None:
    """2 consumers busy + 2 queued: the 5th job is refused at once."""
    # ReleaseServer exits first: a failed check releases the jobs before the pool joins them.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool, ReleaseServer() as gate:
        pending = [pool.submit(lab.post, "/jobs", json=gate.hold_job()) for _ in range(4)]
        wait_until(
            lambda: (
                metric(lab, "worker_jobs_running") == 2 and metric(lab, "worker_queue_depth") == 2
            ),
            10,
            "2 running and 2 queued jobs",
        )
        refused = job(lab, "sleep", {"ms": 1}, mode="async")
        assert refused.status_code == 503
        assert refused.json()["error"] == "queue_full"
        assert int(refused.headers["Retry-After"]) >= 1
        assert not any(f.done() for f in pending)
        gate.release()
        answers = [f.result() for f in pending]
    assert [a.status_code for a in answers] == [200] * 4
    assert [a.json()["result"] for a in answers] == [{"released": True}] * 4


def test_sync_jobs_beyond_the_limit_are_503_with_retry_after(lab: httpx.Client) -> None:
    """WORKER_SYNC_MAX_JOBS=1: while one sync job waits for a consumer, another is refused."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool, ReleaseServer() as gate:
        holds = [pool.submit(lab.post, "/jobs", json=gate.hold_job()) for _ in range(2)]
        wait_until(lambda: metric(lab, "worker_jobs_running") == 2, 10, "both consumers busy")
        waiting = pool.submit(job, lab, "sleep", {"ms": 1}, mode="sync")
        wait_until(lambda: metric(lab, "worker_queue_depth") == 1, 10, "the sync job to queue")
        refused = job(lab, "primes", {"n": 10}, mode="sync")
        assert refused.status_code == 503
        assert refused.json()["error"] == "sync_busy"
        assert "limit of 1 sync jobs" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
        gate.release()
        assert [h.result().status_code for h in holds] == [200, 200]
        assert waiting.result().status_code == 200
    # its answer freed the slot
    assert job(lab, "primes", {"n": 10}, mode="sync").json()["result"] == 4


def test_sync_mode_can_be_turned_off() -> None:
    """WORKER_SYNC_MAX_JOBS=0: sync is neither listed nor accepted; other modes still run."""
    skip_in_compose()
    proc = start_worker(
        {"WORKER_SYNC_MAX_JOBS": "0", "WORKER_PROCESSES": "1", "WORKER_THREADS": "1"}
    )
    try:
        with make_client(proc.address) as http:
            tasks = {t["name"]: t for t in http.get("/tasks").json()["tasks"]}
            assert tasks["primes"]["modes"] == ["auto", "process", "thread"]
            assert all("sync" not in t["modes"] for t in tasks.values())
            schema = http.get("/openapi.json").json()
            body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
            assert all(
                "sync" not in branch["properties"]["mode"]["enum"]
                for branch in body["schema"]["oneOf"]
            )
            refused = job(http, "primes", {"n": 10}, mode="sync")
            assert refused.status_code == 422
            assert refused.json()["error"] == "mode_not_allowed"
            assert "WORKER_SYNC_MAX_JOBS is 0" in refused.json()["detail"]
            assert job(http, "primes", {"n": 10}, mode="thread").json()["result"] == 4
    finally:
        proc.cleanup()


def test_async_timeout_is_504_and_the_job_is_cancelled(lab: httpx.Client) -> None:
    start = time.perf_counter()
    response = job(lab, "sleep", {"ms": 5000}, mode="async", timeout_s=0.3)
    assert response.status_code == 504
    assert "cancelled" in response.json()["detail"]
    assert time.perf_counter() - start < 3
    # really stopped: its consumer is free again long before the 5 s sleep would end
    wait_until(lambda: metric(lab, "worker_jobs_running") == 0, 2, "the cancelled job to end")


@pytest.mark.parametrize(
    ("task", "args", "mode"),
    [("sleep", {"ms": 1500}, "thread"), ("primes", {"n": 400000}, "process")],
)
def test_thread_and_process_timeouts_are_504_and_abandoned_boundedly(
    lab: httpx.Client, task: str, args: dict[str, int], mode: str
) -> None:
    response = job(lab, task, args, mode=mode, timeout_s=0.2)
    assert response.status_code == 504
    assert "abandoned" in response.json()["detail"]
    assert metric(lab, "worker_jobs_abandoned") == 1
    wait_until(lambda: metric(lab, "worker_jobs_abandoned") == 0, 15, "the abandoned job to end")


def test_crashed_pool_process_is_503_and_the_pool_is_rebuilt(
    lab: httpx.Client, lab_proc: ServiceProcess
) -> None:
    before = metric(lab, "worker_process_pool_rebuilds_total")
    old_pid = job(lab, "primes", {"n": 100}, mode="process").json()["pid"]
    crashed = job(lab, "crash")
    assert crashed.status_code == 503
    assert crashed.json()["error"] == "process_pool_broken"
    assert "Retry-After" in crashed.headers
    after = job(lab, "primes", {"n": 10000}, mode="process")
    assert after.status_code == 200, after.text
    assert after.json()["result"] == 1229
    assert after.json()["pid"] != old_pid
    assert metric(lab, "worker_process_pool_rebuilds_total") == before + 1
    log = lab_proc.output()
    assert "event=process_pool_rebuilt" in log
    assert "task=crash mode=process outcome=pool_broken" in log


@pytest.mark.parametrize("mode", ["thread", "process", "async", "sync"])
def test_failed_jobs_are_500_json_and_logged(
    lab: httpx.Client, lab_proc: ServiceProcess, mode: str
) -> None:
    response = job(lab, "fail", mode=mode)
    assert response.status_code == 500
    assert response.json() == {
        "error": "job_failed",
        "detail": response.json()["detail"],
    }
    assert "DeliberateFailure" in response.json()["detail"]
    wait_until(
        lambda: f"task=fail mode={mode} outcome=failed" in lab_proc.output(),
        5,
        "the failure's log line",
    )


def test_dev_mode_async_jobs_work(lab: httpx.Client, lab_proc: ServiceProcess) -> None:
    """unsync raises under -X dev when its async functions are called off its loop thread."""
    assert "dev_mode=True" in lab_proc.output()
    response = job(lab, "sleep", {"ms": 10}, mode="async")
    assert response.status_code == 200
    assert response.json()["thread"] == "unsync-loop"


def test_metrics_count_jobs_queue_and_run_time(http: httpx.Client) -> None:
    assert job(http, "primes", {"n": 100}, mode="thread").status_code == 200
    text = http.get("/metrics").text
    assert 'worker_jobs_total{mode="thread",outcome="ok",task="primes"}' in text
    assert "worker_queue_depth " in text
    assert 'worker_job_run_seconds_bucket{le="0.01",mode="thread",task="primes"}' in text
