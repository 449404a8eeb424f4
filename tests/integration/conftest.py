"""Fixtures for the shared echo-server suite: one server address per variant.

Every test that asks for ``echo_address`` (or ``echo_server``) runs once per
variant: ``trio`` (services.trio_echo), ``uvloop`` and ``asyncio``
(services.uvloop_echo on either loop). Locally (``make test``) each variant is a
real subprocess on a loopback port the kernel picks, started once per session; with
``LAB_TARGET=compose`` the tests use the containers' published ports instead
(override with ``LAB_TRIO_ECHO_ADDR`` / ``LAB_UVLOOP_ECHO_ADDR`` as host:port).

Tests that need a server with custom settings or its pid ask for
``start_echo_server`` or ``echo_server.require_process()``; they are skipped
against compose, where container-level equivalents live in test_containers.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import Address, ServiceProcess, parse_address, target


@dataclass(frozen=True)
class EchoVariant:
    """One echo server implementation as the suite starts or finds it."""

    name: str
    module: str
    args: tuple[str, ...]
    addr_env: str | None  # variable overriding the container's address; None: no container
    compose_addr: str | None  # the container's published port by default

    def __str__(self) -> str:
        return self.name


VARIANTS = (
    EchoVariant("trio", "services.trio_echo", (), "LAB_TRIO_ECHO_ADDR", "127.0.0.1:9001"),
    EchoVariant(
        "uvloop",
        "services.uvloop_echo",
        ("--loop", "uvloop"),
        "LAB_UVLOOP_ECHO_ADDR",
        "127.0.0.1:9002",
    ),
    EchoVariant("asyncio", "services.uvloop_echo", ("--loop", "asyncio"), None, None),
)

LOCAL_ONLY = (
    "needs a local server process (custom settings or its pid); runs in `make test`, "
    "container-level equivalents are in test_containers.py"
)


@dataclass
class EchoServer:
    """Where a variant's shared server listens, and its process when it is local."""

    variant: EchoVariant
    address: Address
    process: ServiceProcess | None

    def require_process(self) -> ServiceProcess:
        """The local process; skips the calling test against the compose stack."""
        if self.process is None:
            pytest.skip(LOCAL_ONLY)
        return self.process


@pytest.fixture(scope="session", params=VARIANTS, ids=str)
def echo_variant(request: pytest.FixtureRequest) -> EchoVariant:
    variant: EchoVariant = request.param
    return variant


@pytest.fixture(scope="session")
def echo_server(echo_variant: EchoVariant) -> Iterator[EchoServer]:
    """The variant's shared server for the session, with default settings.

    Locally the process is stopped at the end of the session, and the fixture
    fails the last test if it did not exit 0 or logged a traceback: tests that
    abuse the shared server (resets, slow readers) must leave it healthy.
    """
    v = echo_variant
    if target() == "compose":
        if v.addr_env is None or v.compose_addr is None:
            pytest.skip(f"{v.name}: no container for this variant; it runs in `make test`")
        yield EchoServer(v, parse_address(os.environ.get(v.addr_env, v.compose_addr)), None)
        return
    svc = ServiceProcess(v.module, args=list(v.args)).start()
    try:
        yield EchoServer(v, svc.address, svc)
        code = svc.stop()
        output = svc.output()
        assert code == 0, f"{v.name} shared server exited {code}:\n{output[-4000:]}"
        assert "Traceback" not in output, f"{v.name} shared server logged a traceback:\n{output}"
    finally:
        svc.cleanup()


@pytest.fixture(scope="session")
def echo_address(echo_server: EchoServer) -> Address:
    """host:port of the current variant's shared server (local process or container)."""
    return echo_server.address


StartEchoServer = Callable[..., ServiceProcess]


@pytest.fixture
def start_echo_server(echo_variant: EchoVariant) -> Iterator[StartEchoServer]:
    """``start(*flags, rlimit_nofile=None)`` starts a private server of the current variant.

    Skips against the compose stack. Every server started is stopped (SIGTERM,
    then SIGKILL) and its log removed when the test ends.
    """
    if target() == "compose":
        pytest.skip(LOCAL_ONLY)
    started: list[ServiceProcess] = []

    def start(*flags: str, rlimit_nofile: int | None = None) -> ServiceProcess:
        svc = ServiceProcess(
            echo_variant.module,
            args=[*echo_variant.args, *flags],
            rlimit_nofile=rlimit_nofile,
        )
        svc.start()
        started.append(svc)
        return svc

    try:
        yield start
    finally:
        for svc in started:
            svc.cleanup()
