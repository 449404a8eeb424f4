"""Start-up and shutdown of the worker: uvicorn run programmatically on uvloop.

We run ``uvicorn.Server`` ourselves (not ``uvicorn.run``) so that this module,
not uvicorn, owns SIGTERM/SIGINT and the shutdown order:

1. stop taking jobs: POST /jobs answers 503 (the listener stays open, so
   clients waiting for results still get them);
2. drain: queued and running jobs get ``--drain-s`` seconds to finish
   (a second signal cuts this short);
3. cancel the rest: each remaining job is answered 503, async ones are
   cancelled on unsync's loop;
4. stop the HTTP server, then shut the pools down, ending every pool process;
5. exit 0.

Exit statuses: 0 after that orderly shutdown; 1 (``EXIT_START_FAILED``) if the
address cannot be listened on, the pools do not start, or the HTTP server stops
by itself; 2 (``EXIT_USAGE``) for bad settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence

import uvicorn
import uvloop

from services.common import config
from services.common.config import EXIT_START_FAILED
from services.common.logs import log_event, setup_logging
from services.common.shutdown import install_asyncio_signal_handlers
from services.unsync_worker.adapter import UnsyncAdapter
from services.unsync_worker.api import create_app
from services.unsync_worker.jobs import JobService
from services.unsync_worker.metrics import WorkerMetrics
from services.unsync_worker.settings import ENV_PREFIX, PROG, WorkerSettings
from services.unsync_worker.tasks import PUBLIC_TASKS, JobContext, TaskSpec
from services.unsync_worker.work import EchoTarget

logger = logging.getLogger("unsync_worker")

# Starting the forkserver and every pool worker takes well under a second
# unloaded; a loaded 2-core CI machine gets generous room.
WARM_UP_TIMEOUT_S = 30.0

# After the drain, in-flight HTTP responses are already decided: uvicorn only
# needs a moment to write them and close connections.
HTTP_CLOSE_GRACE_S = 2

# Pending connections the kernel queues for us: as many as the job queue could
# want at once, within the usual somaxconn.
LISTEN_BACKLOG = 1024


class _Server(uvicorn.Server):
    """uvicorn's server minus its signal handling, which :func:`serve` owns.

    (uvicorn's own handlers would re-raise the signal after shutdown, and the
    process would then die of SIGTERM instead of exiting 0.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; OSError if the address is unusable."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def load_tasks(enable_test_tasks: bool) -> dict[str, TaskSpec]:
    """The catalogue POST /jobs accepts: the public tasks, plus the test-only ones if enabled."""
    tasks = dict(PUBLIC_TASKS)
    if enable_test_tasks:
        from services.unsync_worker.testing_tasks import TEST_TASKS  # noqa: PLC0415

        tasks.update(TEST_TASKS)
    return tasks


async def serve(settings: WorkerSettings, sock: socket.socket) -> int:
    """Run the worker until a shutdown signal, then shut down in order (module doc).

    Returns the exit status: 0 after an orderly shutdown, EXIT_START_FAILED if
    the pools did not start or the HTTP server stopped without a signal. Pools
    are always shut down. If thread jobs are still running then (they cannot
    be killed, and joining them could take seconds) this does not return: the
    process ends at once with ``os._exit`` and that same status.
    """
    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log_event(logger, "signal", signal=sig.name, again=stop.is_set())
        (force if stop.is_set() else stop).set()

    install_asyncio_signal_handlers(loop, on_signal)

    metrics = WorkerMetrics()
    adapter = UnsyncAdapter(
        settings.threads, settings.processes, on_rebuild=metrics.pool_rebuilds.inc
    )
    adapter.install()
    status = EXIT_START_FAILED  # unless warm-up and serving end normally
    try:
        try:
            await adapter.warm_up(WARM_UP_TIMEOUT_S)
        except Exception as exc:
            log_event(logger, "warm_up_failed", logging.ERROR, error=repr(exc))
            return status
        if stop.is_set():
            status = 0
            return status
        status = await _serve_http(
            settings=settings, sock=sock, adapter=adapter, metrics=metrics, stop=stop, force=force
        )
        return status
    finally:
        adapter.shutdown()
        left = adapter.running_thread_jobs()
        if left:
            if (failure := sys.exc_info()[1]) is not None:  # os._exit would lose it
                logger.error("event=serve_failed", exc_info=failure)
            log_event(logger, "abandoning_thread_jobs", logging.WARNING, jobs=left, status=status)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # threads cannot be killed, and joining them could take seconds


async def _serve_http(
    *,
    settings: WorkerSettings,
    sock: socket.socket,
    adapter: UnsyncAdapter,
    metrics: WorkerMetrics,
    stop: asyncio.Event,
    force: asyncio.Event,
) -> int:
    tasks = load_tasks(settings.enable_test_tasks)
    context = JobContext(
        trio_echo=EchoTarget("trio", settings.trio_echo_addr.host, settings.trio_echo_addr.port),
        uvloop_echo=EchoTarget(
            "uvloop", settings.uvloop_echo_addr.host, settings.uvloop_echo_addr.port
        ),
    )
    service = JobService(
        adapter,
        metrics,
        concurrency=settings.concurrency,
        queue_size=settings.queue_size,
        sync_max_jobs=settings.sync_max_jobs,
    )
    service.start()
    app = create_app(
        service=service,
        tasks=tasks,
        public_tasks=PUBLIC_TASKS,
        context=context,
        settings=settings,
        metrics=metrics,
    )
    server = _Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=HTTP_CLOSE_GRACE_S,
        )
    )
    server_task = asyncio.create_task(server.serve(sockets=[sock]))
    stop_task = asyncio.create_task(stop.wait())
    host, port = sock.getsockname()[:2]
    log_event(
        logger,
        "listening",
        host=host,
        port=port,
        pid=os.getpid(),
        threads=settings.threads,
        processes=settings.processes,
        concurrency=settings.concurrency,
        queue_size=settings.queue_size,
        sync_max_jobs=settings.sync_max_jobs,
        test_tasks=settings.enable_test_tasks,
        dev_mode=sys.flags.dev_mode,
    )
    await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if server_task.done():  # the server ended without a signal: report how
        await service.drain(0.0, force)
        exc = server_task.exception()
        log_event(logger, "server_stopped", logging.ERROR, error=repr(exc))
        return EXIT_START_FAILED
    await service.drain(settings.drain_s, force)
    server.should_exit = True
    await server_task
    log_event(logger, "stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m services.unsync_worker``: parse settings, bind, serve; the exit status.

    Bad settings print one line and exit 2 (``EXIT_USAGE``); an address that
    cannot be listened on prints one line and returns ``EXIT_START_FAILED`` (1),
    as the echo servers do; otherwise the status :func:`serve` returns (0 after
    SIGTERM/SIGINT and an orderly shutdown).
    """
    settings = config.load_settings(
        WorkerSettings,
        prog=PROG,
        env_prefix=ENV_PREFIX,
        description="HTTP job worker: unsync decides thread, event loop or process.",
        argv=argv,
    )
    if problem := settings.problem():
        config.fail(PROG, problem)
    setup_logging(settings.log_level)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        print(
            f"{PROG}: error: --host/--port: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_START_FAILED
    with sock, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, sock))
