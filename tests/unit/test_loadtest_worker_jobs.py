"""The worker user's job mix and answer checks, against the worker's real task list."""

from __future__ import annotations

import json

import pytest

from loadtest import worker_jobs
from loadtest.worker_jobs import JOB_KINDS, PlannedJob, check_job_response, plan

work = pytest.importorskip("services.unsync_worker.work")


def tasks_body() -> dict[str, object]:
    """The worker's own GET /tasks body, built from its catalogue."""
    from services.unsync_worker.tasks import PUBLIC_TASKS  # noqa: PLC0415

    return {
        "tasks": [
            {"name": spec.name, "modes": spec.modes, "auto_mode": spec.written}
            for spec in PUBLIC_TASKS.values()
        ]
    }


def kind(name: str) -> worker_jobs.JobKind:
    return next(k for k in JOB_KINDS if k.task == name)


def test_expected_results_match_the_worker_code() -> None:
    assert work.count_primes_below(worker_jobs.PRIMES_N) == worker_jobs.PRIMES_BELOW_N
    digest = work.pbkdf2_digest(worker_jobs.PBKDF2_ITERATIONS)
    assert kind("pbkdf2").check_result({"digest": digest}) is None


def test_plan_covers_every_offered_mode_with_weights() -> None:
    jobs = plan(tasks_body(), ["auto", "async", "thread", "process", "sync"])
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.name] = counts.get(job.name, 0) + 1
    assert counts["jobs:sleep:async"] == 3
    assert counts["jobs:primes:thread"] == 2
    assert counts["jobs:echo_probe:sync"] == 1
    assert "jobs:primes:async" not in counts  # the worker does not offer it
    assert "jobs:echo_probe:process" not in counts
    auto = {j.kind.task: j.expected_mode for j in jobs if j.mode == "auto"}
    assert auto == {
        "primes": "process",
        "pbkdf2": "process",
        "sleep": "async",
        "echo_probe": "async",
    }


def test_plan_keeps_only_wanted_modes() -> None:
    jobs = plan(tasks_body(), ["thread"])
    assert {j.mode for j in jobs} == {"thread"}
    assert plan(tasks_body(), ["async"]) and all(
        j.mode == "async" for j in plan(tasks_body(), ["async"])
    )


def test_plan_rejects_a_body_that_is_not_a_task_list() -> None:
    with pytest.raises(ValueError, match="tasks"):
        plan(["primes"], ["auto"])


PRIMES_THREAD = PlannedJob(kind("primes"), "thread", "thread")


def answer(**fields: object) -> str:
    body = {"task": "primes", "mode": "thread", "result": worker_jobs.PRIMES_BELOW_N, **fields}
    return json.dumps(body)


@pytest.mark.parametrize(
    ("status", "text", "problem"),
    [
        (200, answer(), None),
        (503, '{"error": "queue_full"}', "HTTP 503"),
        (None, None, "HTTP None"),
        (200, "<html>", "not JSON"),
        (200, "[1]", "not a JSON object"),
        (200, answer(mode="process"), "expected 'primes' in mode 'thread'"),
        (200, answer(task="sleep"), "response names 'sleep'"),
        (200, answer(result=1228), "got 1228, expected 1229"),
    ],
)
def test_check_job_response(status: int | None, text: str | None, problem: str | None) -> None:
    found = check_job_response(PRIMES_THREAD, status, text)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_result_checks_of_the_other_kinds() -> None:
    assert kind("sleep").check_result({"slept_ms": 20}) is None
    assert kind("sleep").check_result({"slept_ms": 3}) is not None
    probe = {"target": "trio", "count": worker_jobs.PROBE_COUNT, "size": worker_jobs.PROBE_SIZE}
    assert kind("echo_probe").check_result({"targets": [probe, probe]}) is None
    assert kind("echo_probe").check_result({"targets": [probe]}) is not None
    assert kind("pbkdf2").check_result({"digest": "00"}) is not None
