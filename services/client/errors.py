"""What can go wrong talking to an echo server, as one small exception tree.

Every error the client raises on purpose is an :class:`EchoError`, so a caller
can catch the family at once; each also subclasses the built-in exception a
Python programmer would reach for (``ConnectionError``, ``TimeoutError``), so
code written against those keeps working.

::

    EchoError
    ├── EchoConnectionError (ConnectionError)   cannot connect, or the connection broke
    │   └── EarlyEOFError                       the server closed before echoing everything
    └── EchoTimeoutError (TimeoutError)         no (full) answer within the time limit
"""

from __future__ import annotations


class EchoError(Exception):
    """Base of every error :class:`~services.client.EchoClient` raises on purpose."""


class EchoConnectionError(EchoError, ConnectionError):
    """The connection could not be opened, or broke (reset, closed) while in use."""


class EarlyEOFError(EchoConnectionError):
    """The server sent EOF after ``received`` of the ``expected`` echoed bytes.

    The connection cannot be used for echoes after this: close it.
    """

    def __init__(self, expected: int, received: int) -> None:
        self.expected = expected
        self.received = received
        super().__init__(
            f"server closed the connection after echoing {received} of {expected} bytes"
        )


class EchoTimeoutError(EchoError, TimeoutError):
    """An operation did not finish within ``timeout`` seconds.

    For an echo, ``expected`` and ``received`` say how far it got; the bytes still
    in flight would arrive later and put the stream out of step, so the client
    refuses further echoes on that connection.
    """

    def __init__(self, what: str, timeout: float, expected: int = 0, received: int = 0) -> None:
        self.timeout = timeout
        self.expected = expected
        self.received = received
        super().__init__(f"{what} took longer than {timeout:g} s")
