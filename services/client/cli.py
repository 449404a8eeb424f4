"""``python -m services.client echo ...``: verified round trips and their statistics.

Exit status: 0 when every round trip came back byte for byte; 1 on any error or
mismatch, or if the server cannot be reached (one line on stderr says why);
2 on bad usage (one line from argparse); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import anyio

from services.client.errors import EchoError
from services.client.loadgen import LoadOptions, run_load
from services.client.stats import Report
from services.common import config
from services.common.logs import LOG_FORMAT

PROG = "client"

# Backends the CLI runs on; "uvloop" is anyio's asyncio backend on uvloop's loop.
BACKENDS = ("asyncio", "trio", "uvloop")

# The client's own overhead is part of every number it prints; on anyio, uvloop
# and trio cost about half of what the stdlib loop does per round trip.
DEFAULT_BACKEND = "uvloop"

# The echo server contract's default port (trio echo); uvloop echo listens on 9002.
DEFAULT_PORT = 9001

# Largest payload: every connection holds its own preallocated copy, and a
# message bigger than this measures memory bandwidth more than the event loop.
MAX_SIZE = 64 * 1024 * 1024

# Most connections: far above any useful setting on 2 cores, well below the
# default open-file limit (1024 is common) plus the servers' max_connections.
MAX_CONCURRENCY = 1000

# A loopback round trip takes well under a millisecond; 10 s means the server is
# stuck, not slow, and keeps an unattended run from hanging for ever.
DEFAULT_TIMEOUT_S = 10.0

# Conventional exit status for a run stopped by SIGINT (128 + signal 2).
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = config.OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    echo = commands.add_parser(
        "echo",
        help="run verified round trips and print their statistics",
        description="Run COUNT round trips of SIZE bytes spread over CONCURRENCY "
        "connections, verify every echoed byte, print rates and latencies.",
    )
    echo.add_argument("--host", type=config.arg_type(config.host, "host"), default="127.0.0.1")
    echo.add_argument(
        "--port",
        type=config.arg_type(config.connect_port, "port"),
        default=DEFAULT_PORT,
    )
    echo.add_argument(
        "--size",
        type=config.arg_type(lambda raw: config.parse_int(raw, low=1, high=MAX_SIZE), "size"),
        default=1024,
        help="payload bytes per round trip (default 1024)",
    )
    echo.add_argument(
        "--count",
        type=config.arg_type(config.positive_int, "count"),
        default=1000,
        help="round trips in total (default 1000)",
    )
    echo.add_argument(
        "--concurrency",
        type=config.arg_type(
            lambda raw: config.parse_int(raw, low=1, high=MAX_CONCURRENCY), "concurrency"
        ),
        default=8,
        help="connections, each running its share of round trips in turn (default 8)",
    )
    echo.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help=f"event loop of the client itself (default {DEFAULT_BACKEND})",
    )
    echo.add_argument(
        "--timeout",
        type=config.arg_type(config.non_negative_float, "timeout"),
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="limit for connecting and for each round trip; 0: none "
        f"(default {DEFAULT_TIMEOUT_S:g})",
    )
    echo.add_argument("--json", action="store_true", help="print the report as JSON")
    echo.add_argument(
        "--log-level",
        choices=config.LOG_LEVELS,
        default="warning",
        help="stderr logging; info logs each connection as it closes (default warning)",
    )
    return parser


def _run(options: LoadOptions) -> Report:
    if options.backend == "uvloop":
        return anyio.run(run_load, options, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(run_load, options, backend=options.backend)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)  # stdout is kept for the report
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler], force=True)

    options = LoadOptions(
        host=args.host,
        port=args.port,
        size=args.size,
        count=args.count,
        concurrency=args.concurrency,
        timeout=args.timeout or None,
        backend=args.backend,
    )
    try:
        report = _run(options)
    except EchoError as exc:  # could not open the connections: nothing was measured
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    if not report.ok:
        failed = report.error_count + report.not_run
        print(
            f"{PROG}: error: {failed} of {report.count} round trips failed "
            f"(first: {report.first_error})",
            file=sys.stderr,
        )
        return 1
    return 0
