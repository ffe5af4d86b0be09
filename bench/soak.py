"""Issue 13's soak at any length: Flask under gunicorn, ~1,000 requests/s, a faulty endpoint.

The scenario is the test suite's (``tests/soak_scenario.py``, run for 30 s by
``tests/test_soak.py``): two gunicorn sync workers, a receiver answering at random with
resets, 500s, 429s with Retry-After and 3 s stalls, a worker restarted by SIGTERM every
20 s, then a clean stop and ``segment-middleware replay``. This prints the figures: load
(requests, rate, latency), what the endpoint did, page calls received and lost,
duplicates (explainable or not), and each worker's ``stats()`` at exit.

Run: ``python bench/soak.py [--seconds 600] [--json PATH] [--strict] [--keep]``; every
setting and fault probability is a flag (``--help``). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the test suite: the scenario (soak_scenario), the receiver, the server helpers
sys.path.insert(0, str(ROOT / "tests"))

from soak_scenario import SoakConfig, run_soak  # noqa: E402


def optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A setting's flag: ``default`` leaves it out (the package's own default applies)."""

    def parse(text: str) -> Any:
        return None if text == "default" else kind(text)

    return parse


def setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE as JSON when it parses (``FLUSH_AT=50``), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name.upper().removeprefix("SEGMENT_"), value


def main(argv: list[str] | None = None) -> int:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--seconds", type=float, default=600.0, help="length of the load (default: 600)")
    add("--rate", type=float, default=defaults.rate, help="target requests/s over all clients")
    add("--clients", type=int, default=defaults.clients, help="client processes")
    add("--workers", type=int, default=defaults.workers, help="gunicorn sync workers")
    add(
        "--kill-every",
        type=float,
        default=defaults.kill_every,
        help="seconds between worker SIGTERMs; 0: none",
    )
    add("--preload", action="store_true", help="gunicorn --preload")
    add("--max-queue-size", type=optional(int), default=defaults.max_queue_size, help="or 'default'")
    add("--shutdown-timeout", type=optional(float), default=defaults.shutdown_timeout, help="or 'default'")
    add("--timeout", type=optional(float), default=defaults.timeout, help="or 'default'")
    add("--max-in-flight", type=optional(int), default=defaults.max_in_flight, help="or 'default'")
    add("--spool-max-mb", type=optional(float), default=defaults.spool_max_mb, help="or 'default'")
    add("--setting", type=setting, action="append", default=[], metavar="NAME=VALUE", help="any other")
    add("--reset", type=float, default=defaults.reset, help="share of posts answered by a reset")
    add("--error", type=float, default=defaults.error, help="... by a 500")
    add("--rate-limited", type=float, default=defaults.rate_limited, help="... by a 429")
    add("--retry-after", type=int, default=defaults.retry_after, help="the 429's Retry-After (s)")
    add("--stall", type=float, default=defaults.stall, help="... by a stall, then a normal answer")
    add("--stall-seconds", type=float, default=defaults.stall_seconds)
    add("--seed", type=int, default=None, help="repeatable fault sequence")
    add("--min-rate", type=float, default=400.0, help="a rate under this is a problem (as in the test)")
    add("--json", metavar="PATH", help="also write every figure as JSON")
    add("--strict", action="store_true", help="exit 1 when a promise did not hold")
    add("--workdir", type=Path, help="keep the store and server log here (default: a temp dir, removed)")
    add("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segment-soak-"))
    config = SoakConfig(
        seconds=args.seconds,
        rate=args.rate,
        clients=args.clients,
        workers=args.workers,
        kill_every=args.kill_every,
        preload=args.preload,
        max_queue_size=args.max_queue_size,
        shutdown_timeout=args.shutdown_timeout,
        timeout=args.timeout,
        max_in_flight=args.max_in_flight,
        spool_max_mb=args.spool_max_mb,
        extra_settings=dict(args.setting),
        reset=args.reset,
        error=args.error,
        rate_limited=args.rate_limited,
        retry_after=args.retry_after,
        stall=args.stall,
        stall_seconds=args.stall_seconds,
        seed=args.seed,
        workdir=workdir,
    )
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    try:
        result = run_soak(config, progress=progress)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the receiver's process
    print(result.report())
    wall = time.monotonic() - started
    print(f"  harness   peak RSS {peak_mb:.0f} MB (receiver and bookkeeping), wall {wall:.0f} s")
    if args.workdir is None and not args.keep:
        print("  (server log removed with the temp dir; --keep or --workdir keeps it)")
    problems = result.problems(min_rate=args.min_rate)
    print("promises: " + ("all held" if not problems else "NOT HELD"))
    for problem in problems:
        print(f"  - {problem}")
    if args.json:
        data = result.to_json()
        data["problems"] = problems
        data["harness_peak_rss_mb"] = peak_mb
        Path(args.json).write_text(json.dumps(data, indent=2, default=str))
    return 1 if problems and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
