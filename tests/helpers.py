"""Constants and small helpers shared by test modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
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


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 20.0,
    *,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds.
    ``alive`` (optional) returns why the process being waited on can no longer make the
    condition true (it exited, with its output), to fail at once with that instead."""
    deadline = time.monotonic() + timeout
    while not condition():
        gone = alive() if alive is not None else None
        if gone:
            raise AssertionError(f"{what}: {gone}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
