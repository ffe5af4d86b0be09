"""Does memory stay bounded when the Segment endpoint is down?

Why: an analytics middleware that buffers without limit turns an outage at the vendor into
an outage of your app (the worker grows until the OOM killer takes it). SegmentMiddleware
promises a bounded queue (MAX_QUEUE_SIZE, default 10,000) whose overflow goes to disk
(deferred rows), and a spool on disk for batches that fail after their retries. This script checks that
promise: 100,000 requests through the in-process Django handler while HOST points at a
127.0.0.1 port where nothing listens (every post is refused at once), with short
TIMEOUT / MAX_RETRIES so the sender keeps cycling through fail -> spool.

It prints RSS (VmRSS from /proc/self/status) before and after 10k, 20k, 50k and 100k
requests, and the growth between 20k and 100k: the queue is full by 10k, and by 20k its
overflow runs too (the writer thread, the SQLite connection, the handoff to disk; their
one-off cost, 10k -> 20k, is printed apart), so anything after that is a leak. Also
``segment_middleware.stats()``, and whether the counts add up.

Run: ``python bench/memory.py [--requests N] [--threshold-mb MB] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import djbench  # noqa: E402

TIME_LIMIT_S = 120.0  # --requests beyond ~400k needs more; the loop stops at the limit


def rss_mb() -> float:
    """Resident set size of this process, from the kernel (VmRSS, in MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def dead_port() -> int:
    """A 127.0.0.1 port with nothing listening: bind, read the number, close."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CountingHandler(logging.Handler):
    """Counts log records by logger and level instead of printing thousands of warnings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}:{record.levelname}"
        self.counts[key] += 1
        self.samples.setdefault(key, record.getMessage()[:160])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument(
        "--threshold-mb",
        type=float,
        default=25.0,
        help="allowed RSS growth 20k -> end (half of it: mid-run -> end)",
    )
    parser.add_argument("--max-queue-size", type=int, default=10000, help="MAX_QUEUE_SIZE (default 10000)")
    parser.add_argument(
        "--max-retries",
        type=int,
        default=1,
        help="MAX_RETRIES (default 1: the first retry is at once, so each failed post is over fast); "
        "2 adds a 0.5 s backoff to every post, so the queue overflows whatever the machine's speed",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=3,
        help="MAX_IN_FLIGHT (default 3, the package's); 1 makes the queue overflow on any machine: "
        "each failed post then waits for its one sender, and nothing spools as fast as requests queue",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    counter = CountingHandler()
    for name in ("segment_middleware", "segment", "backoff", "urllib3"):
        lg = logging.getLogger(name)
        lg.addHandler(counter)
        lg.propagate = False
        lg.setLevel(logging.DEBUG if name == "segment_middleware" else logging.WARNING)

    port = dead_port()
    store = os.path.join(tempfile.mkdtemp(prefix="segment-bench-memory-"), "events.sqlite3")
    segment = {
        "WRITE_KEY": djbench.WRITE_KEY,
        "HOST": f"http://127.0.0.1:{port}",
        "MAX_QUEUE_SIZE": args.max_queue_size,
        "TIMEOUT": 0.5,
        "MAX_RETRIES": args.max_retries,
        "MAX_IN_FLIGHT": args.max_in_flight,
        "LOCAL_STORE": store,
        "SHUTDOWN_TIMEOUT": 2,
    }
    djbench.configure(segment, naive_host=None)
    import segment_middleware

    call = djbench.make_caller(djbench.build_handler(djbench.STACKS["ours"]), djbench.environ())
    gc.collect()
    # 10k: the queue has just filled; 20k: its overflow to disk runs too; then every step:
    # steady state (fail -> spool, full -> defer). The steady baseline is the first
    # checkpoint past 20k at or past half the run, so a short run (40k: 10k, 20k, 30k, 40k)
    # and the full one (100k: 10k, 20k, 50k, 100k) both have one.
    step = 50_000 if args.requests >= 100_000 else 10_000
    checkpoints = sorted(
        {n for n in (10_000, 20_000, *range(step, args.requests, step)) if n < args.requests}
    )
    checkpoints.append(args.requests)
    steady_mark = next((n for n in checkpoints if n > 20_000 and n >= args.requests // 2), checkpoints[-1])
    rss: dict[str, float] = {"before": rss_mb()}
    stats_at: dict[str, dict[str, int]] = {}
    print(
        f"endpoint http://127.0.0.1:{port} (nothing listening), MAX_QUEUE_SIZE {args.max_queue_size}, "
        f"TIMEOUT 0.5 s, MAX_RETRIES {args.max_retries}, MAX_IN_FLIGHT {args.max_in_flight}, spool {store}"
    )
    print(f"  before            RSS {rss['before']:7.1f} MB")
    start = time.monotonic()
    done = 0
    timed_out = False
    for mark in checkpoints:
        while done < mark:
            if time.monotonic() - start > TIME_LIMIT_S:
                timed_out = True
                break
            batch = min(1000, mark - done)
            djbench.run_requests(call, batch)
            done += batch
        if timed_out:
            break
        gc.collect()
        rss[str(mark)] = rss_mb()
        stats_at[str(mark)] = segment_middleware.stats()
        s = stats_at[str(mark)]
        print(
            f"  after {mark:>7,}   RSS {rss[str(mark)]:7.1f} MB   pending {pending_of(s):>6}"
            f"  dropped {s['dropped']:>6}  spooled {s['spooled']:>6}  deferred {s['deferred']:>6}"
            f"  ({time.monotonic() - start:5.1f} s)"
        )
    elapsed = time.monotonic() - start
    final = segment_middleware.stats()
    settled = segment_middleware.flush(timeout=15)
    after_flush = segment_middleware.stats()
    pending = pending_of(after_flush)

    full = rss.get("10000", rss["before"])
    first = rss.get("20000", full)
    steady = rss.get(str(steady_mark), first)
    last = rss.get(str(checkpoints[-1]), float("nan"))
    growth = last - first
    steady_growth = last - steady
    bounded = not timed_out and growth < args.threshold_mb and steady_growth < args.threshold_mb / 2
    spool_rows = _spool_rows(store)
    segment_middleware.shutdown(timeout=1)
    shutil.rmtree(os.path.dirname(store), ignore_errors=True)
    print(
        f"\nrequests {done:,} in {elapsed:.1f} s ({elapsed / max(done, 1) * 1e6:.0f} µs each)"
        + ("   [TIME LIMIT HIT]" if timed_out else "")
    )
    print(f"stats at the end of the loop: {final}")
    print(f"stats after flush(15) -> {settled}: {after_flush}   (still pending: {pending})")
    print(f"rows waiting in the store (spooled and deferred): {spool_rows}")
    print(f"log records: {dict(counter.counts)}")
    for key, sample in counter.samples.items():
        print(f"  e.g. {key}: {sample}")
    accounted = after_flush["queued"] == done
    print(
        f"every request queued one message: {'yes' if accounted else 'NO'} ({after_flush['queued']}/{done})"
    )
    per_item_kb = (full - rss["before"]) * 1024 / 10_000
    print(f"RSS per queued message (before -> 10k, while the queue fills): {per_item_kb:.1f} KB")
    print(f"RSS when the overflow to disk starts (10k -> 20k, once): {first - full:+.1f} MB")
    print(
        f"RSS growth 20k -> {checkpoints[-1] // 1000}k: {growth:+.1f} MB (< {args.threshold_mb:g}), "
        f"{steady_mark // 1000}k -> {checkpoints[-1] // 1000}k: {steady_growth:+.1f} MB "
        f"(< {args.threshold_mb / 2:g})  "
        f"[bounded: {'PASS' if bounded else 'FAIL'}]"
    )
    if args.json:
        result: dict[str, Any] = {
            "requests": done,
            "seconds": round(elapsed, 1),
            "rss_mb": rss,
            "growth_mb": growth,
            "steady_growth_mb": steady_growth,
            "bounded": bounded,
            "stats": stats_at,
            "final_stats": final,
            "after_flush": after_flush,
            "spool_rows": spool_rows,
            "log_records": dict(counter.counts),
        }
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if bounded and accounted else 1


def pending_of(stats: dict[str, int]) -> int:
    """Queued and not yet settled (includes the batch in flight)."""
    return stats["queued"] - sum(stats[k] for k in ("delivered", "failed", "dropped", "spooled", "deferred"))


def _spool_rows(path: str) -> int:
    import sqlite3

    if not os.path.exists(path):
        return 0
    with sqlite3.connect(path) as conn:
        sql = "SELECT count(*) FROM events WHERE kind IN ('spool', 'deferred')"
        return int(conn.execute(sql).fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())
