"""Health probe for the services, usable as a Docker healthcheck.

``python -m services.common.probe HOST PORT`` opens a TCP connection, sends a
random nonce and expects the same bytes back: a listening socket alone is not
"healthy", an echo is. ``--http PATH`` instead sends ``GET PATH`` and expects a
2xx status (the worker's ``/healthz``). Exit status 0 means healthy, 1 means
not, 2 means bad usage (a port outside 1-65535, say); one line on stderr says
why, never a traceback.

Only the standard library is used (services.common.config is stdlib-only too),
so the probe costs nothing at start-up and works in any image that runs the
services.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
from collections.abc import Sequence

from services.common import config

# Long enough for a busy server to answer, short enough that a healthcheck
# interval of a few seconds is not overrun.
DEFAULT_TIMEOUT_S = 3.0

# Small enough to fit one segment, random enough that a stale reply cannot match.
NONCE_SIZE = 16


class ProbeError(Exception):
    """The service did not answer as a healthy one would; the message says how."""


def probe_echo(host: str, port: int, timeout: float = DEFAULT_TIMEOUT_S) -> float:
    """Round-trip a nonce through the echo server at host:port.

    Returns the round-trip time in seconds. Raises :class:`ProbeError` if the
    connection fails, times out, closes early or returns other bytes. The socket
    is always closed.
    """
    nonce = os.urandom(NONCE_SIZE)
    start = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(nonce)
            received = b""
            while len(received) < len(nonce):
                chunk = sock.recv(len(nonce) - len(received))
                if not chunk:
                    raise ProbeError(
                        f"connection closed after {len(received)} of {NONCE_SIZE} bytes"
                    )
                received += chunk
    except OSError as exc:
        raise ProbeError(f"{host}:{port}: {exc}") from None
    if received != nonce:
        raise ProbeError(f"{host}:{port}: echoed bytes differ from the nonce sent")
    return time.perf_counter() - start


def probe_http(host: str, port: int, path: str, timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """``GET path`` from host:port; returns the status, raises ProbeError unless 2xx."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        raise ProbeError(f"{host}:{port}{path}: {exc}") from None
    finally:
        conn.close()
    if not 200 <= status < 300:
        raise ProbeError(f"{host}:{port}{path}: HTTP {status}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; 0 healthy, 1 unhealthy, 2 bad usage, each failure as one stderr line."""
    parser = config.OneLineParser(prog="probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("host", type=config.arg_type(config.host, "host"))
    parser.add_argument("port", type=config.arg_type(config.connect_port, "port"))
    parser.add_argument("--http", metavar="PATH", help="probe an HTTP endpoint instead of echo")
    parser.add_argument(
        "--timeout",
        type=config.arg_type(config.positive_float, "timeout"),
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for connect and answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)
    try:
        if args.http:
            probe_http(args.host, args.port, args.http, args.timeout)
        else:
            probe_echo(args.host, args.port, args.timeout)
    except ProbeError as exc:
        print(f"probe: unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
