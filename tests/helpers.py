"""Constants and small helpers shared by test modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

WRITE_KEY = "test-write-key-0123456789"


def stored(store: Path) -> list[dict[str, Any]]:
    """What ``segment-middleware events --json`` lists from a store (the spool, when a key is set)."""
    if not store.exists():
        return []
    out = subprocess.run(
        [str(Path(sys.executable).parent / "segment-middleware"), "--store", str(store), "events", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
