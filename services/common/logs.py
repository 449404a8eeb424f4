"""Structured logging to stdout: one ``key=value`` line per event.

Services log per connection or per job, never per message: a log call on the
hot path would cost more than the echo itself.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

# One format for every service so `docker compose logs` lines up and greps alike.
LOG_FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def setup_logging(level: str = "info") -> None:
    """Send every logger's records to stdout (unbuffered in containers), at ``level``."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _value(value: Any) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def kv(**fields: Any) -> str:
    """Format fields as ``a=1 b="two words"``, quoting values that need it."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event=<event>`` followed by ``fields``; formats nothing if the level is off."""
    if logger.isEnabledFor(level):
        logger.log(level, "event=%s %s", event, kv(**fields))
