"""EchoClient against the real echo services, on asyncio, uvloop and trio.

Locally (default) each service runs as a subprocess on a free loopback port;
with ``LAB_TARGET=compose`` the same tests use the stack's published ports.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from services.client import EchoClient
from tests.helpers import Address, ServiceProcess, target

pytestmark = pytest.mark.anyio

# The echo services and the ports the compose stack publishes them on.
SERVICES = {"services.trio_echo": 9001, "services.uvloop_echo": 9002}

# Far above any loopback round trip, even of 1 MiB on a loaded 2-core machine.
TIMEOUT_S = 20.0

# From one byte to 1 MiB, with every boundary the client or servers care about:
# segment-sized, their 64 KiB read size and just past it, and the size past
# which the client sends and reads concurrently.
SIZES = [1, 2, 1023, 1024, 1500, 65535, 65536, 65537, 262_145, 1024 * 1024]


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(scope="module", params=list(SERVICES))
def server(request: pytest.FixtureRequest) -> Iterator[Address]:
    module: str = request.param
    if target() == "compose":
        yield Address("127.0.0.1", SERVICES[module])
        return
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in this tree yet")
    service = ServiceProcess(module).start()
    try:
        yield service.address
    finally:
        service.cleanup()


async def test_echo_of_every_size_from_one_byte_to_one_mib(server: Address) -> None:
    async with EchoClient(server.host, server.port, timeout=TIMEOUT_S) as client:
        for size in SIZES:
            payload = os.urandom(size)
            reply = await client.echo(payload)
            assert len(reply) == size
            assert reply == payload, f"echo of {size} bytes differs"
        assert client.bytes_sent == client.bytes_received == sum(SIZES)


async def test_iteration_after_send_eof_yields_everything_then_ends(server: Address) -> None:
    parts = [os.urandom(n) for n in (1, 4096, 100_000, 300_000)]
    async with EchoClient(server.host, server.port, timeout=TIMEOUT_S) as client:
        for part in parts:
            await client.send(part)
        await client.send_eof()
        received = bytearray()
        with anyio.fail_after(TIMEOUT_S):
            async for chunk in client:  # ends when the server sends EOF
                received += chunk
    assert bytes(received) == b"".join(parts)


async def test_concurrent_clients_each_get_their_own_bytes(server: Address) -> None:
    results: dict[int, bool] = {}

    async def one(i: int) -> None:
        payload = os.urandom(4096 + i)
        async with EchoClient(server.host, server.port, timeout=TIMEOUT_S) as client:
            results[i] = all([await client.echo(payload) == payload for _ in range(20)])

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(one, i)
    assert results == dict.fromkeys(range(8), True)
