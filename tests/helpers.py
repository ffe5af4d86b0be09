"""Constants and small helpers shared by test modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

WRITE_KEY = "test-write-key-0123456789"


def stored(store: Path) -> list[dict[str, Any]]:
    """What ``segment-middleware events --json`` lists from a store (the spool, when a key is set)."""
    if not store.exists():
        return []
    # The CLI reads a Django project's settings when DJANGO_SETTINGS_MODULE is set; test
    # modules set it for their own in-process Django, whose package is not on the CLI's path.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "segment-middleware"), "--store", str(store), "events", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
