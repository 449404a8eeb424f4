"""Free-port helper for code that starts a service on a port it must name up front."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the kernel picked it).

    Another process can take it before the caller binds it; where a service can
    report its own bound port (``--port 0``), prefer that.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
