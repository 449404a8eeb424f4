"""Settings and constants shared by the echo servers (trio and asyncio/uvloop).

Both servers keep one contract (RFC 862 echo, half-close, drain on SIGTERM),
so they share one settings shape; each adds its own fields by subclassing.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common import config
from services.common.shutdown import DEFAULT_DRAIN_S

# Bytes read per receive call: large enough that a 4 MiB stream needs few
# syscalls, small enough that a connection holds little memory while it echoes.
RECV_SIZE = 64 * 1024


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
        help="close a connection that sends nothing for this long (0: never)",
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
