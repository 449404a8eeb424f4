"""Settings, constants and log-field formats shared by the echo servers (trio, asyncio/uvloop).

Both servers keep one contract (RFC 862 echo, half-close, drain on SIGTERM),
so they share one settings shape; each adds its own fields by subclassing. They
also log in one vocabulary, so the helpers that format ``peer=`` and ``error=``
values live here.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from services.common import config
from services.common.shutdown import DEFAULT_DRAIN_S

# Bytes read per receive call: large enough that a 4 MiB stream needs few
# syscalls, small enough that a connection holds little memory while it echoes.
RECV_SIZE = 64 * 1024

# ``peer=`` of a connection whose address could not be read (it reset before we looked).
UNKNOWN_PEER = "unknown"


def format_address(address: object) -> str:
    """``host:port`` for an IPv4 socket address, ``[host]:port`` for IPv6.

    Anything that is not a ``(host, port, ...)`` tuple (``None`` from a transport
    that lost its socket, for one) becomes :data:`UNKNOWN_PEER`. Never raises.
    """
    if not isinstance(address, tuple) or len(address) < 2:
        return UNKNOWN_PEER
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def errno_name(exc: BaseException) -> str:
    """The ``error=`` value for ``exc``: its errno name (``ECONNRESET``) if it has one,
    else the errno number, else the exception's type name. Never raises."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        return errno.errorcode.get(code, str(code))
    return type(exc).__name__


@dataclass(frozen=True)
class EchoSettings:
    """What an echo server needs to know at start-up; see ``--help`` for each."""

    host: str = config.setting("0.0.0.0", help="interface to listen on", parse=config.host)
    port: int = config.setting(
        9001, help="TCP port to listen on (0: any free port)", parse=config.port
    )
    max_connections: int = config.setting(
        1000,
        help="connections served at once; extra ones are closed at once and counted",
        parse=config.positive_int,
    )
    idle_timeout_s: float = config.setting(
        60.0,
        help="close a connection on which no byte moved for this long (0: never)",
        parse=config.non_negative_float,
    )
    drain_s: float = config.setting(
        DEFAULT_DRAIN_S,
        help="on SIGTERM/SIGINT, how long open connections may keep running",
        parse=config.non_negative_float,
    )
    backlog: int = config.setting(
        1024, help="listen() backlog: connections the kernel queues", parse=config.positive_int
    )
    log_level: str = config.setting(
        "info", help="debug, info, warning or error", parse=config.log_level
    )
