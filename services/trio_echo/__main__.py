"""Entry point: ``python -m services.trio_echo --help``."""

from __future__ import annotations

import sys

from services.trio_echo.server import main

if __name__ == "__main__":
    sys.exit(main())
