"""A TCP echo client that verifies every byte and reports each round trip to Locust.

Locust has no TCP user of its own; the documented way is a client that fires
Locust's ``request`` event itself. :class:`EchoClient` does exactly that, with
every field Locust's statistics and listeners use (``request_type``, ``name``,
``response_time``, ``response_length``, ``exception``, ``context``,
``start_time``).

The client uses the standard ``socket`` module and blocking calls. Under Locust,
gevent has monkey-patched that module, so a blocked ``recv`` yields to the other
users; in a plain process (the unit tests) the same code is an ordinary blocking
client. This module does not import Locust or gevent, so importing it patches
nothing.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Protocol

from services.common.logs import log_event

logger = logging.getLogger("loadtest.tcp")

# The request_type Locust shows in its tables and CSVs for these requests.
REQUEST_TYPE = "tcp"

# Whole-round-trip limit: far above any healthy echo (sub-millisecond on
# loopback), short enough that a stuck server shows up as failures within a run.
DEFAULT_TIMEOUT_S = 5.0

# Bytes in flight at most while a payload streams: sending a large payload
# whole before reading would fill both directions' socket buffers and deadlock
# against an echo server that blocks on its own send; 64 KiB always fits.
SEND_WINDOW = 64 * 1024

# Pause before retrying after a failed connect, doubled per consecutive failure
# up to the cap: a user with no wait time must not spin on ECONNREFUSED while a
# server restarts, yet it should be back within a second of the server.
RECONNECT_BACKOFF_S = 0.05
RECONNECT_BACKOFF_MAX_S = 1.0


class RequestEvent(Protocol):
    """What the client needs from Locust's ``environment.events.request``."""

    def fire(self, *, reverse: bool = False, **kwargs: Any) -> None: ...


class EchoMismatch(Exception):
    """The server sent back bytes other than those sent (a real failure, not a timeout)."""

    def __init__(self, offset: int, size: int) -> None:
        super().__init__(f"echoed bytes differ from those sent at offset {offset} of {size}")
        self.offset = offset
        self.size = size


class ShortEcho(ConnectionError):
    """The server closed the connection before echoing the whole payload."""

    def __init__(self, received: int, size: int) -> None:
        super().__init__(f"connection closed after {received} of {size} echoed bytes")
        self.received = received
        self.size = size


def first_difference(sent: bytes | bytearray, received: bytes | bytearray) -> int:
    """Offset of the first byte where ``received`` differs from ``sent`` (or the shorter length)."""
    for offset, (a, b) in enumerate(zip(sent, received, strict=False)):
        if a != b:
            return offset
    return min(len(sent), len(received))


class EchoClient:
    """One persistent connection to an echo server, used by one Locust user.

    :meth:`echo` connects lazily, so a client is cheap to create and a failed
    round trip only costs the connection: after any error the socket is closed
    (its stream position is unknown) and the next call reconnects. The client
    is not safe to share between users; each user owns one.
    """

    def __init__(
        self,
        host: str,
        port: int,
        request_event: RequestEvent,
        *,
        name: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.timeout_s = timeout_s
        self._request_event = request_event
        self._target = f"{host}:{port}"
        self._url = f"tcp://{self._target}"
        self._context: dict[str, object] = {"target": self._target, "payload_bytes": 0}
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._view = memoryview(self._buf)
        self._served = 0  # round trips on the current connection
        self._failed_connects = 0  # consecutive failed connects, for backoff and logs
        self.connections = 0  # successful connects over the client's life

    # -- public -----------------------------------------------------------------

    def echo(self, payload: bytes | bytearray) -> bool:
        """Send ``payload``, read until as many bytes came back, and check they are equal.

        Fires exactly one ``request`` event per call that completes, success or
        failure; returns True on success. The event's ``context`` is
        ``{"target": "host:port", "payload_bytes": n}``, one mapping shared by
        the client's events (listeners must not mutate it). Errors (connect failure, timeout,
        early close, byte mismatch) are reported as the event's ``exception``
        and never raised. A ``BaseException`` such as gevent's ``GreenletExit``
        (Locust stopping the user) or ``KeyboardInterrupt`` closes the socket
        and propagates unchanged, with no event: the round trip did not finish.
        """
        size = len(payload)
        if self._context["payload_bytes"] != size:  # one mapping per client, rebuilt on change
            self._context = {"target": self._target, "payload_bytes": size}
        if self._sock is None and self._failed_connects:
            time.sleep(
                min(RECONNECT_BACKOFF_S * 2 ** (self._failed_connects - 1), RECONNECT_BACKOFF_MAX_S)
            )
        start_time = time.time()
        start = time.perf_counter()
        received = 0
        exception: Exception | None = None
        deadline = start + self.timeout_s
        try:
            sock = self._sock or self._connect(deadline)
            received = self._round_trip(sock, payload, deadline)
            if self._buf != payload:
                raise EchoMismatch(first_difference(payload, self._buf), size)
            self._served += 1
        except Exception as exc:  # reported to Locust below, never swallowed silently
            exception = exc
            self._drop(reason=type(exc).__name__)
        except BaseException:  # GreenletExit, KeyboardInterrupt: not ours to handle
            self._drop(reason="interrupted")
            raise
        self._request_event.fire(
            request_type=REQUEST_TYPE,
            name=self.name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=received,
            exception=exception,
            context=self._context,
            start_time=start_time,
            url=self._url,
        )
        return exception is None

    def close(self) -> None:
        """Close the connection if one is open; the next :meth:`echo` reconnects."""
        self._drop(reason="closed")

    # -- internals --------------------------------------------------------------

    def _remaining(self, deadline: float, received: int = 0, size: int = 0) -> float:
        """Seconds left until ``deadline`` (perf_counter); TimeoutError once none are left."""
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError(
                f"round trip incomplete after {self.timeout_s}s ({received} of {size} bytes back)"
            )
        return remaining

    def _connect(self, deadline: float) -> socket.socket:
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=self._remaining(deadline)
            )
        except OSError as exc:
            self._failed_connects += 1
            if self._failed_connects == 1:  # once per outage, not once per attempt
                log_event(logger, "connect_failed", logging.WARNING, target=self._target, error=exc)
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._failed_connects:
            log_event(
                logger, "reconnected", target=self._target, failed_attempts=self._failed_connects
            )
        self._failed_connects = 0
        self.connections += 1
        self._sock = sock
        self._served = 0
        return sock

    def _round_trip(self, sock: socket.socket, payload: bytes | bytearray, deadline: float) -> int:
        """Stream ``payload`` out and the echo back into ``self._buf``; return bytes received.

        At most :data:`SEND_WINDOW` bytes are in flight, so payloads of any size
        cannot deadlock. Every blocking call gets only the time left until
        ``deadline`` (the round trip's start, connect included, plus ``timeout_s``),
        so the round trip as a whole never takes much longer than ``timeout_s``:
        TimeoutError once it would, :class:`ShortEcho` if the server closes early.
        """
        size = len(payload)
        if len(self._buf) != size:
            self._buf = bytearray(size)
            self._view = memoryview(self._buf)
        view = self._view
        remaining = self._remaining
        if size <= SEND_WINDOW:  # the common case: one send, usually one receive
            sock.settimeout(remaining(deadline, 0, size))
            sock.sendall(payload)
            sock.settimeout(remaining(deadline, 0, size))
            received = sock.recv_into(view, size)
            if received == size:
                return size
            if received == 0:
                raise ShortEcho(0, size)
            sent = size
        else:
            sent = received = 0
        out = memoryview(payload)
        while received < size:
            sock.settimeout(remaining(deadline, received, size))
            if sent < size and sent - received < SEND_WINDOW:
                end = min(size, received + SEND_WINDOW)
                sock.sendall(out[sent:end])
                sent = end
                continue
            count = sock.recv_into(view[received:], size - received)
            if count == 0:
                raise ShortEcho(received, size)
            received += count
        return received

    def _drop(self, reason: str) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        log_event(
            logger,
            "connection_closed",
            logging.DEBUG if reason in ("closed", "interrupted") else logging.INFO,
            target=self._target,
            reason=reason,
            round_trips=self._served,
        )
        sock.close()
