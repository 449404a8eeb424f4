"""A small threaded TCP echo server with optional faults, for checking the load test itself.

The real services are what the load test is for; this stub is what proves the
load test catches what it must. It echoes faithfully by default, and can
corrupt one byte per connection (``--corrupt-offset``: a byte-verifying client
must report a mismatch) or echo in tiny pieces (``--chunk``: a client must
reassemble split reads). Tests use :class:`StubEchoServer` in-process; from a
shell::

    python -m loadtest.echo_stub --port 9101 --corrupt-offset 100

It uses one thread per connection and is not meant to be fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType

from services.common.logs import log_event, setup_logging

logger = logging.getLogger("loadtest.echo_stub")

# Receive size per call: small enough to keep the stub's memory trivial.
RECV_SIZE = 16 * 1024

# How long a connection thread waits for data before checking for shutdown;
# it bounds how long stop() can take, not how long a client may stay idle.
POLL_S = 0.2


class StubEchoServer:
    """An echo server on 127.0.0.1 in background threads; use as a context manager.

    ``corrupt_offset``: flip the bits of the byte at this offset of each
    connection's stream. ``chunk``: send the echo back this many bytes per
    send call. ``port`` 0 picks a free port; reuse ``.port`` to restart on the
    same one. :meth:`stop` closes the listener and every open connection and
    joins all threads.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        corrupt_offset: int | None = None,
        chunk: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.corrupt_offset = corrupt_offset
        self.chunk = chunk
        self.connections = 0
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> StubEchoServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(POLL_S)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()

    def __enter__(self) -> StubEchoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            self.connections += 1
            with self._lock:
                self._open.add(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        """Echo one connection until EOF, an error or stop(); always closes it."""
        conn.settimeout(POLL_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        offset = 0
        try:
            while not self._stopping.is_set():
                try:
                    data = conn.recv(RECV_SIZE)
                except TimeoutError:
                    continue
                if not data:
                    break
                out = bytearray(data)
                bad = self.corrupt_offset
                if bad is not None and offset <= bad < offset + len(out):
                    out[bad - offset] ^= 0xFF
                offset += len(out)
                step = self.chunk or len(out)
                for start in range(0, len(out), step):
                    conn.sendall(out[start : start + step])
        except OSError as exc:
            log_event(logger, "connection_error", error=exc)
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="echo_stub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--corrupt-offset", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    server = StubEchoServer(
        args.port, host=args.host, corrupt_offset=args.corrupt_offset, chunk=args.chunk
    ).start()
    log_event(logger, "listening", host=server.host, port=server.port)
    done = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
