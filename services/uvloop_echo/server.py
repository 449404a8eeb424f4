"""The echo server: one ``asyncio.Protocol`` with flow control, on uvloop or asyncio.

Design (why a Protocol and not streams): the transport calls
:meth:`EchoConnection.data_received` with each chunk read and the protocol hands
it straight back to ``transport.write``, which sends at once when the socket
can take it and buffers only the rest. No task, no future, no ``await`` per
message, which is what makes the Protocol the fastest sound shape on both
loops. Sound, because the write buffer is bounded: above :data:`HIGH_WATER`
the transport calls ``pause_writing`` and the connection stops *reading* from
that client until the buffer falls below :data:`LOW_WATER` (``resume_writing``).
A client that sends but never reads therefore costs at most one high-water
mark plus one read of memory, and TCP flow control stalls the client itself.

Everything else is kept off the hot path: the byte counter that
``data_received`` keeps anyway doubles as the idle detector, checked by one
periodic sweep per server (:meth:`EchoServer._tick`); logging is one line per
connection and per lifecycle event, never per message.

Lifecycle and error handling:

* a connection's error (reset, broken pipe, a bug in a callback) closes that
  transport only; the loop's exception handler logs one line and serving goes on;
* ``accept()`` running out of descriptors is survived on both loops (see the
  README's ``uvloop`` section for what each loop does), and if a listener is
  ever found closed while the server is not stopping it is re-created;
* on SIGTERM/SIGINT the listener is closed at once, open connections get the
  drain window, the rest are aborted, and :func:`main` returns 0.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import os
import platform
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import uvloop

from services.common import config
from services.common.echo import UNKNOWN_PEER, errno_name, format_address
from services.common.logs import log_event, setup_logging
from services.common.shutdown import install_asyncio_signal_handlers
from services.uvloop_echo.settings import PROG, UvloopEchoSettings, load

logger = logging.getLogger(PROG)

# Per-connection write-buffer high-water mark: above it we stop reading from that
# client. 64 KiB (asyncio's own default, set explicitly so both loops agree) keeps a
# bulk stream's pipe full while bounding what a never-reading client can pin.
HIGH_WATER = 64 * 1024

# Resume reading once the backlog is down to a quarter: the hysteresis keeps a slow
# reader from toggling pause/resume on every segment.
LOW_WATER = 16 * 1024

# Period of the housekeeping sweep when the idle timeout is off or long: how soon a
# listener found closed behind our back is re-created.
LISTENER_CHECK_S = 1.0

# Shortest sweep period: a tiny idle timeout must not turn the sweep into a busy loop.
MIN_TICK_S = 0.01

# After aborting what is left at the end of the drain, how long to wait for the
# connection_lost callbacks (they run on the next loop iterations) so each logs its line.
CUT_WAIT_S = 1.0

# At most one log line per this many seconds for repeated accept() resource errors:
# CPython 3.11 reports EMFILE once per queued connection, up to `backlog` times a wake-up.
ACCEPT_ERROR_LOG_S = 1.0


class StartError(Exception):
    """The server could not listen; the message is one line for the operator."""


class EchoConnection(asyncio.Protocol):
    """One client connection: echoes every byte, in order, with bounded buffering.

    The connection registers itself with its :class:`EchoServer` and reports back
    when it ends; the server decides how it ended and logs one line for it.
    ``end`` is set only when the server itself closes the connection (``idle``,
    ``shutdown``, ``rejected``); ``unsent`` is how many echoed bytes were still
    buffered when the server cut it.
    """

    __slots__ = (
        "_write",
        "active_at",
        "bytes_in",
        "end",
        "mark_buffered",
        "mark_in",
        "peer",
        "server",
        "started",
        "transport",
        "unsent",
    )

    transport: asyncio.Transport
    _write: Any  # transport.write, bound once: the hot path skips one attribute lookup

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.bytes_in = 0
        self.end = ""
        self.unsent = 0
        self.peer = UNKNOWN_PEER
        self.started = 0.0
        self.active_at = 0.0
        self.mark_in = 0
        self.mark_buffered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._write = self.transport.write
        self.server.connection_made(self)

    def data_received(self, data: bytes) -> None:
        # The hot path: count and echo. No clock, no log, no allocation of our own.
        self.bytes_in += len(data)
        self._write(data)

    def eof_received(self) -> bool:
        """The client half-closed: finish echoing, send our EOF, then close.

        ``write_eof`` and ``close`` both wait for the buffered echo to flush; the
        True return keeps the transport half-open (writable) until then, instead
        of letting the transport close it as soon as this returns. Whether the
        connection ends as ``eof`` is decided in ``connection_lost``: the client
        may still reset it while the echo flushes.
        """
        self.transport.write_eof()
        self.transport.close()
        return True

    def pause_writing(self) -> None:
        # Write buffer above HIGH_WATER: stop reading this client until it drains.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connection_lost(self, exc)


def _end_reason(conn: EchoConnection, exc: BaseException | None) -> str:
    """How ``conn`` ended: the server's own reason if it closed it, else what ``exc`` says.

    ``None`` from the transport means the client's EOF was answered and the
    echo flushed; an exception while flushing (the client reset) wins over that.
    """
    if conn.end:  # idle, shutdown or rejected: the server closed it
        return conn.end
    if exc is None:
        return "eof"
    if isinstance(exc, ConnectionError):  # reset, broken pipe, aborted
        return "reset"
    return "error"


class EchoServer:
    """Owns the listener, the set of open connections and the periodic sweep.

    Create it inside the running loop, then ``await start()``; call
    :meth:`request_shutdown` (the signal handler does) and ``await drain()``.
    """

    def __init__(self, settings: UvloopEchoSettings, loop_name: str) -> None:
        self.settings = settings
        self.loop_name = loop_name
        self.loop = asyncio.get_running_loop()
        self.conns: set[EchoConnection] = set()
        self.port = settings.port
        self.listener: asyncio.AbstractServer | None = None
        self._listen_socks: list[Any] = []
        self._relisten: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        idle = settings.idle_timeout_s
        self.tick_s = max(MIN_TICK_S, min(idle / 4, LISTENER_CHECK_S)) if idle else LISTENER_CHECK_S
        self.stopping = False
        self.stop_signal = ""
        self.stop_requested = asyncio.Event()
        self._wake = asyncio.Event()  # set when the last connection closes while stopping
        self.accepted = 0  # connections served (rejected ones are only counted in `ended`)
        self.ended: Counter[str] = Counter()  # connections by how they ended, as logged
        self.relistened = 0
        self.started_at = 0.0  # loop time when listening began
        self.stopping_at = 0.0  # loop time of the first shutdown signal
        self.accept_errors = 0
        self._accept_error_logged_at = -ACCEPT_ERROR_LOG_S
        self.loop.set_exception_handler(self._on_loop_error)

    # -- listening -------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the configured address and start the sweep.

        Raises :class:`StartError` (one line) if the address cannot be bound.
        """
        try:
            await self._listen()
        except OSError as exc:
            raise StartError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}"
            ) from None
        self.started_at = self.loop.time()
        self._tick_handle = self.loop.call_later(self.tick_s, self._tick)

    async def _listen(self) -> None:
        server = await self.loop.create_server(
            functools.partial(EchoConnection, self),
            self.settings.host,
            self.port,
            backlog=self.settings.backlog,
            reuse_address=True,
        )
        if self.stopping:  # a signal arrived while we were (re)binding
            server.close()
            return
        self.listener = server
        self._listen_socks = list(server.sockets)
        self.port = int(self._listen_socks[0].getsockname()[1])

    def _listener_lost(self) -> bool:
        # A closed listening socket reports fileno -1 (uvloop's PseudoSocket and
        # asyncio's TransportSocket alike); uvloop closes its listener by itself
        # when libuv reports an accept error to it (UVStreamServer._fatal_error).
        return any(sock.fileno() == -1 for sock in self._listen_socks)

    async def _listen_again(self) -> None:
        """Replace a listener that was closed without our asking; retried by the sweep."""
        try:
            if self.listener is not None:
                self.listener.close()
            await self._listen()
        except OSError as exc:
            log_event(
                logger,
                "relisten_failed",
                logging.WARNING,
                error=errno_name(exc),
                retry_s=self.tick_s,
            )
        else:
            self.relistened += 1
            log_event(logger, "relistened", logging.WARNING, port=self.port)
        finally:
            self._relisten = None

    # -- connections -----------------------------------------------------------

    def connection_made(self, conn: EchoConnection) -> None:
        conn.started = conn.active_at = self.loop.time()
        conn.peer = format_address(conn.transport.get_extra_info("peername"))
        if self.stopping or len(self.conns) >= self.settings.max_connections:
            conn.end = "rejected"
            conn.transport.close()
            return
        self.accepted += 1
        conn.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.conns.add(conn)

    def connection_lost(self, conn: EchoConnection, exc: Exception | None) -> None:
        """Decide how ``conn`` ended, count it and log its one line (trio's fields)."""
        self.conns.discard(conn)
        end = _end_reason(conn, exc)
        self.ended[end] += 1
        fields: dict[str, Any] = {
            "peer": conn.peer,
            "bytes_in": conn.bytes_in,
            "bytes_out": conn.bytes_in - conn.unsent,
            "duration": self.loop.time() - conn.started,
            "end": end,
        }
        if end == "error" and exc is not None:
            # As trio logs it: the errno name, or "bug" for an exception from our
            # own callback (the loop_error line has its message).
            fields["error"] = errno_name(exc) if isinstance(exc, OSError) else "bug"
        if end == "rejected":
            fields["rejected"] = self.ended["rejected"]
            fields["open"] = len(self.conns)
        log_event(logger, "connection", **fields)
        if self.stopping and not self.conns:
            self._wake.set()

    def _cut(self, conn: EchoConnection, end: str, *, graceful: bool) -> None:
        """Close ``conn`` now and record why and how many echoed bytes were never sent.

        ``graceful``: send FIN if nothing is buffered; with a backlog, or when not
        graceful, abort (RST): waiting for a client that does not read could be forever.
        """
        conn.end = end
        conn.unsent = conn.transport.get_write_buffer_size()
        if graceful and not conn.unsent:
            conn.transport.close()
        else:
            conn.transport.abort()

    def _tick(self) -> None:
        """The sweep: close idle connections, check the listener. O(connections)."""
        self._tick_handle = self.loop.call_later(self.tick_s, self._tick)
        idle = self.settings.idle_timeout_s
        if idle:
            now = self.loop.time()
            deadline = now - idle
            for conn in list(self.conns):
                if conn.end in ("idle", "shutdown"):
                    continue  # already being cut
                # Progress means bytes came in, or the buffered echo moved (a slow
                # reader); a connection stuck on either side for `idle` s is closed.
                buffered = conn.transport.get_write_buffer_size()
                if conn.bytes_in != conn.mark_in or buffered != conn.mark_buffered:
                    conn.mark_in = conn.bytes_in
                    conn.mark_buffered = buffered
                    conn.active_at = now
                elif conn.active_at <= deadline:
                    self._cut(conn, "idle", graceful=True)
        if not self.stopping and self._relisten is None and self._listener_lost():
            log_event(logger, "listener_lost", logging.WARNING, port=self.port)
            self._relisten = self.loop.create_task(self._listen_again())

    # -- errors ------------------------------------------------------------------

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """One log line per error the loop could not hand to anyone; never a traceback."""
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if isinstance(exc, OSError) and message.startswith("socket.accept()"):
            # asyncio pauses accepting for 1 s and retries; rate-limit the report.
            self.accept_errors += 1
            now = loop.time()
            if now - self._accept_error_logged_at >= ACCEPT_ERROR_LOG_S:
                self._accept_error_logged_at = now
                log_event(
                    logger,
                    "accept_error",
                    logging.WARNING,
                    errno=errno_name(exc),
                    total=self.accept_errors,
                    open=len(self.conns),
                )
            return
        log_event(
            logger,
            "loop_error",
            logging.ERROR,
            message=message,
            error=f"{type(exc).__name__}: {exc}" if exc is not None else "-",
        )

    # -- shutdown ----------------------------------------------------------------

    def request_shutdown(self, sig: signal.Signals) -> None:
        """Signal handler: stop accepting now; a second signal ends the drain early."""
        if self.stopping:
            log_event(logger, "drain_cut_short", signal=sig.name, open=len(self.conns))
            self._wake.set()
            return
        self.stopping = True
        self.stopping_at = self.loop.time()
        self.stop_signal = sig.name
        if self.listener is not None:
            self.listener.close()
        if self._relisten is not None:
            self._relisten.cancel()
        log_event(
            logger,
            "stopping",
            signal=sig.name,
            open=len(self.conns),
            drain_s=self.settings.drain_s,
        )
        if not self.conns:
            self._wake.set()
        self.stop_requested.set()

    async def drain(self) -> None:
        """Give open connections the drain window, then abort the rest and stop the sweep."""
        start = self.loop.time()
        if self.conns:
            try:
                async with asyncio.timeout(self.settings.drain_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
        for conn in list(self.conns):
            self._cut(conn, "shutdown", graceful=False)
        if self.conns:
            self._wake.clear()
            try:
                async with asyncio.timeout(CUT_WAIT_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        # The trio server's summary fields, in its order; `relistened` is this server's own.
        log_event(
            logger,
            "stopped",
            signal=self.stop_signal or "-",
            accepted=self.accepted,
            rejected=self.ended["rejected"],
            idle_closed=self.ended["idle"],
            cut=self.ended["shutdown"],
            eof=self.ended["eof"],
            reset=self.ended["reset"],
            error=self.ended["error"],
            accept_errors=self.accept_errors,
            drain_used_s=self.loop.time() - start,
            uptime_s=self.stopping_at - self.started_at,
            relistened=self.relistened,
        )


async def serve(settings: UvloopEchoSettings, loop_name: str, loop_version: str) -> None:
    """Run the server until SIGTERM/SIGINT, then drain and return.

    Signal handlers are installed before binding, so a signal during start-up
    also ends in an orderly exit. Raises :class:`StartError` if it cannot listen.
    """
    server = EchoServer(settings, loop_name)
    install_asyncio_signal_handlers(server.loop, server.request_shutdown)
    await server.start()
    log_event(
        logger,
        "start",
        host=settings.host,
        port=server.port,
        loop=loop_name,
        loop_version=loop_version,
        python=platform.python_version(),
        max_connections=settings.max_connections,
        idle_timeout_s=settings.idle_timeout_s,
        drain_s=settings.drain_s,
        backlog=settings.backlog,
        pid=os.getpid(),
    )
    await server.stop_requested.wait()
    await server.drain()


def run(settings: UvloopEchoSettings) -> None:
    """Run :func:`serve` on the loop the settings name, with that loop's own runner."""
    if settings.loop == "uvloop":
        uvloop.run(serve(settings, "uvloop", importlib.metadata.version("uvloop")))
    else:
        asyncio.run(serve(settings, "asyncio", platform.python_version()))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse settings (bad ones exit 2), serve, and return the exit status.

    0 after an orderly shutdown; :data:`config.EXIT_START_FAILED` with one line on
    stderr if the server cannot listen.
    """
    settings = load(argv)
    setup_logging(settings.log_level)
    try:
        run(settings)
    except StartError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return config.EXIT_START_FAILED
    return 0
