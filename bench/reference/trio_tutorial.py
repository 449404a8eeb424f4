"""trio's tutorial echo server, minus its per-message prints.

The shape from https://trio.readthedocs.io/en/stable/tutorial.html: one task per
connection from ``trio.serve_tcp``, ``async for data in server_stream`` (trio's
default receive size) and ``send_all``; an exception ends that connection only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial

import trio

from bench.reference.cli import parse_args


async def echo_server(server_stream: trio.SocketStream) -> None:
    """Echo until EOF; any error closes this connection and is otherwise ignored."""
    try:
        async for data in server_stream:
            await server_stream.send_all(data)
    except Exception:  # the tutorial prints "crashed"; a benchmark stays quiet
        pass


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("trio_tutorial", argv, with_loop=False)
    try:
        trio.run(partial(trio.serve_tcp, echo_server, args.port, host=args.host))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
