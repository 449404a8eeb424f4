"""Shutdown signals and the drain window, shared by every service.

The contract: on SIGTERM or SIGINT a service stops accepting at once, lets open
work run for a drain window, then cuts what is left and exits 0. Docker sends
SIGTERM on `docker stop` and SIGKILL 10 s later by default, so drain windows
stay well inside that.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

# SIGTERM is what `docker stop` and orchestrators send; SIGINT is Ctrl-C.
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Default drain window: half of Docker's 10 s stop timeout leaves room to close
# connections and exit before SIGKILL arrives.
DEFAULT_DRAIN_S = 5.0


def install_asyncio_signal_handlers(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[signal.Signals], None]
) -> None:
    """Call ``on_signal(sig)`` on the loop for every shutdown signal.

    Works on both the stdlib loop and uvloop. A second signal calls the handler
    again; the handler decides what a repeated request means.
    """
    for sig in SHUTDOWN_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
