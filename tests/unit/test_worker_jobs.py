"""The job service's sync lane on a real event loop: turns, the limit, the drain.

Sync jobs are plain calls on the loop's thread and never touch unsync, so a
:class:`JobService` runs them here without HTTP or pools, on the stdlib loop
and on uvloop (the server's). A socket pair shows what the loop did between
two sync jobs: each job makes a socket readable, and only a loop that polls
its sockets and runs the woken task before the next job records it in order.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from services.unsync_worker.adapter import UnsyncAdapter, inline
from services.unsync_worker.jobs import JobService, Outcome, Rejected
from services.unsync_worker.metrics import WorkerMetrics
from services.unsync_worker.tasks import TaskArgs, TaskSpec
from services.unsync_worker.work import Ran, ran

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}

# Generous bound on a whole scenario: its sync jobs take microseconds each.
SCENARIO_TIMEOUT_S = 10.0

# A job's timeout: never reached here.
JOB_TIMEOUT_S = 10.0


def run(loop: str, scenario: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(asyncio.wait_for(scenario, SCENARIO_TIMEOUT_S))


def sync_task(fn: Callable[..., Ran]) -> TaskSpec:
    return TaskSpec(
        name=fn.__name__,
        kind="cpu",
        description="test",
        args_model=TaskArgs,
        written="sync",
        runners={"sync": inline(fn)},
    )


def make_service(*, concurrency: int = 3, sync_max_jobs: int = 16) -> JobService:
    """A started service; its adapter is never installed (sync jobs do not use it)."""
    service = JobService(
        UnsyncAdapter(1, 1),
        WorkerMetrics(),
        concurrency=concurrency,
        queue_size=16,
        sync_max_jobs=sync_max_jobs,
    )
    service.start()
    return service


def _noop(n: int) -> Ran:
    return ran(time.monotonic(), n)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_loop_serves_sockets_between_sync_jobs(loop: str) -> None:
    """Four queued sync jobs on three consumers: a socket task runs between every two."""
    events: list[str] = []

    async def scenario() -> list[Outcome]:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=ours)

        def mark(n: int) -> Ran:  # the sync job: record itself, wake the watcher
            events.append(f"job {n}")
            theirs.send(b"x")
            return ran(time.monotonic(), n)

        async def watch() -> None:
            while await reader.read(1):
                events.append("served")

        watcher = asyncio.create_task(watch())
        service = make_service(concurrency=3)
        spec = sync_task(mark)
        jobs = [service.submit(spec, "sync", {"n": n}, JOB_TIMEOUT_S) for n in range(4)]
        outcomes = await asyncio.gather(*(job.done for job in jobs))
        await service.drain(0.0, asyncio.Event())
        theirs.close()  # EOF ends the watcher
        await watcher
        writer.close()
        await writer.wait_closed()
        return outcomes

    outcomes = run(loop, scenario())
    assert [o.status for o in outcomes] == [200] * 4
    assert [o.body["result"] for o in outcomes] == [0, 1, 2, 3]
    assert [e for e in events if e.startswith("job")] == ["job 0", "job 1", "job 2", "job 3"]
    back_to_back = [
        (a, b) for a, b in itertools.pairwise(events) if a.startswith("job") and b.startswith("job")
    ]
    assert not back_to_back, events


@pytest.mark.parametrize("loop", LOOPS)
def test_sync_jobs_beyond_the_limit_are_refused_until_answered(loop: str) -> None:
    async def scenario() -> None:
        service = make_service(sync_max_jobs=2)
        spec = sync_task(_noop)
        first = [service.submit(spec, "sync", {"n": n}, JOB_TIMEOUT_S) for n in range(2)]
        assert service.sync_jobs == 2
        with pytest.raises(Rejected) as refused:
            service.submit(spec, "sync", {"n": 2}, JOB_TIMEOUT_S)
        outcome = refused.value.outcome
        assert (outcome.status, outcome.body["error"]) == (503, "sync_busy")
        assert outcome.headers["Retry-After"] == "1"
        await asyncio.gather(*(job.done for job in first))
        assert service.sync_jobs == 0
        again = service.submit(spec, "sync", {"n": 3}, JOB_TIMEOUT_S)
        assert (await again.done).status == 200
        await service.drain(0.0, asyncio.Event())

    run(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_drain_cut_short_answers_every_sync_job(loop: str) -> None:
    """The drain is cut short while two sync jobs wait for their turn: each is answered 503."""

    async def scenario() -> tuple[list[Outcome], int]:
        service = make_service(concurrency=3)
        force = asyncio.Event()

        def second_signal(n: int) -> Ran:  # runs first; cuts the drain short, as a 2nd SIGTERM
            force.set()
            return ran(time.monotonic(), n)

        spec = sync_task(second_signal)
        jobs = [service.submit(spec, "sync", {"n": n}, JOB_TIMEOUT_S) for n in range(3)]
        await service.drain(JOB_TIMEOUT_S, force)
        assert all(job.done.done() for job in jobs)
        return [job.done.result() for job in jobs], service.sync_jobs

    outcomes, left = run(loop, scenario())
    assert [o.status for o in outcomes] == [200, 503, 503]
    assert [o.body.get("error") for o in outcomes[1:]] == ["shutting_down"] * 2
    assert left == 0
