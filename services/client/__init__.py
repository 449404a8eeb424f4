"""Async echo client library and CLI (``python -m services.client echo ...``).

One implementation on anyio serves asyncio, uvloop and trio::

    async with EchoClient("127.0.0.1", 9001, timeout=5) as client:
        assert await client.echo(b"hello") == b"hello"
"""

from services.client.echo_client import EchoClient
from services.client.errors import EarlyEOFError, EchoConnectionError, EchoError, EchoTimeoutError

__all__ = [
    "EarlyEOFError",
    "EchoClient",
    "EchoConnectionError",
    "EchoError",
    "EchoTimeoutError",
]
