"""EchoClient against the real echo services, on asyncio, uvloop and trio.

The servers are the echo suite's shared ones (``echo_address`` in conftest.py):
locally a subprocess per server variant, with ``LAB_TARGET=compose`` the stack's
published ports. The client's loop comes from ``anyio_backend`` (tests/conftest.py).
"""

from __future__ import annotations

import os

import anyio
import pytest

from services.client import EchoClient
from tests.helpers import Address

pytestmark = pytest.mark.anyio

# Far above any loopback round trip, even of 1 MiB on a loaded 2-core machine.
TIMEOUT_S = 20.0

# From one byte to 1 MiB, with every boundary the client or servers care about:
# segment-sized, their 64 KiB read size and just past it, and the size past
# which the client sends and reads concurrently.
SIZES = [1, 2, 1023, 1024, 1500, 65535, 65536, 65537, 262_145, 1024 * 1024]


async def test_echo_of_every_size_from_one_byte_to_one_mib(echo_address: Address) -> None:
    async with EchoClient(echo_address.host, echo_address.port, timeout=TIMEOUT_S) as client:
        for size in SIZES:
            payload = os.urandom(size)
            reply = await client.echo(payload)
            assert len(reply) == size
            assert reply == payload, f"echo of {size} bytes differs"
        assert client.bytes_sent == client.bytes_received == sum(SIZES)


async def test_iteration_after_send_eof_yields_everything_then_ends(echo_address: Address) -> None:
    parts = [os.urandom(n) for n in (1, 4096, 100_000, 300_000)]
    async with EchoClient(echo_address.host, echo_address.port, timeout=TIMEOUT_S) as client:
        for part in parts:
            await client.send(part)
        await client.send_eof()
        received = bytearray()
        with anyio.fail_after(TIMEOUT_S):
            async for chunk in client:  # ends when the server sends EOF
                received += chunk
    assert bytes(received) == b"".join(parts)


async def test_concurrent_clients_each_get_their_own_bytes(echo_address: Address) -> None:
    results: dict[int, bool] = {}

    async def one(i: int) -> None:
        payload = os.urandom(4096 + i)
        async with EchoClient(echo_address.host, echo_address.port, timeout=TIMEOUT_S) as client:
            results[i] = all([await client.echo(payload) == payload for _ in range(20)])

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(one, i)
    assert results == dict.fromkeys(range(8), True)
