"""The command line the reference servers share: ``--host``, ``--port`` and ``--loop``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

# The loops an asyncio reference can run on; "asyncio" is the stdlib's default loop.
LOOPS = ("uvloop", "asyncio")


def parse_args(prog: str, argv: Sequence[str] | None, *, with_loop: bool) -> argparse.Namespace:
    """Parse ``--host``, ``--port`` (and ``--loop``); bad usage exits 2 with argparse's message."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    if with_loop:
        parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    return parser.parse_args(argv)


def run_on_loop(loop_name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` on uvloop or the stdlib loop until it returns or SIGINT/SIGTERM ends us.

    The default SIGTERM action (terminate at once) is kept on purpose: the
    harness stops references with SIGTERM and needs no drain.
    """
    if loop_name == "uvloop":
        import uvloop  # noqa: PLC0415 - imported only when asked for, like the service does

        uvloop.run(main())
    else:
        asyncio.run(main())
