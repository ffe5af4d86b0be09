#!/usr/bin/env python
"""Django's command-line utility for the example shop."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    # The shop package lives next to this file, whatever the current directory is.
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    # Fallback for a checkout where segment_middleware is not installed: the repository root goes
    # last, so an installed copy (or PYTHONPATH) still wins.
    if str(HERE.parent) not in sys.path:
        sys.path.append(str(HERE.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
