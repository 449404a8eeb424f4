"""Entry point: ``python -m services.uvloop_echo --help``."""

from __future__ import annotations

import sys

from services.uvloop_echo.server import main

if __name__ == "__main__":
    sys.exit(main())
