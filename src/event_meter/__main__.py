"""``python -m event_meter``: the ``event-meter`` command line."""

from __future__ import annotations

import sys

from event_meter.cli import main

if __name__ == "__main__":
    sys.exit(main())
