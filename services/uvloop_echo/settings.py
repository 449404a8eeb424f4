"""Settings of the asyncio/uvloop echo server: the shared echo settings plus the loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common import config
from services.common.echo import EchoSettings

# Name used in --help, in one-line start-up errors and as the logger name.
PROG = "uvloop_echo"

# Every setting can come from UVLOOP_ECHO_<FIELD> (e.g. UVLOOP_ECHO_LOOP=asyncio).
ENV_PREFIX = "UVLOOP_ECHO_"

# First line of --help.
DESCRIPTION = "RFC 862 TCP echo server on asyncio, on uvloop or the standard library's loop."

# The event loops this server can run on; the same protocol code runs on both.
LOOPS = ("uvloop", "asyncio")


@dataclass(frozen=True)
class UvloopEchoSettings(EchoSettings):
    """Echo settings with this service's port (9002) and the choice of event loop."""

    port: int = config.setting(
        9002, help="TCP port to listen on (0: any free port)", parse=config.port
    )
    loop: str = config.setting(
        "uvloop",
        help="event loop: uvloop, or asyncio for the standard library's loop",
        parse=config.choice(*LOOPS),
    )


def load(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> UvloopEchoSettings:
    """Read settings from flags, then ``UVLOOP_ECHO_*`` variables, then defaults.

    A bad value prints one line naming the flag and variable and exits with status 2.
    """
    return config.load_settings(
        UvloopEchoSettings,
        prog=PROG,
        env_prefix=ENV_PREFIX,
        description=DESCRIPTION,
        argv=argv,
        environ=environ,
    )
