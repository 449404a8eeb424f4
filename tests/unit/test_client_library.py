"""EchoClient against small real servers on loopback, on asyncio, uvloop and trio.

The servers here are fixtures, not mocks: real listening sockets in the test's
own event loop, each with one behaviour the client must handle (faithful echo,
echo in 1-byte pieces, closing early, never answering, watching for the
client's close). The real echo services are exercised in
tests/integration/test_client_services.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from services.client import (
    EarlyEOFError,
    EchoClient,
    EchoConnectionError,
    EchoError,
    EchoTimeoutError,
)
from services.client.echo_client import INLINE_SEND_LIMIT, RECV_SIZE
from services.common.ports import free_port

pytestmark = pytest.mark.anyio

# Bounds every wait on the fixture servers' side: far above a loopback round trip.
WAIT_S = 10.0

Handler = Callable[[SocketStream], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """Serve ``handler`` on a free loopback port for the block; yields the port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        yield listener.extra(SocketAttribute.local_port)
        tg.cancel_scope.cancel()  # stop serving before the listener closes


async def receive_until_eof(stream: SocketStream) -> bytes:
    """Everything the peer sends until it closes (EOF or reset)."""
    data = bytearray()
    try:
        async for chunk in stream:
            data += chunk
    except anyio.BrokenResourceError:
        pass
    return bytes(data)


async def echo_handler(stream: SocketStream) -> None:
    """RFC 862: every byte back, in order; on the client's EOF, EOF back and close."""
    async with stream:
        try:
            async for chunk in stream:
                await stream.send(chunk)
            await stream.send_eof()
        except anyio.BrokenResourceError:
            pass


async def byte_by_byte_handler(stream: SocketStream) -> None:
    """Echo, but each byte in its own send: the client sees many small segments."""
    async with stream:
        try:
            async for chunk in stream:
                for i in range(len(chunk)):
                    await stream.send(chunk[i : i + 1])
        except anyio.BrokenResourceError:
            pass


def early_close_handler(wanted: int, echo_back: int) -> Handler:
    """Read ``wanted`` bytes, echo the first ``echo_back`` of them, then close."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            received = bytearray()
            while len(received) < wanted:
                received += await stream.receive()
            if echo_back:
                await stream.send(bytes(received[:echo_back]))

    return handle


class CloseWatcher:
    """A server that reads and never answers, and records when the client closed.

    ``on_data`` runs once, when the first bytes arrive.
    """

    def __init__(self, on_data: Callable[[], None] = lambda: None) -> None:
        self.closed = anyio.Event()
        self.received = b""
        self._on_data = on_data

    async def __call__(self, stream: SocketStream) -> None:
        async with stream:
            try:
                first = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                first = b""
            else:
                self._on_data()
            self.received = first + await receive_until_eof(stream) if first else b""
            self.closed.set()

    async def wait_closed(self) -> None:
        with anyio.fail_after(WAIT_S):
            await self.closed.wait()


# -- echo ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [1, 7, 1024, INLINE_SEND_LIMIT, INLINE_SEND_LIMIT + 1, 3 * RECV_SIZE + 5, 8 * 1024 * 1024],
)
async def test_echo_returns_exactly_the_bytes_sent(size: int) -> None:
    # 8 MiB is far beyond the socket buffers: sending it all before reading
    # would deadlock, so this also proves the concurrent send path.
    payload = os.urandom(size)
    async with serving(echo_handler) as port, EchoClient("127.0.0.1", port, timeout=WAIT_S) as c:
        assert await c.echo(payload) == payload
        assert await c.echo(payload[:1]) == payload[:1]  # stream still in step
        assert c.bytes_sent == c.bytes_received == size + 1


async def test_echo_reassembles_a_reply_split_into_single_bytes() -> None:
    payload = os.urandom(300)
    async with (
        serving(byte_by_byte_handler) as port,
        EchoClient("127.0.0.1", port, timeout=WAIT_S) as c,
    ):
        for _ in range(3):
            assert await c.echo(payload) == payload


async def test_echo_of_nothing_returns_nothing() -> None:
    async with serving(echo_handler) as port, EchoClient("127.0.0.1", port) as c:
        assert await c.echo(b"") == b""
        assert await c.echo(b"x") == b"x"


# -- half-close and async iteration ----------------------------------------------


async def test_iteration_yields_everything_up_to_eof_after_send_eof() -> None:
    parts = [os.urandom(n) for n in (1, 5000, 200_000)]
    async with serving(echo_handler) as port, EchoClient("127.0.0.1", port, timeout=WAIT_S) as c:
        for part in parts:
            await c.send(part)
        await c.send_eof()
        with anyio.fail_after(WAIT_S):
            chunks = [chunk async for chunk in c]
    assert b"".join(chunks) == b"".join(parts)
    assert all(0 < len(chunk) <= RECV_SIZE for chunk in chunks)


# -- early EOF, timeouts, refused connections --------------------------------------


@pytest.mark.parametrize(
    ("size", "echo_back"),
    [(100, 0), (100, 40), (200_000, 1000)],  # the last takes the concurrent-send path
)
async def test_early_eof_raises_with_how_far_the_echo_got(size: int, echo_back: int) -> None:
    async with (
        serving(early_close_handler(size, echo_back)) as port,
        EchoClient("127.0.0.1", port, timeout=WAIT_S) as c,
    ):
        with pytest.raises(EarlyEOFError) as info:  # not wrapped in an ExceptionGroup
            await c.echo(b"e" * size)
        assert (info.value.expected, info.value.received) == (size, echo_back)
        assert f"after echoing {echo_back} of {size} bytes" in str(info.value)
        assert isinstance(info.value, ConnectionError)
        with pytest.raises(EchoError, match="unusable"):
            await c.echo(b"again")


@pytest.mark.parametrize("size", [3, 300_000])  # the inline and the concurrent-send path
async def test_timeout_raises_and_marks_the_connection_unusable(size: int) -> None:
    watcher = CloseWatcher()
    async with serving(watcher) as port:
        async with EchoClient("127.0.0.1", port) as c:
            with pytest.raises(EchoTimeoutError) as info:
                await c.echo(b"t" * size, timeout=0.1)
            assert isinstance(info.value, TimeoutError)
            assert (info.value.expected, info.value.received) == (size, 0)
            with pytest.raises(EchoError, match="unusable"):
                await c.echo(b"abc")
        await watcher.wait_closed()


async def test_refused_connection_raises_a_one_line_connection_error() -> None:
    port = free_port()  # nothing listens there any more
    entered = False
    with pytest.raises(EchoConnectionError) as info:
        async with EchoClient("127.0.0.1", port, timeout=WAIT_S):
            entered = True
    assert not entered
    message = str(info.value)
    assert message == f"cannot connect to 127.0.0.1:{port}: Connection refused"


# -- the context manager always closes ---------------------------------------------


async def test_context_manager_closes_the_socket_when_the_body_raises() -> None:
    watcher = CloseWatcher()
    async with serving(watcher) as port:
        with pytest.raises(ValueError, match="boom"):  # the body's own error, unwrapped
            async with EchoClient("127.0.0.1", port) as c:
                await c.send(b"before the error")
                raise ValueError("boom")
        assert c.closed
        await watcher.wait_closed()  # the server saw EOF or a reset: the socket is closed
        assert watcher.received == b"before the error"


async def test_context_manager_closes_the_socket_when_cancelled() -> None:
    scope = anyio.CancelScope()
    watcher = CloseWatcher(on_data=scope.cancel)  # cancel once the server has the bytes
    async with serving(watcher) as port:
        with scope:
            async with EchoClient("127.0.0.1", port) as c:
                await c.send(b"ping")
                async for _ in c:  # the server never answers: only cancellation ends this
                    pytest.fail("the server sent something")
        assert scope.cancelled_caught
        assert c.closed
        await watcher.wait_closed()
        assert watcher.received == b"ping"


async def test_misuse_is_a_runtime_error() -> None:
    client = EchoClient("127.0.0.1", 9)
    with pytest.raises(RuntimeError, match="not connected"):
        await client.echo(b"x")
    async with serving(echo_handler) as port:
        client = EchoClient("127.0.0.1", port)
        async with client:
            with pytest.raises(RuntimeError, match="connects once"):
                await client.connect()
        with pytest.raises(RuntimeError, match="closed"):
            await client.send(b"x")
        await client.aclose()  # idempotent
