"""The benchmarks keep working: a quick run of each, checking delivery counts, not speed.

Speed is judged by reading the figures they print (see bench/README.md), never by a
timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from servers import ROOT


def test_overhead_quick_run_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"inproc", "cpu", "gunicorn"} <= set(results)
    assert "delivery checks" in proc.stdout and "MISMATCH" not in proc.stdout


def test_memory_quick_run_stays_bounded(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory.py"), "--requests", "20000", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    stats = results["after_flush"]
    assert results["bounded"] is True
    assert stats["queued"] == 20000
    assert stats["delivered"] == 0  # nothing listens on the endpoint
    assert stats["queued"] == stats["failed"] + stats["dropped"] + stats["spooled"]
    assert results["spool_rows"] == stats["spooled"] > 0


def test_delivery_bench_quick_run_receives_everything(tmp_path: Path) -> None:
    out = tmp_path / "delivery.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "delivery.py"), "--messages", "2000", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["ours"]["received"] == results["sdk"]["received"] == 2000
    assert results["ours"]["stats"]["delivered"] == 2000
