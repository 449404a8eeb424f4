"""Typed settings built from command-line flags with environment fallbacks.

Every service describes its configuration once, as a frozen dataclass whose
fields are declared with :func:`setting`. :func:`load_settings` fills it from,
in order of precedence, a command-line flag (``--idle-timeout-s 5``), an
environment variable (``TRIO_ECHO_IDLE_TIMEOUT_S=5``) and the field default.

A bad value never becomes a traceback: the loader prints one line naming the
flag, the environment variable and what was wrong, and exits with status 2
(the conventional "bad usage" code, the same one argparse uses).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

# Exit status for bad usage or configuration, as argparse and most Unix tools use.
EXIT_USAGE = 2

# Exit status when the service could not start: address in use, host does not resolve.
EXIT_START_FAILED = 1

S = TypeVar("S")
T = TypeVar("T")


class SettingError(ValueError):
    """A value that does not fit its setting; the message says why, for a human."""


def setting(default: T, *, help: str, parse: Callable[[str], T]) -> T:
    """Declare a dataclass field that :func:`load_settings` fills from a flag or the env.

    ``parse`` turns the raw string into the typed value, raising
    :class:`SettingError` (or ``ValueError``) with a short reason when it cannot.
    """
    return dataclasses.field(default=default, metadata={"help": help, "parse": parse})


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def env_name(env_prefix: str, field_name: str) -> str:
    return env_prefix + field_name.upper()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def arg_type(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """Adapt one of this module's parsers to argparse's ``type=``.

    A rejected value becomes argparse's own one-line usage error, e.g.
    ``--port: '70000' must be <= 65535``, instead of a traceback.
    """

    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except ValueError as exc:  # SettingError is a ValueError
            raise argparse.ArgumentTypeError(f"{raw!r} {exc}") from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def load_settings(
    cls: type[S],
    *,
    prog: str,
    env_prefix: str,
    description: str = "",
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> S:
    """Build ``cls`` from flags, then environment variables, then field defaults.

    On an unknown flag or a value its parser rejects, prints a single line such
    as ``trio_echo: error: --port / TRIO_ECHO_PORT: 'abc' is not an integer``
    to stderr and exits with :data:`EXIT_USAGE`. Nothing else is touched.
    """
    environ = os.environ if environ is None else environ
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    parser = OneLineParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in fields:
        env = env_name(env_prefix, f.name)
        parser.add_argument(
            flag_name(f.name),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata['help']} [env {env}; default {f.default!r}]",
        )
    args = parser.parse_args(argv)

    values: dict[str, Any] = {}
    for f in fields:
        env = env_name(env_prefix, f.name)
        raw = getattr(args, f.name)
        if raw is None:
            raw = environ.get(env)
        if raw is None:
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:  # SettingError is a ValueError
            parser.error(f"{flag_name(f.name)} / {env}: {raw!r} {exc}".rstrip())
    return cls(**values)


# ---------------------------------------------------------------------------
# Parsers: each turns a raw string into a typed value or raises SettingError.
# The messages complete the sentence "<flag> / <ENV>: '<raw>' ...".
# ---------------------------------------------------------------------------


def parse_int(raw: str, *, low: int | None = None, high: int | None = None) -> int:
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise SettingError("is not an integer") from None
    if low is not None and value < low:
        raise SettingError(f"must be >= {low}")
    if high is not None and value > high:
        raise SettingError(f"must be <= {high}")
    return value


def parse_float(raw: str, *, low: float | None = None, high: float | None = None) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingError("is not a number") from None
    if not math.isfinite(value):
        raise SettingError("must be a finite number")
    if low is not None and value < low:
        raise SettingError(f"must be >= {low}")
    if high is not None and value > high:
        raise SettingError(f"must be <= {high}")
    return value


def port(raw: str) -> int:
    """A TCP port to listen on; 0 asks the kernel for a free one."""
    return parse_int(raw, low=0, high=65535)


def connect_port(raw: str) -> int:
    """A TCP port to connect to: 1 to 65535 (0 is not a port anyone listens on)."""
    return parse_int(raw, low=1, high=65535)


def positive_int(raw: str) -> int:
    return parse_int(raw, low=1)


def non_negative_float(raw: str) -> float:
    return parse_float(raw, low=0.0)


def positive_float(raw: str) -> float:
    value = parse_float(raw, low=0.0)
    if value == 0.0:
        raise SettingError("must be > 0")
    return value


def host(raw: str) -> str:
    """An interface address or host name: non-empty, no spaces, no scheme or port."""
    value = raw.strip()
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise SettingError("is not a host name or IP address")
    if ":" in value and not _is_ip(value):  # not an IPv6 literal: probably "host:port"
        raise SettingError("is not a host name or IP address (give the port separately)")
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser accepting exactly one of ``allowed`` (case-insensitive)."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise SettingError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


LOG_LEVELS = ("debug", "info", "warning", "error")
log_level = choice(*LOG_LEVELS)


def fail(prog: str, message: str) -> NoReturn:
    """Print a one-line start-up error and exit with :data:`EXIT_USAGE`."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)
