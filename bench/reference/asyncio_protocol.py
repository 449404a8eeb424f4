"""A bare ``asyncio.Protocol`` echo server: the cheapest an asyncio server can be.

``data_received`` writes the bytes straight back through the transport (which
buffers when the socket is full, and flow control is not needed for ping-pong
clients); on EOF the transport closes after flushing. Runs on uvloop or the
stdlib loop (``--loop``), the same code on both.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import cast

from bench.reference.cli import parse_args, run_on_loop


class EchoProtocol(asyncio.Protocol):
    """Echo every chunk as it arrives; close (after flushing) on the peer's EOF."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # let the transport close itself once the write buffer is flushed


async def serve(host: str, port: int) -> None:
    """Listen on host:port and serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("asyncio_protocol", argv, with_loop=True)
    try:
        run_on_loop(args.loop, lambda: serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
