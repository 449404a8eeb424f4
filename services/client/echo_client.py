"""An async TCP echo client that runs unchanged on asyncio (stdlib or uvloop) and trio.

It is written once against anyio, which maps every call onto whichever event
loop runs it: ``anyio.run(main, backend="trio")``, ``backend="asyncio"``, or
``backend="asyncio", backend_options={"use_uvloop": True}``; under a plain
``trio.run`` or ``asyncio.run`` it works as well.

The class shows the async protocols in the roles they were made for:

- ``async with EchoClient(host, port) as client:`` connects in ``__aenter__`` and
  always closes in ``__aexit__``: after normal exit, an exception or a cancellation.
- ``await client.echo(data)`` sends ``data`` and reads until exactly ``len(data)``
  bytes are back, however TCP split or coalesced them.
- ``async for chunk in client:`` yields what the server sends until it sends EOF
  (``__aiter__``/``__anext__``); with ``send`` and ``send_eof`` it demonstrates
  half-close: the client stops writing and still reads every echoed byte.
"""

from __future__ import annotations

import logging
import os
import time
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import SocketStream

from services.client.errors import EarlyEOFError, EchoConnectionError, EchoError, EchoTimeoutError
from services.common.logs import log_event

logger = logging.getLogger(__name__)

# Most bytes asked for in one receive: the servers read 64 KiB at a time, and a
# larger request only makes the runtime allocate (then shrink) a bigger buffer.
RECV_SIZE = 64 * 1024

# Payloads up to this size are sent whole before the reply is read. Bigger ones are
# sent from a second task while this one reads, because a client that writes
# without reading can fill both directions' socket buffers and deadlock with the
# server (which stops reading when it cannot write). The kernel's default buffers
# on both ends hold several times this much, so the fast path is safe.
INLINE_SEND_LIMIT = 64 * 1024


class EchoClient:
    """One TCP connection to an RFC 862 echo server.

    ``timeout`` (seconds, ``None`` for no limit) bounds connecting and each echo;
    ``echo`` can override it per call. The client is meant for one task at a time
    per direction: a second task reading (or writing) concurrently gets anyio's
    ``BusyResourceError``.

    Counters ``bytes_sent`` and ``bytes_received`` cover the connection's life and
    are logged once, when it closes.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9001, *, timeout: float | None = None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.bytes_sent = 0
        self.bytes_received = 0
        self._stream: SocketStream | None = None
        self._closed = False
        self._broken: EchoError | None = None  # why echo() may not be used any more
        self._progress = 0  # bytes of the current echo received so far (for error messages)
        self._opened_at = 0.0

    # -- lifecycle -------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection (``__aenter__`` calls this).

        Raises :class:`EchoConnectionError` if the server cannot be reached (refused,
        unreachable, unknown host) and :class:`EchoTimeoutError` if that takes longer
        than ``timeout``. Nothing is left open on failure. Connecting twice, or
        after :meth:`aclose`, is a programming error (``RuntimeError``).
        """
        if self._stream is not None or self._closed:
            raise RuntimeError("EchoClient connects once; make a new one to reconnect")
        try:
            with anyio.fail_after(self.timeout):
                self._stream = await anyio.connect_tcp(self.host, self.port)
        except TimeoutError as exc:
            if self.timeout is None:  # the kernel's own connect timeout (ETIMEDOUT)
                raise EchoConnectionError(f"cannot connect to {self.peer}: {_reason(exc)}") from exc
            raise EchoTimeoutError(f"connecting to {self.peer}", self.timeout) from None
        except OSError as exc:
            raise EchoConnectionError(f"cannot connect to {self.peer}: {_reason(exc)}") from exc
        self._opened_at = time.monotonic()
        log_event(logger, "connect", logging.DEBUG, peer=self.peer)

    async def aclose(self) -> None:
        """Close the connection; idempotent, and safe before :meth:`connect`.

        Closing never waits on the peer, so it completes even inside a cancelled
        scope; the socket is closed before this returns or raises. Unread echoed
        bytes are discarded (the kernel may answer them with a reset).
        """
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            await anyio.aclose_forcefully(stream)
        finally:
            log_event(
                logger,
                "close",
                peer=self.peer,
                sent=self.bytes_sent,
                received=self.bytes_received,
                duration_s=time.monotonic() - self._opened_at,
                error=repr(self._broken) if self._broken else "",
            )

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection and let any exception from the body propagate."""
        await self.aclose()

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran (also via ``__aexit__``)."""
        return self._closed

    # -- echo ------------------------------------------------------------------

    # A timeout argument, though flake8-async prefers the caller's cancel scope: the
    # client's job is to turn a late echo into a clear error and mark the stream as
    # out of step, which a scope around the call cannot do. Scopes work as well.
    async def echo(self, data: bytes, *, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        """Send ``data`` and return exactly ``len(data)`` bytes read back.

        The reply is what the server sent, not checked against ``data``: compare
        them to verify the echo. ``timeout`` (default: the client's) bounds the whole
        round trip. Raises :class:`EarlyEOFError` if the server closes first,
        :class:`EchoTimeoutError` on timeout and :class:`EchoConnectionError` if the
        connection breaks; after any of these the stream is out of step, so later
        echoes on this client raise :class:`EchoError`. Bytes sent earlier with
        :meth:`send` must have been read back first, or they are taken as this reply.
        """
        stream = self._usable_stream()
        if self._broken is not None:
            raise EchoError(f"connection to {self.peer} is unusable: {self._broken}")
        limit = self.timeout if timeout is None else timeout
        self._progress = 0
        error: EchoError
        try:
            if limit is None:
                return await self._round_trip(stream, data)
            with anyio.fail_after(limit):
                return await self._round_trip(stream, data)
        except TimeoutError as exc:
            if limit is None:  # not our deadline: the kernel gave up on the connection
                error = self._broken_error(exc)
            else:
                error = EchoTimeoutError(
                    f"echo of {len(data)} bytes to {self.peer}", limit, len(data), self._progress
                )
        except anyio.BrokenResourceError as exc:
            error = self._broken_error(exc)
        except EchoError as exc:
            self._broken = exc
            raise
        self._broken = error
        raise error

    async def _round_trip(self, stream: SocketStream, data: bytes) -> bytes:
        size = len(data)
        if size <= INLINE_SEND_LIMIT:
            await stream.send(data)
            self.bytes_sent += size
            return await self._receive_exactly(stream, size)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.send, data)  # cancelled if the receive fails
                reply = await self._receive_exactly(stream, size)
        except ExceptionGroup as group:
            leaf = _sole_leaf(group)
            if leaf is None:
                raise
            raise leaf from leaf.__cause__  # the group only wrapped it: unwrap
        return reply

    async def _receive_exactly(self, stream: SocketStream, size: int) -> bytes:
        if size == 0:
            return b""
        try:
            first = await stream.receive(min(size, RECV_SIZE))
            self.bytes_received += len(first)
            if len(first) == size:  # the common case for small messages: no copy
                return first
            buffer = bytearray(first)
            self._progress = len(buffer)
            while len(buffer) < size:
                chunk = await stream.receive(min(size - len(buffer), RECV_SIZE))
                self.bytes_received += len(chunk)
                buffer += chunk
                self._progress = len(buffer)
            return bytes(buffer)
        except anyio.EndOfStream:
            raise EarlyEOFError(size, self._progress) from None

    # -- streaming -------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Send all of ``data`` (waits while the kernel's buffer is full).

        Raises :class:`EchoConnectionError` if the connection broke.
        """
        try:
            await self._usable_stream().send(data)
        except anyio.BrokenResourceError as exc:
            raise self._broken_error(exc) from exc
        self.bytes_sent += len(data)

    async def send_eof(self) -> None:
        """Half-close: tell the server nothing more will be sent; reading goes on."""
        try:
            await self._usable_stream().send_eof()
        except anyio.BrokenResourceError as exc:
            raise self._broken_error(exc) from exc

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk the server sent (at most ``RECV_SIZE`` bytes); ends at EOF.

        Chunk boundaries are wherever TCP put them, not where the sender's writes
        ended. Raises :class:`EchoConnectionError` if the connection broke.
        """
        stream = self._usable_stream()
        try:
            chunk = await stream.receive(RECV_SIZE)
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        except anyio.BrokenResourceError as exc:
            raise self._broken_error(exc) from exc
        self.bytes_received += len(chunk)
        return chunk

    # -- helpers ---------------------------------------------------------------

    def _usable_stream(self) -> SocketStream:
        if self._stream is None:
            state = "closed" if self._closed else "not connected"
            raise RuntimeError(f"EchoClient is {state} (use `async with EchoClient(...)`)")
        return self._stream

    def _broken_error(self, exc: BaseException) -> EchoConnectionError:
        error = EchoConnectionError(f"connection to {self.peer} broke: {_reason(exc)}")
        error.__cause__ = exc
        return error


def _reason(exc: BaseException) -> str:
    """The most specific human reason in an exception chain, e.g. 'Connection refused'."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno:
            # Positive: a system errno, whose bare text ("Connection refused") the
            # runtimes dress differently; negative: a resolver (EAI_*) error.
            return os.strerror(current.errno) if current.errno > 0 else str(current.strerror)
        if isinstance(current, BaseExceptionGroup):
            current = current.exceptions[0]
        else:
            current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside (nested) single-member groups, or None if there are more."""
    current: BaseException = group
    while isinstance(current, BaseExceptionGroup):
        if len(current.exceptions) != 1:
            return None
        current = current.exceptions[0]
    return current
