"""RFC 862 TCP echo server on trio, made production-grade.

The shape is trio's tutorial server: ``trio.serve_listeners`` accepts, and each
connection runs as one task in a nursery. Around it:

* Connections run in a separate *handler nursery*, so on SIGTERM/SIGINT the
  accept loop is cancelled at once (listening sockets closed, new connects
  refused) while open connections keep running for the drain window, after
  which the handler nursery's deadline cancels whatever is left.
* ``trio.serve_listeners`` already sleeps 100 ms and retries when accept fails
  with EMFILE/ENFILE/ENOBUFS/ENOMEM, so descriptor exhaustion is survived; its
  per-retry traceback is turned into one structured line per few seconds.
* The per-connection loop calls the socket directly and waits with trio's
  low-level ``wait_readable``/``wait_writable``: one scheduler round trip per
  echoed message, no per-message cancel scope, no per-message allocation
  beyond the received bytes.
* The idle timeout is one server-wide task that looks at each connection's
  byte counters a few times per timeout window and cancels the connection's
  own cancel scope when nothing moved; the hot path only adds to two ints.
* It never reads more while a send is blocked, so a client that sends but
  never reads costs at most one receive buffer (``RECV_SIZE``) of memory.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import platform
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio
from trio.lowlevel import notify_closing, wait_readable, wait_writable

from services.common import config
from services.common.echo import RECV_SIZE, UNKNOWN_PEER, EchoSettings, errno_name, format_address
from services.common.logs import kv, log_event, setup_logging
from services.common.shutdown import SHUTDOWN_SIGNALS

PROG = "trio_echo"
ENV_PREFIX = "TRIO_ECHO_"
DESCRIPTION = (
    "RFC 862 TCP echo server on trio. Every flag has an environment fallback\n"
    f"({ENV_PREFIX}<FLAG>); a flag wins over the environment, which wins over the default."
)

logger = logging.getLogger("trio_echo")

# Idle checks per idle window: a quiet connection is closed between 1 and
# 1 + 2/4 idle windows after its last byte, and the checker wakes rarely.
IDLE_CHECKS_PER_WINDOW = 4

# Upper bound on the pause between idle checks, so a 60 s timeout still closes
# a connection within about 2 s of its deadline.
IDLE_CHECK_MAX_S = 1.0

# Lower bound on that pause, so a tiny timeout cannot turn the checker into a
# busy loop over every connection.
IDLE_CHECK_MIN_S = 0.01

# While descriptors are exhausted trio logs every 100 ms accept retry with a
# traceback; one structured line per 5 s keeps the log readable and still live.
ACCEPT_ERROR_LOG_WINDOW_S = 5.0

# The logger trio.serve_listeners reports accept capacity errors to.
TRIO_ACCEPT_LOGGER = "trio.serve_listeners"

# How a connection ended, as logged in its ``end=`` field.
END_EOF = "eof"  # the client half-closed; everything was echoed, then EOF sent
END_IDLE = "idle"  # no byte moved for idle_timeout_s
END_RESET = "reset"  # the client reset or vanished (ECONNRESET, EPIPE, ...)
END_ERROR = "error"  # any other socket error, or a bug (logged with a traceback)
END_SHUTDOWN = "shutdown"  # still open when the drain window after SIGTERM ran out
END_REJECTED = "rejected"  # over max_connections: closed at once, never echoed


class StartupError(Exception):
    """The server cannot start (e.g. the port is taken); the message names the setting."""


class _Conn:
    """One connection's counters and cancel scope; the hot path only adds to the counters."""

    __slots__ = ("bytes_in", "bytes_out", "moved", "quiet_since", "scope")

    def __init__(self, now: float) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        self.moved = 0  # bytes_in + bytes_out when the idle checker last looked
        self.quiet_since = now  # when the idle checker last saw bytes move
        self.scope = trio.CancelScope()


async def _echo(sock: socket.socket, conn: _Conn) -> None:
    """Echo ``sock`` until the peer's EOF, then send EOF; counts bytes on ``conn``.

    ``sock`` must be non-blocking. Each received chunk is sent completely before
    the next receive, so a peer that does not read stalls this loop (and, via
    TCP flow control, the peer's own sends) instead of growing memory. Socket
    errors propagate (``ConnectionError`` for resets). Every iteration starts
    with a wait for readability, which is also its checkpoint: cancellation is
    delivered there and other tasks get their turn even when data never runs
    out. In request/response traffic the receive queue is empty after each
    echo, so waiting first also saves a receive that would fail with EAGAIN.
    Does not close ``sock``.
    """
    recv = sock.recv
    send = sock.send
    while True:
        await wait_readable(sock)
        try:
            data = recv(RECV_SIZE)
        except BlockingIOError:  # a spurious wake-up
            continue
        if not data:
            break
        size = len(data)
        conn.bytes_in += size
        try:
            sent = send(data)
        except BlockingIOError:
            sent = 0
        if sent == size:
            conn.bytes_out += size
        else:
            await _send_rest(sock, conn, data, sent)
    # Everything received has been handed to the kernel: pass the EOF on.
    with contextlib.suppress(OSError):  # a peer that already reset needs no EOF
        sock.shutdown(socket.SHUT_WR)


async def _send_rest(sock: socket.socket, conn: _Conn, data: bytes, sent: int) -> None:
    """Send ``data[sent:]``, waiting for writability between partial sends."""
    conn.bytes_out += sent
    view = memoryview(data)
    size = len(view)
    while sent < size:
        await wait_writable(sock)
        try:
            count = sock.send(view[sent:])
        except BlockingIOError:
            continue
        sent += count
        conn.bytes_out += count


def _peer_name(sock: trio.socket.SocketType) -> str:
    try:
        address = sock.getpeername()
    except OSError:  # already reset before we looked
        return UNKNOWN_PEER
    return format_address(address)


class _AcceptErrorLog(logging.Filter):
    """Counts trio's accept-retry records and lets one structured line through per window.

    Installed on the ``trio.serve_listeners`` logger, which reports every 100 ms
    retry with a traceback while the process is out of descriptors. The record
    that gets through is rewritten to ``event=accept_error errno=EMFILE ...``.
    """

    def __init__(self, window_s: float) -> None:
        super().__init__()
        self.total = 0
        self._window_s = window_s
        self._quiet_until = -math.inf
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.total += 1
        now = time.monotonic()
        if now < self._quiet_until:
            self._suppressed += 1
            return False
        self._quiet_until = now + self._window_s
        exc = record.exc_info[1] if record.exc_info else None
        code = errno_name(exc) if isinstance(exc, OSError) else "unknown"
        fields = kv(errno=code, retrying=True, total=self.total, suppressed=self._suppressed)
        record.msg, record.args = "event=accept_error %s", (fields,)
        record.exc_info, record.exc_text = None, None
        self._suppressed = 0
        return True


class TrioEchoServer:
    """An echo server for one set of settings; :meth:`run` serves until a shutdown signal."""

    def __init__(self, settings: EchoSettings) -> None:
        self.settings = settings
        self.accepted = 0  # connections served (rejected ones are only counted in `ended`)
        self.ended: Counter[str] = Counter()  # connections by how they ended
        self._conns: set[_Conn] = set()
        self._draining = False
        self._drained: trio.Event | None = None
        self._accept_errors = _AcceptErrorLog(ACCEPT_ERROR_LOG_WINDOW_S)

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, serve until SIGTERM/SIGINT, drain, log a summary, return.

        Signals are caught from the moment this is called, so a signal during
        start-up is a clean shutdown too. Raises :class:`StartupError` if the
        listening sockets cannot be opened. ``task_status`` receives the bound
        addresses as ``host:port`` strings. On the first signal the listeners
        close at once and open connections get ``drain_s`` to finish; a second
        signal, or the end of the window, cancels them.
        """
        self._drained = trio.Event()
        trio_accept_logger = logging.getLogger(TRIO_ACCEPT_LOGGER)
        trio_accept_logger.addFilter(self._accept_errors)
        try:
            with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
                listeners = await self._listen()
                started = trio.current_time()
                # Connections live in this nursery: cancelling the accept loop
                # (inside it) leaves them running until the drain deadline.
                async with trio.open_nursery() as handlers:
                    signum = await self._accept_until_signal(
                        listeners, handlers, signals, task_status
                    )
                    stopping = trio.current_time()
                    self._start_drain(signum, handlers.cancel_scope)
                    await self._wait_drained(signals, handlers.cancel_scope)
        finally:
            trio_accept_logger.removeFilter(self._accept_errors)
        log_event(
            logger,
            "stopped",
            signal=signal.Signals(signum).name,
            accepted=self.accepted,
            rejected=self.ended[END_REJECTED],
            idle_closed=self.ended[END_IDLE],
            cut=self.ended[END_SHUTDOWN],
            eof=self.ended[END_EOF],
            reset=self.ended[END_RESET],
            error=self.ended[END_ERROR],
            accept_errors=self._accept_errors.total,
            drain_used_s=trio.current_time() - stopping,
            uptime_s=stopping - started,
        )

    async def _listen(self) -> list[trio.SocketListener]:
        s = self.settings
        try:
            return await trio.open_tcp_listeners(s.port, host=s.host, backlog=s.backlog)
        except OSError as exc:
            raise StartupError(
                f"--host / --port: cannot listen on {s.host}:{s.port}: {exc.strerror or exc}"
            ) from None

    async def _accept_until_signal(
        self,
        listeners: list[trio.SocketListener],
        handlers: trio.Nursery,
        signals: AsyncIterator[int],
        task_status: trio.TaskStatus[list[str]],
    ) -> int:
        """Accept into ``handlers`` until the first shutdown signal; close the listeners; return it.

        The accept loop (and the idle checker) run in a nursery of their own,
        cancelled on the signal: ``serve_listeners`` then closes the listening
        sockets at once, so new connects are refused, while the connections in
        ``handlers`` keep running.
        """
        s = self.settings
        bound = [format_address(listener.socket.getsockname()) for listener in listeners]
        async with trio.open_nursery() as acceptors:
            await acceptors.start(
                functools.partial(
                    trio.serve_listeners, self._handle, listeners, handler_nursery=handlers
                )
            )
            if s.idle_timeout_s > 0:
                acceptors.start_soon(self._close_idle, s.idle_timeout_s)
            self._log_start(bound)
            task_status.started(bound)
            signum = await anext(signals)
            acceptors.cancel_scope.cancel()
        return signum

    def _log_start(self, bound: Sequence[str]) -> None:
        s = self.settings
        fields: dict[str, Any] = {"host": s.host, "port": bound[0].rpartition(":")[2]}
        if len(bound) > 1:  # e.g. "localhost": one listener per address family
            fields["listen"] = ",".join(bound)
        log_event(
            logger,
            "start",
            **fields,
            loop="trio",
            loop_version=trio.__version__,
            python=platform.python_version(),
            max_connections=s.max_connections,
            idle_timeout_s=s.idle_timeout_s,
            drain_s=s.drain_s,
            backlog=s.backlog,
            pid=os.getpid(),
        )

    def _start_drain(self, signum: int, handlers: trio.CancelScope) -> None:
        self._draining = True
        handlers.deadline = trio.current_time() + self.settings.drain_s
        log_event(
            logger,
            "stopping",
            signal=signal.Signals(signum).name,
            open=len(self._conns),
            drain_s=self.settings.drain_s,
        )
        if not self._conns:
            self._set_drained()

    def _set_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()

    async def _wait_drained(self, signals: AsyncIterator[int], handlers: trio.CancelScope) -> None:
        """Return when every connection has ended; a second signal cancels them at once."""
        assert self._drained is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cut_on_signal, signals, handlers)
            await self._drained.wait()
            nursery.cancel_scope.cancel()

    async def _cut_on_signal(self, signals: AsyncIterator[int], handlers: trio.CancelScope) -> None:
        signum = await anext(signals)
        log_event(
            logger, "drain_cut_short", signal=signal.Signals(signum).name, open=len(self._conns)
        )
        handlers.cancel()

    async def _close_idle(self, idle_s: float) -> None:
        """Cancel connections whose byte counters have not moved for ``idle_s``; runs forever.

        Never closes a connection earlier than ``idle_s`` after its last byte
        and at most two check intervals later.
        """
        interval = min(IDLE_CHECK_MAX_S, max(IDLE_CHECK_MIN_S, idle_s / IDLE_CHECKS_PER_WINDOW))
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for conn in self._conns:  # cancel() only marks: the set is not changed here
                moved = conn.bytes_in + conn.bytes_out
                if moved != conn.moved:
                    conn.moved = moved
                    conn.quiet_since = now
                elif now - conn.quiet_since >= idle_s:
                    conn.scope.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection and log one line about it.

        Over ``max_connections`` the connection is closed at once (``rejected``).
        Otherwise the socket is taken out of the trio stream (detached: the
        stream's later close is a no-op) and echoed until EOF, idle timeout,
        reset or error; the socket is always closed here. Never raises, except
        ``trio.Cancelled`` when the drain window ends, so one connection can
        never take the server down.
        """
        started = trio.current_time()
        tsock = stream.socket
        peer = _peer_name(tsock)
        if len(self._conns) >= self.settings.max_connections:
            tsock.close()
            self._log_end(peer, END_REJECTED, started, None)
            return
        self.accepted += 1
        conn = _Conn(started)
        fd = tsock.detach()
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            os.close(fd)
            self._log_end(peer, END_ERROR, started, conn, errno_name(exc))
            return
        sock.setblocking(False)
        self._conns.add(conn)
        end, detail = END_ERROR, ""
        try:
            with conn.scope:
                await _echo(sock, conn)
                end = END_EOF
            if conn.scope.cancelled_caught:
                end = END_IDLE
        except trio.Cancelled:
            end = END_SHUTDOWN
            raise
        except ConnectionError:  # reset, aborted, broken pipe
            end = END_RESET
        except OSError as exc:
            detail = errno_name(exc)
        except Exception:  # a bug: keep serving the others, but say so loudly
            logger.exception("event=handler_bug peer=%s", peer)
            detail = "bug"
        finally:
            self._conns.discard(conn)
            notify_closing(sock)
            sock.close()
            self._log_end(peer, end, started, conn, detail)

    def _log_end(
        self, peer: str, end: str, started: float, conn: _Conn | None, detail: str = ""
    ) -> None:
        self.ended[end] += 1
        fields: dict[str, Any] = {
            "peer": peer,
            "bytes_in": conn.bytes_in if conn else 0,
            "bytes_out": conn.bytes_out if conn else 0,
            "duration": trio.current_time() - started,
            "end": end,
        }
        if detail:
            fields["error"] = detail
        if end == END_REJECTED:
            fields["rejected"] = self.ended[END_REJECTED]
            fields["open"] = len(self._conns)
        log_event(logger, "connection", **fields)
        if self._draining and not self._conns:
            self._set_drained()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server from flags/env until a shutdown signal; 0 after a clean drain.

    Bad settings print one line and exit 2 (:data:`config.EXIT_USAGE`); an
    address that cannot be listened on prints one line and exits
    :data:`config.EXIT_START_FAILED`.
    """
    settings = config.load_settings(
        EchoSettings, prog=PROG, env_prefix=ENV_PREFIX, description=DESCRIPTION, argv=argv
    )
    setup_logging(settings.log_level)
    try:
        trio.run(TrioEchoServer(settings).run)
    except StartupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return config.EXIT_START_FAILED
    return 0
