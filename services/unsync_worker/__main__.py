"""Entry point: ``python -m services.unsync_worker --help``."""

from __future__ import annotations

import sys

from services.unsync_worker.main import main

if __name__ == "__main__":
    sys.exit(main())
