"""A bare asyncio streams echo server (``asyncio.start_server``), on either loop.

The handler reads up to 64 KiB (the services' receive size), writes it back and
awaits ``drain()`` (the documented way to respect flow control), until EOF.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from bench.reference.cli import parse_args, run_on_loop

# Bytes per read: the same as services.common.echo.RECV_SIZE, so only the API differs.
RECV_SIZE = 64 * 1024


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF or a connection error, then close the writer."""
    try:
        while data := await reader.read(RECV_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    """Listen on host:port and serve until cancelled."""
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("asyncio_streams", argv, with_loop=True)
    try:
        run_on_loop(args.loop, lambda: serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
