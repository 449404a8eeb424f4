"""The job service: a bounded queue of jobs, consumer tasks, timeouts and the drain.

The course's queue pattern: HTTP handlers put jobs on a bounded
``asyncio.Queue`` (full → 503 at once, never an unbounded backlog), and a fixed
number of consumer tasks take them off and run them through the unsync adapter.
Every job ends with exactly one :class:`Outcome` (success or a JSON error with
its HTTP status) that its handler awaits, and one log line.

Sync jobs are plain calls on this loop's thread, so they need two extra bounds:
at most ``sync_max_jobs`` of them are accepted at once, and they run one at a
time with a turn of the loop before each (see :meth:`JobService._run_sync`), so
health checks and other requests are answered between two sync jobs however
many are queued.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from services.common.logs import log_event
from services.unsync_worker.adapter import Mode, PoolUnavailable, Submitted, UnsyncAdapter
from services.unsync_worker.metrics import WorkerMetrics
from services.unsync_worker.tasks import TaskSpec
from services.unsync_worker.work import EchoError, Ran

logger = logging.getLogger("unsync_worker.jobs")

# Seconds a client is told to wait before retrying a 503: about one short job.
RETRY_AFTER_S = 1

# Loop time left to everything else before each sync job starts. A timer, not
# sleep(0): sleep(0) gives one callback hop, while a request woken by a socket
# needs several (read, parse, handler task, reply); 1 ms is libuv's timer
# resolution and runs those chains in full, at ~0.5% of a 200 ms sync job.
SYNC_TURN_GAP_S = 0.001


@dataclass(frozen=True)
class Outcome:
    """What a job's HTTP response will be: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


def error(status: int, code: str, detail: str, *, retry: bool = False) -> Outcome:
    """An error outcome: ``{"error": code, "detail": detail}``, Retry-After on request."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else {}
    return Outcome(status, {"error": code, "detail": detail}, headers)


class Rejected(Exception):
    """The job was not queued; ``outcome`` is the response to send instead."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.body["detail"])
        self.outcome = outcome


@dataclass
class Job:
    """One accepted request. ``done`` resolves exactly once, with its Outcome."""

    id: int
    spec: TaskSpec
    mode: Mode
    kwargs: dict[str, Any]
    timeout_s: float
    accepted: float
    done: asyncio.Future[Outcome]

    @property
    def deadline(self) -> float:
        return self.accepted + self.timeout_s


class JobService:
    """Queue + consumers. Start with :meth:`start`; stop with :meth:`drain`.

    Runs entirely on the server's event loop thread.
    """

    def __init__(
        self,
        adapter: UnsyncAdapter,
        metrics: WorkerMetrics,
        *,
        concurrency: int,
        queue_size: int,
        sync_max_jobs: int,
    ) -> None:
        self.adapter = adapter
        self.metrics = metrics
        self.concurrency = concurrency
        self.sync_max_jobs = sync_max_jobs
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.accepting = False
        self.running = 0
        self._ids = itertools.count(1)
        self._consumers: list[asyncio.Task[None]] = []
        # Ids of accepted sync jobs without an outcome yet (queued, waiting or running).
        self._sync_jobs: set[int] = set()
        # Held by the one consumer whose sync job runs (or is about to) on this loop.
        self._sync_turn = asyncio.Lock()
        metrics.track_queue(self.queue.qsize)

    def start(self) -> None:
        """Start the consumer tasks and accept jobs."""
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"job-consumer-{i}")
            for i in range(self.concurrency)
        ]
        self.accepting = True

    # ------------------------------------------------------------------ intake

    def submit(self, spec: TaskSpec, mode: Mode, kwargs: dict[str, Any], timeout_s: float) -> Job:
        """Queue a job without waiting.

        Raises :class:`Rejected` (503 + Retry-After) if draining, if the queue is
        full, or for a sync job when ``sync_max_jobs`` sync jobs are already
        accepted and unfinished.
        """
        if not self.accepting:
            self.metrics.rejected_requests.labels("draining").inc()
            raise Rejected(error(503, "shutting_down", "the worker is shutting down", retry=True))
        if mode == "sync" and len(self._sync_jobs) >= self.sync_max_jobs:
            self.metrics.rejected_requests.labels("sync_busy").inc()
            self.metrics.jobs.labels(spec.name, mode, "rejected").inc()
            raise Rejected(
                error(
                    503,
                    "sync_busy",
                    f"the limit of {self.sync_max_jobs} sync jobs waiting or running is "
                    "reached (each blocks the server in turn); retry later or use another mode",
                    retry=True,
                )
            )
        job = Job(
            id=next(self._ids),
            spec=spec,
            mode=mode,
            kwargs=kwargs,
            timeout_s=timeout_s,
            accepted=time.monotonic(),
            done=asyncio.get_running_loop().create_future(),
        )
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.rejected_requests.labels("queue_full").inc()
            self.metrics.jobs.labels(spec.name, mode, "rejected").inc()
            raise Rejected(
                error(
                    503,
                    "queue_full",
                    f"the job queue is full ({self.queue.maxsize} waiting); retry later",
                    retry=True,
                )
            ) from None
        if mode == "sync":
            self._sync_jobs.add(job.id)
        return job

    @property
    def sync_jobs(self) -> int:
        """Sync jobs accepted and not answered yet (what ``sync_max_jobs`` bounds)."""
        return len(self._sync_jobs)

    # ------------------------------------------------------------------ running

    async def _consume(self) -> None:
        while True:
            job = await self.queue.get()
            self.running += 1
            self.metrics.running.inc()
            try:
                await self._run(job)
            finally:
                self.running -= 1
                self.metrics.running.dec()
                self.queue.task_done()

    def _finish(self, job: Job, outcome: Outcome, label: str, ran_: Ran | None = None) -> None:
        """Resolve the job (once), count it and log one line for it."""
        if not job.done.done():
            job.done.set_result(outcome)
        self._sync_jobs.discard(job.id)
        self.metrics.jobs.labels(job.spec.name, job.mode, label).inc()
        fields: dict[str, Any] = {
            "id": job.id,
            "task": job.spec.name,
            "mode": job.mode,
            "outcome": label,
            "status": outcome.status,
        }
        if ran_ is not None:
            run_s = ran_.finished - ran_.started
            self.metrics.run_seconds.labels(job.spec.name, job.mode).observe(run_s)
            fields.update(
                pid=ran_.pid, queued_ms=outcome.body.get("queued_ms"), run_ms=round(run_s * 1000, 3)
            )
        if outcome.ok:
            log_event(logger, "job_done", **fields)
        else:
            fields["detail"] = outcome.body.get("detail", "")
            log_event(logger, "job_failed", logging.WARNING, **fields)

    def _success(self, job: Job, ran_: Ran) -> Outcome:
        return Outcome(
            200,
            {
                "id": job.id,
                "task": job.spec.name,
                "mode": job.mode,
                "result": ran_.result,
                "pid": ran_.pid,
                "thread": ran_.thread,
                "queued_ms": round(max(0.0, ran_.started - job.accepted) * 1000, 3),
                "run_ms": round((ran_.finished - ran_.started) * 1000, 3),
            },
        )

    def _timeout(self, job: Job, what: str) -> Outcome:
        return error(504, "timeout", f"job {job.id} ({job.spec.name}, {job.mode}) {what}")

    async def _run(self, job: Job) -> None:
        if time.monotonic() >= job.deadline:
            self._finish(
                job,
                self._timeout(job, f"waited in the queue past its {job.timeout_s} s timeout"),
                "timeout",
            )
            return
        if job.mode == "sync":
            await self._run_sync(job)
            return
        runner = job.spec.runners[job.mode]
        try:
            submitted = self.adapter.submit(runner, job.kwargs)
        except PoolUnavailable as exc:
            self._finish(job, error(503, "pool_unavailable", str(exc), retry=True), "pool_broken")
            return
        try:
            done, _ = await asyncio.wait(
                {submitted.waiter}, timeout=job.deadline - time.monotonic()
            )
        except asyncio.CancelledError:  # shutdown cut the drain short
            self.adapter.cancel(submitted)
            self._finish(
                job,
                error(
                    503, "shutting_down", "the worker shut down before the job finished", retry=True
                ),
                "cancelled",
            )
            raise
        if done:
            self._settle(job, submitted)
            return
        await self._time_out(job, submitted)

    async def _run_sync(self, job: Job) -> None:
        """Sync mode: a plain call on this event loop thread, blocking it (that is the lesson).

        Sync jobs take turns: one consumer at a time holds ``_sync_turn`` and,
        before its call, leaves the loop :data:`SYNC_TURN_GAP_S` to poll its
        sockets and run whatever is ready, so a request that arrived during
        the previous sync job is answered before the next one starts: a burst
        of sync jobs delays /healthz and other requests by about one job, never
        by the whole burst. (Without this nothing would yield: ``queue.get()``
        returns at once while jobs are queued, and a consumer would run the
        backlog back to back; without the lock, every consumer woken in one
        loop iteration would run its sync job in that iteration.)

        A job that waited past its deadline is answered 504 without running. A
        running one cannot be interrupted, so its timeout is checked when it
        returns. Cancelled (drain cut short) before its call: answered 503.
        """
        try:
            async with self._sync_turn:
                await asyncio.sleep(SYNC_TURN_GAP_S)  # the loop's turn (see above)
                self._call_sync(job)
        except asyncio.CancelledError:
            if not job.done.done():
                self._finish(
                    job,
                    error(
                        503,
                        "shutting_down",
                        "the worker shut down before the job started",
                        retry=True,
                    ),
                    "cancelled",
                )
            raise

    def _call_sync(self, job: Job) -> None:
        if time.monotonic() >= job.deadline:
            self._finish(
                job,
                self._timeout(job, f"waited past its {job.timeout_s} s timeout for its sync turn"),
                "timeout",
            )
            return
        runner = job.spec.runners["sync"]
        try:
            ran_: Ran = runner.call(**job.kwargs)
        except Exception as exc:
            self._failed(job, exc)
            return
        if time.monotonic() > job.deadline:
            self._finish(
                job,
                self._timeout(
                    job,
                    f"ran past its {job.timeout_s} s timeout; sync mode blocks "
                    "the event loop and cannot be interrupted",
                ),
                "timeout",
                ran_,
            )
            return
        self._finish(job, self._success(job, ran_), "ok", ran_)

    def _settle(self, job: Job, submitted: Submitted) -> None:
        waiter = submitted.waiter
        if waiter.cancelled():
            self._finish(
                job, error(503, "shutting_down", "the job was cancelled", retry=True), "cancelled"
            )
            return
        exc = waiter.exception()
        if exc is None:
            ran_ = waiter.result()
            self._finish(job, self._success(job, ran_), "ok", ran_)
        elif isinstance(exc, BrokenProcessPool):
            self._rebuild(submitted)
            self._finish(
                job,
                error(
                    503,
                    "process_pool_broken",
                    "a process-pool worker died while running this job; the pool was "
                    "rebuilt, retry",
                    retry=True,
                ),
                "pool_broken",
            )
        else:
            self._failed(job, exc)

    def _failed(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, EchoError):
            self._finish(job, error(502, "echo_unreachable", str(exc)), "echo_error")
            return
        logger.error(
            "event=job_exception id=%s task=%s mode=%s",
            job.id,
            job.spec.name,
            job.mode,
            exc_info=exc,
        )
        self._finish(job, error(500, "job_failed", f"{type(exc).__name__}: {exc}"), "failed")

    async def _time_out(self, job: Job, submitted: Submitted) -> None:
        """Answer 504 now; stop the job if we can, else hold this consumer until it ends.

        Holding the slot is what bounds abandoned thread/process jobs: they can
        never outnumber the consumers, and each ends within its task's limits.
        """
        stopped = self.adapter.cancel(submitted)
        what = f"passed its {job.timeout_s} s timeout and was " + (
            "cancelled"
            if stopped
            else f"abandoned (a running {job.mode} job cannot be "
            "killed; it ends by itself within its task's limits)"
        )
        self._finish(job, self._timeout(job, what), "timeout")
        if not stopped:
            self.metrics.abandoned.inc()
        try:
            await asyncio.wait({submitted.waiter})
        finally:
            if not stopped:
                self.metrics.abandoned.dec()
        waiter = submitted.waiter
        if not waiter.cancelled() and isinstance(waiter.exception(), BrokenProcessPool):
            self._rebuild(submitted)

    def _rebuild(self, submitted: Submitted) -> None:
        self.adapter.rebuild_if_broken(submitted.executor)

    # ------------------------------------------------------------------ drain

    async def drain(self, drain_s: float, force: asyncio.Event) -> None:
        """Stop accepting, let queued and running jobs finish for up to ``drain_s``.

        Then (or as soon as ``force`` is set) cancel the consumers, answer every
        job still queued or running with 503, and return. Thread and process
        jobs still running are left to :meth:`UnsyncAdapter.shutdown`.
        """
        self.accepting = False
        log_event(
            logger, "draining", queued=self.queue.qsize(), running=self.running, drain_s=drain_s
        )
        joined = asyncio.create_task(self.queue.join())
        forced = asyncio.create_task(force.wait())
        await asyncio.wait({joined, forced}, timeout=drain_s, return_when=asyncio.FIRST_COMPLETED)
        finished = joined.done()
        for task in (joined, forced):
            task.cancel()
        for consumer in self._consumers:
            consumer.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        left = 0
        while not self.queue.empty():
            job = self.queue.get_nowait()
            self.queue.task_done()
            self._finish(
                job,
                error(
                    503, "shutting_down", "the worker shut down before the job started", retry=True
                ),
                "cancelled",
            )
            left += 1
        log_event(logger, "drained", cut_short=not finished, unstarted=left)
