"""``python -m services.client``: see :mod:`services.client.cli`."""

import sys

from services.client.cli import main

sys.exit(main())
