"""Issue 13's soak, 30 s: no page call lost under load, a faulty endpoint and restarts.

Two gunicorn sync workers serve a tracked Flask page at up to ~1,000 requests/s while the
endpoint answers at random with resets, 500s, 429s with Retry-After and 3 s stalls, a
worker is restarted by SIGTERM every 20 s, and ``MAX_QUEUE_SIZE`` is small enough for the
in-memory queue to overflow. After a clean stop and ``segment-middleware replay`` every
request answered 200 must have its page call on the receiver; a messageId may arrive twice
only when a batch was cut off in flight at a shutdown and then replayed, and each worker's
``stats()`` at exit must add up. The scenario is tests/soak_scenario.py; ``bench/soak.py`` runs it
for 10 minutes (or any length) and prints the same figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from soak_scenario import SoakConfig, run_soak

pytest.importorskip("flask")

SECONDS = 30.0
#: Well under the ~1,000/s asked (a loaded 2-core machine may not give it), and still far
#: beyond what one sender posting one batch at a time drains from a faulty endpoint.
MIN_RATE = 400.0


@pytest.mark.timeout(150)
def test_soak_loses_nothing_under_faults_overflow_and_restarts(tmp_path: Path) -> None:
    result = run_soak(SoakConfig(seconds=SECONDS, workdir=tmp_path), progress=print)
    print(result.report())

    problems = result.problems(min_rate=MIN_RATE)
    assert not problems, "\n".join(["the soak found:", *problems, "", result.report()])
    # What problems() checks, spelled out for the reader (each line also fails above).
    assert result.answered > 0 and not result.lost
    assert not result.unexplained_duplicates
    assert result.explainable_duplicates <= result.duplicate_bound
    assert result.worker_pids and not result.missing_stats() and not result.stats_problems()
    assert result.rate >= MIN_RATE and len(result.kills) == 1
    assert all(result.chaos_counts[k] > 0 for k in ("reset", "error", "rate_limited", "stall"))
