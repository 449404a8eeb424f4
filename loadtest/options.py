"""The load test's own settings, as Locust custom arguments with environment fallbacks.

Each setting is a flag (``--echo-payload-bytes 4096``) and an environment
variable (``LOADTEST_ECHO_PAYLOAD_BYTES=4096``); the flag wins. They show up in
the web UI's "Custom parameters" (Locust's ``--help`` is printed before the
locustfile loads, so it does not list them; the README does), and the master
hands them to every worker when a test starts, so in a distributed run only
the master's values count.

Locust ships parsed options to workers with msgpack and the web UI edits them
with ``type(old)(new)``, so every value stays a plain str, int, float or bool;
:func:`read` turns them into typed settings. This module does not import Locust.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from loadtest.gate import Limit, Thresholds, parse_limit
from services.common import config

T = TypeVar("T")

# Compose service names and the ports the design fixes: the defaults work from
# any container on the stack's network with no configuration at all.
DEFAULT_TRIO_ECHO = "trio-echo:9001"
DEFAULT_UVLOOP_ECHO = "uvloop-echo:9002"
DEFAULT_WORKER_URL = "http://unsync-worker:8080"

# 1 KiB: the lab's calibration message size, one TCP segment on any network.
DEFAULT_PAYLOAD_BYTES = 1024

# Largest payload a user may send: 16 MiB keeps one user's buffers small even
# with hundreds of users per worker process.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

# Round trips per second per echo user: with the default 10-50 users this is a
# steady load a 2-core machine can serve without the generator running hot.
DEFAULT_ECHO_RATE = 20.0

# Jobs per second per worker user: jobs cost milliseconds of CPU each, so the
# worker is kept busy without turning every run into a CPU-saturation test.
DEFAULT_WORKER_RATE = 2.0

# Per-request limit for worker jobs (the job's own timeout_s is set below it).
DEFAULT_WORKER_TIMEOUT_S = 10.0

# Every mode the worker API accepts; a mode a task does not support is skipped
# after the worker's GET /tasks says so.
ALL_MODES = ("auto", "async", "thread", "process", "sync")

ENV_PREFIX = "LOADTEST_"


class _Parser(Protocol):
    def add_argument(self, *args: Any, **kwargs: Any) -> Any: ...


def _checked(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse ``type`` that validates with ``parse`` but keeps the raw string."""

    def check(raw: str) -> str:
        try:
            parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r}: {exc}") from None
        return raw.strip()

    check.__name__ = parse.__name__
    return check


def _typed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` that turns the settings layer's errors into usage errors."""

    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r} {exc}") from None

    convert.__name__ = parse.__name__
    return convert


def host_port(raw: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6 literals) -> (host, port)."""
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host:
        raise config.SettingError("is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return config.host(host), config.parse_int(port, low=1, high=65535)


def http_url(raw: str) -> str:
    """An ``http://`` or ``https://`` base URL with a host."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise config.SettingError("is not an http:// URL with a host")
    return raw.strip().rstrip("/")


def modes(raw: str) -> tuple[str, ...]:
    """A comma-separated, non-empty subset of :data:`ALL_MODES`."""
    chosen = tuple(m.strip().lower() for m in raw.split(",") if m.strip())
    unknown = [m for m in chosen if m not in ALL_MODES]
    if not chosen or unknown:
        raise config.SettingError(f"must be a comma-separated list of {', '.join(ALL_MODES)}")
    return chosen


def cpu_policy(raw: str) -> bool:
    """``fail`` (True) or ``ignore`` (False)."""
    return config.choice("fail", "ignore")(raw) == "fail"


def payload_bytes(raw: str) -> int:
    return config.parse_int(raw, low=1, high=MAX_PAYLOAD_BYTES)


# name, default (as the string a user would type), argparse type, help. Each
# becomes --name and LOADTEST_NAME; the argparse type sets what Locust stores.
_ARGUMENTS: tuple[tuple[str, Any, Callable[[str], Any], str], ...] = (
    ("trio-echo", DEFAULT_TRIO_ECHO, _checked(host_port), "trio echo server, HOST:PORT"),
    ("uvloop-echo", DEFAULT_UVLOOP_ECHO, _checked(host_port), "uvloop echo server, HOST:PORT"),
    ("worker-url", DEFAULT_WORKER_URL, _checked(http_url), "unsync worker base URL"),
    (
        "echo-payload-bytes",
        DEFAULT_PAYLOAD_BYTES,
        _typed(payload_bytes),
        "bytes per echo round trip",
    ),
    (
        "echo-rate",
        DEFAULT_ECHO_RATE,
        _typed(config.non_negative_float),
        "round trips per second per echo user (0: as fast as possible)",
    ),
    (
        "echo-timeout-s",
        5.0,
        _typed(config.positive_float),
        "limit for one echo round trip, connect included",
    ),
    (
        "worker-rate",
        DEFAULT_WORKER_RATE,
        _typed(config.non_negative_float),
        "jobs per second per worker user (0: as fast as possible)",
    ),
    (
        "worker-modes",
        ",".join(ALL_MODES),
        _checked(modes),
        "execution modes the worker user spreads its jobs over",
    ),
    (
        "worker-timeout-s",
        DEFAULT_WORKER_TIMEOUT_S,
        _typed(config.positive_float),
        "limit for one job request",
    ),
    (
        "gate-max-fail-ratio",
        "0.01",
        _checked(parse_limit),
        "fail if a name's failure ratio (0..1) exceeds this; DEFAULT[,GLOB=VALUE...] or off",
    ),
    (
        "gate-max-p95-ms",
        "500",
        _checked(parse_limit),
        "fail if a name's p95 exceeds this many ms; DEFAULT[,GLOB=VALUE...] or off",
    ),
    (
        "gate-max-p99-ms",
        "1000",
        _checked(parse_limit),
        "fail if a name's p99 exceeds this many ms; DEFAULT[,GLOB=VALUE...] or off",
    ),
    (
        "gate-min-requests",
        1,
        _typed(lambda raw: config.parse_int(raw, low=0)),
        "fail if fewer requests than this were made",
    ),
    (
        "gate-min-workers",
        -1,
        _typed(lambda raw: config.parse_int(raw, low=-1)),
        "fail if fewer Locust workers took part (-1: --expect-workers; 0: no check)",
    ),
    (
        "gate-cpu-warning",
        "fail",
        _checked(cpu_policy),
        "fail or ignore when Locust warns that its own CPU usage was too high",
    ),
)


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper().replace("-", "_")


def add_arguments(parser: _Parser) -> None:
    """Register every setting on Locust's (configargparse) parser."""
    for name, default, kind, help_text in _ARGUMENTS:
        parser.add_argument(
            f"--{name}",
            type=kind,
            default=default,
            env_var=env_var(name),
            help=f"{help_text} [env {env_var(name)}; default {default}]",
        )


@dataclass(frozen=True)
class LoadtestOptions:
    """The settings, typed; built by :func:`read` from Locust's parsed options."""

    trio_echo: tuple[str, int]
    uvloop_echo: tuple[str, int]
    worker_url: str
    echo_payload_bytes: int
    echo_rate: float
    echo_timeout_s: float
    worker_rate: float
    worker_modes: tuple[str, ...]
    worker_timeout_s: float
    thresholds: Thresholds


def read(parsed: Any, expect_workers: int = 0) -> LoadtestOptions:
    """Typed settings from Locust's ``environment.parsed_options`` (or defaults if None).

    Values edited in the web UI arrive as strings and are parsed again here; a
    value that fails to parse raises :class:`config.SettingError`.
    ``expect_workers`` fills ``--gate-min-workers -1``.
    """

    def get(name: str) -> Any:
        dest = name.replace("-", "_")
        for arg_name, default, _, _ in _ARGUMENTS:
            if arg_name == name:
                return getattr(parsed, dest, default) if parsed is not None else default
        raise KeyError(name)

    def text(name: str) -> str:
        return str(get(name))

    min_workers = config.parse_int(text("gate-min-workers"), low=-1)
    limits: dict[str, Limit] = {
        key: parse_limit(text(f"gate-{key.replace('_', '-')}"))
        for key in ("max_fail_ratio", "max_p95_ms", "max_p99_ms")
    }
    return LoadtestOptions(
        trio_echo=host_port(text("trio-echo")),
        uvloop_echo=host_port(text("uvloop-echo")),
        worker_url=http_url(text("worker-url")),
        echo_payload_bytes=payload_bytes(text("echo-payload-bytes")),
        echo_rate=config.non_negative_float(text("echo-rate")),
        echo_timeout_s=config.positive_float(text("echo-timeout-s")),
        worker_rate=config.non_negative_float(text("worker-rate")),
        worker_modes=modes(text("worker-modes")),
        worker_timeout_s=config.positive_float(text("worker-timeout-s")),
        thresholds=Thresholds(
            max_fail_ratio=limits["max_fail_ratio"],
            max_p95_ms=limits["max_p95_ms"],
            max_p99_ms=limits["max_p99_ms"],
            min_requests=config.parse_int(text("gate-min-requests"), low=0),
            min_workers=expect_workers if min_workers == -1 else min_workers,
            fail_on_cpu_warning=cpu_policy(text("gate-cpu-warning")),
        ),
    )
