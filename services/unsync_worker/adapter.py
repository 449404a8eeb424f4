"""The one module that touches unsync: pools, start method, calls, recovery and shutdown.

unsync 1.4.0 (unmaintained since 2021) decides where a function runs from how
it is written: ``@unsync async def`` runs on unsync's own event loop (a daemon
thread), ``@unsync def`` in ``unsync.thread_executor``, and
``@unsync(cpu_bound=True) def`` in its process pool. Its sharp edges, and what
this module does about each:

* Awaiting an ``Unfuture`` from another loop (uvicorn's uvloop) raises "attached
  to a different loop", and ``.result()`` would block the server's loop. We
  only ever await ``asyncio.wrap_future(unfuture.concurrent_future)``.
* Calling an ``@unsync async def`` from outside unsync's loop thread creates the
  task with the non-thread-safe ``loop.create_task``; under ``-X dev`` or
  ``PYTHONASYNCIODEBUG`` that raises. We make that call *on* unsync's loop
  thread (``call_soon_threadsafe``), so debug mode works too.
* No pool-size setting and no shutdown API: we replace ``unsync.thread_executor``
  and ``unsync._process_executor`` with executors sized from settings, and shut
  them down ourselves.
* The default ``fork`` start method copies the parent's threads and locks (and
  warns on 3.12+): the process pool uses ``forkserver``.
* Pool workers outlive a parent killed by a signal (forkserver alone does not
  help: each worker holds the forkserver's "alive" pipe and its own queue's
  write end, so nothing ever reads EOF). Each worker runs a watchdog thread on
  a pipe whose only write end the parent holds: the parent's death, however it
  happens, is EOF there and the worker exits.
* After ``BrokenProcessPool`` unsync never rebuilds its pool; we do (once per
  broken pool, however many jobs saw it break).
* Its cpu_bound registry is keyed by ``(module, __name__)``, so two functions
  with one name silently share an entry: :func:`cpu_bound` only accepts distinct
  module-level functions.
* Failed jobs nobody awaits vanish silently: the job service awaits every one
  and logs each failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from unsync import unsync

from services.common.logs import log_event
from services.unsync_worker.work import Ran, ran

logger = logging.getLogger("unsync_worker.adapter")

Mode: TypeAlias = Literal["async", "thread", "process", "sync"]

# forkserver: children start from a small, clean server process instead of a
# fork of the threaded HTTP server (fork would copy its locks mid-use).
START_METHOD = "forkserver"

# Imported once by the forkserver so each new pool worker starts with the task
# functions (and their unsync registrations) already loaded.
PRELOAD_MODULES = ["services.unsync_worker.tasks"]

# Names that show up as the "thread" of a job: the evidence of where it ran.
THREAD_PREFIX = "unsync-thread"
LOOP_THREAD_NAME = "unsync-loop"

# Exit status of a pool worker whose parent died (EX_SOFTWARE-like, distinct from 0/1).
PARENT_GONE_EXIT = 70

# How long idle pool workers get to exit on their own at shutdown before we
# terminate them: they only need to read the shutdown sentinel.
POOL_EXIT_GRACE_S = 1.0


class PoolUnavailable(Exception):
    """The process pool cannot take jobs right now (broken or shut down); retry later."""


@dataclass(frozen=True)
class Runner:
    """How a task runs in one mode: an unsync-decorated callable, or a plain one for sync."""

    mode: Mode
    call: Callable[..., Any]


def _check_registrable(fn: Callable[..., Any]) -> None:
    """Refuse functions unsync's ``(module, __name__)`` registry would confuse."""
    if fn.__qualname__ != fn.__name__ or "<" in fn.__qualname__:
        raise TypeError(
            f"{fn.__module__}.{fn.__qualname__}: unsync keys functions by (module, __name__), "
            "so a method or closure could run the wrong function; use a module-level function"
        )
    existing = unsync.unsync_functions.get((fn.__module__, fn.__name__))
    if existing is not None and existing is not fn:
        raise TypeError(f"{fn.__module__}.{fn.__name__}: a different function has this name")


def cpu_bound(fn: Callable[..., Ran]) -> Runner:
    """``@unsync(cpu_bound=True)``: runs ``fn`` in the process pool.

    ``fn`` must be a distinct module-level function whose module registers it
    on import (the worker process imports ``fn.__module__`` to find it); raises
    TypeError otherwise.
    """
    _check_registrable(fn)
    return Runner("process", unsync(cpu_bound=True)(fn))


def threaded(fn: Callable[..., Ran]) -> Runner:
    """``@unsync def``: runs ``fn`` in the thread pool."""
    _check_registrable(fn)
    return Runner("thread", unsync(fn))


def on_loop(fn: Callable[..., Coroutine[Any, Any, Ran]]) -> Runner:
    """``@unsync async def``: runs ``fn`` on unsync's event loop thread."""
    if not asyncio.iscoroutinefunction(fn):
        raise TypeError(f"{fn.__qualname__} is not an async function")
    return Runner("async", unsync(fn))


def inline(fn: Callable[..., Ran]) -> Runner:
    """No unsync at all: sync mode calls ``fn`` on the server's event loop thread."""
    return Runner("sync", fn)


def warm_up() -> Ran:
    """A no-op pool job: starting it makes the pool spawn a worker."""
    return ran(time.monotonic(), None)


_WARM_UP = cpu_bound(warm_up)


def _watch_parent(alive: multiprocessing.connection.Connection) -> None:
    """Block until the parent's end of ``alive`` closes, then end this process at once."""
    with contextlib.suppress(EOFError, OSError):
        alive.recv_bytes()
    os._exit(PARENT_GONE_EXIT)


def _init_pool_worker(alive: multiprocessing.connection.Connection) -> None:
    """Pool worker initializer: leave Ctrl-C to the parent and die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_watch_parent, args=(alive,), name="parent-watchdog", daemon=True
    ).start()


@dataclass
class Submitted:
    """A job handed to unsync: what to await and how to stop it.

    ``waiter`` is an asyncio future on the *server's* loop (never an Unfuture).
    """

    mode: Mode
    waiter: asyncio.Future[Ran]
    source: concurrent.futures.Future[Any]
    executor: concurrent.futures.Executor | None = None
    task_holder: list[asyncio.Future[Any]] = field(default_factory=list)


class UnsyncAdapter:
    """Owns unsync's executors for one server process.

    :meth:`install` must run first; :meth:`shutdown` stops everything it started.
    All methods except the pool-worker hooks run on the server's event loop thread.
    """

    def __init__(
        self, threads: int, processes: int, on_rebuild: Callable[[], None] | None = None
    ) -> None:
        self.threads = threads
        self.processes = processes
        self.pool_rebuilds = 0
        self._on_rebuild = on_rebuild
        self._context = multiprocessing.get_context(START_METHOD)
        # The parent keeps the write end for its whole life and never writes:
        # its closing (at exit or death) is what the pool workers' watchdogs see.
        self._alive_r, self._alive_w = self._context.Pipe(duplex=False)
        self._thread_jobs: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    # ------------------------------------------------------------------ pools

    def install(self) -> None:
        """Replace unsync's executors with ours and name its loop thread."""
        self._context.set_forkserver_preload(PRELOAD_MODULES)
        old_threads = unsync.thread_executor
        unsync.thread_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix=THREAD_PREFIX
        )
        old_threads.shutdown(wait=False)
        unsync._process_executor = self._new_process_pool()
        unsync.thread.name = LOOP_THREAD_NAME  # starts unsync's loop thread if needed
        log_event(
            logger,
            "pools_installed",
            threads=self.threads,
            processes=self.processes,
            start_method=START_METHOD,
        )

    def _new_process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=self._context,
            initializer=_init_pool_worker,
            initargs=(self._alive_r,),
        )

    @property
    def process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        pool: concurrent.futures.ProcessPoolExecutor = unsync._process_executor
        return pool

    def pool_pids(self) -> list[int]:
        """Pids of the process pool's live workers (evidence for logs and tests)."""
        processes = getattr(self.process_pool, "_processes", None) or {}
        return sorted(pid for pid, proc in processes.items() if proc.is_alive())

    async def warm_up(self, timeout_s: float) -> list[int]:
        """Start the forkserver and every pool worker now, not on the first job.

        Returns the workers' pids; raises TimeoutError if they do not all
        answer within ``timeout_s``.
        """
        submitted = [self.submit(_WARM_UP, {}) for _ in range(self.processes)]
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(s.waiter for s in submitted))
        pids = self.pool_pids()
        log_event(logger, "pool_warm", pids=",".join(map(str, pids)))
        return pids

    def rebuild_if_broken(self, broken: concurrent.futures.Executor | None) -> bool:
        """After BrokenProcessPool from ``broken``: replace the pool unsync uses, once.

        Many jobs see one pool break; only the first call (while ``broken`` is
        still unsync's pool) rebuilds, and returns True. The broken pool is shut
        down without waiting (its workers are dead or dying).
        """
        if self._closed or broken is None or broken is not self.process_pool:
            return False
        unsync._process_executor = self._new_process_pool()
        broken.shutdown(wait=False, cancel_futures=True)
        self.pool_rebuilds += 1
        if self._on_rebuild is not None:
            self._on_rebuild()
        log_event(
            logger, "process_pool_rebuilt", level=logging.WARNING, rebuilds=self.pool_rebuilds
        )
        return True

    # ------------------------------------------------------------------ jobs

    def submit(self, runner: Runner, kwargs: dict[str, Any]) -> Submitted:
        """Start ``runner`` with ``kwargs`` in its mode; never blocks the caller's loop.

        Raises :class:`PoolUnavailable` if the process pool is broken or shut
        down (after rebuilding a broken one, so a retry can succeed). Not for
        sync mode: that is a plain call the job service makes itself.
        """
        if runner.mode == "async":
            return self._submit_on_loop(runner, kwargs)
        if runner.mode == "process":
            executor: concurrent.futures.Executor = self.process_pool
            try:
                unfuture = runner.call(**kwargs)
            except BrokenProcessPool:
                self.rebuild_if_broken(executor)
                raise PoolUnavailable("the process pool had broken; it was rebuilt") from None
            except RuntimeError as exc:  # "cannot schedule new futures after shutdown"
                raise PoolUnavailable(str(exc)) from None
        elif runner.mode == "thread":
            executor = unsync.thread_executor
            try:
                unfuture = runner.call(**kwargs)
            except RuntimeError as exc:
                raise PoolUnavailable(str(exc)) from None
            self._thread_jobs.add(unfuture.concurrent_future)
        else:
            raise ValueError(f"submit() does not run {runner.mode} mode")
        # unsync mirrors the executor's future into an asyncio future on its loop
        # that nobody awaits; mark its outcome retrieved there, or asyncio logs
        # "Future exception was never retrieved" for every failed job.
        unsync.loop.call_soon_threadsafe(unfuture.future.add_done_callback, _mark_retrieved)
        source: concurrent.futures.Future[Any] = unfuture.concurrent_future
        return Submitted(runner.mode, asyncio.wrap_future(source), source, executor)

    def _submit_on_loop(self, runner: Runner, kwargs: dict[str, Any]) -> Submitted:
        """Call an ``@unsync async def`` from unsync's own loop thread (see module doc)."""
        handoff: concurrent.futures.Future[Ran] = concurrent.futures.Future()
        holder: list[asyncio.Future[Any]] = []

        def start() -> None:  # runs on unsync's loop thread
            if handoff.cancelled():
                return  # cancelled before it started
            try:
                unfuture = runner.call(**kwargs)
            except BaseException as exc:
                _copy_outcome_exc(handoff, exc)
                return
            holder.append(unfuture.future)
            unfuture.concurrent_future.add_done_callback(lambda cf: _copy_outcome(cf, handoff))

        unsync.loop.call_soon_threadsafe(start)
        return Submitted("async", asyncio.wrap_future(handoff), handoff, None, holder)

    def cancel(self, submitted: Submitted) -> bool:
        """Try to stop a job. True if it will not run on: it had not started, or it is async.

        Async jobs are cancelled on unsync's loop (their ``finally`` blocks run).
        A thread or process job that has started cannot be stopped from outside:
        it is abandoned and ends by itself, bounded by its task's argument limits.
        """
        if submitted.mode == "async":
            # Cancel the handoff (if start() has not run) *and* the task (if it
            # has): both callbacks run in order on unsync's loop thread.
            submitted.source.cancel()

            def cancel_task() -> None:  # runs on unsync's loop thread
                for task in submitted.task_holder:
                    task.cancel()

            unsync.loop.call_soon_threadsafe(cancel_task)
            return True
        return submitted.source.cancel()

    def running_thread_jobs(self) -> int:
        """Thread-pool jobs not finished yet (including abandoned ones)."""
        self._thread_jobs = {f for f in self._thread_jobs if not f.done()}
        return len(self._thread_jobs)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self) -> None:
        """Stop both pools: cancel what has not started, end every pool process.

        Idle workers get :data:`POOL_EXIT_GRACE_S` to exit on the shutdown
        sentinel; any still alive (running an abandoned job) are terminated, then
        killed. Thread jobs cannot be killed: :meth:`running_thread_jobs` says how
        many are left for the caller to abandon at exit.
        """
        if self._closed:
            return
        self._closed = True
        unsync.thread_executor.shutdown(wait=False, cancel_futures=True)
        pool = self.process_pool
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + POOL_EXIT_GRACE_S
        for proc in processes:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
                proc.join(POOL_EXIT_GRACE_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        log_event(
            logger,
            "pools_stopped",
            processes_ended=len(processes),
            thread_jobs_left=self.running_thread_jobs(),
        )


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _copy_outcome(
    source: concurrent.futures.Future[Any], dest: concurrent.futures.Future[Any]
) -> None:
    """Copy a finished future's outcome into ``dest`` unless ``dest`` was cancelled meanwhile."""
    if source.cancelled():
        dest.cancel()
    elif (exc := source.exception()) is not None:
        _copy_outcome_exc(dest, exc)
    else:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            dest.set_result(source.result())


def _copy_outcome_exc(dest: concurrent.futures.Future[Any], exc: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        dest.set_exception(exc)
