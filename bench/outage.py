"""An outage at the endpoint: memory stays bounded, the overflow goes to disk, and it all drains.

Why: an analytics middleware that buffers without limit turns an outage at the vendor into
an outage of your app. The package keeps a bounded queue (``MAX_QUEUE_SIZE``), overflows to
the local store (deferred rows) and spools batches that fail after their retries. This
script drives ``--requests`` requests through the in-process Django handler of ``common``
while ``HOST`` points at a 127.0.0.1 port where nothing listens (every post is refused),
with a short ``TIMEOUT``/``MAX_RETRIES`` so the sender keeps cycling, and prints:

1. RSS (VmRSS) after 10k and 20k requests (the queue is full; the overflow to disk has
   started, a one-off cost), at half the run and at the end: growth after 20k is a leak;
2. ``stats()`` at each checkpoint (queued, spooled, deferred, dropped);
3. the drain: a receiver starts on that same port; the sender delivers the deferred rows
   by itself (timed), then ``segment-middleware replay`` sends the spool, as an operator
   would. Every request's page call must arrive exactly once by messageId.

``--soak SECONDS`` runs the test suite's soak instead (``tests/soak_scenario.py``: Flask
under gunicorn at ~1,000 requests/s, a faulty endpoint, worker restarts, then a replay) for
that long and prints its report.

Run: ``python bench/outage.py [--requests 100000] [--json PATH]`` or ``--soak 600``.
Nothing leaves 127.0.0.1; see bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

LIMIT_S = 300.0  # the request loop stops here whatever --requests says


def soak(seconds: float) -> int:
    sys.path.insert(0, str(common.ROOT / "tests"))
    from soak_scenario import SoakConfig, run_soak

    result = run_soak(SoakConfig(seconds=seconds), progress=common.log)
    print(result.report())
    problems = result.problems()
    print("promises: " + ("all held" if not problems else "NOT HELD: " + "; ".join(problems)))
    return 0 if not problems else 1


def pending(stats: dict[str, int]) -> int:
    """Queued and not yet settled anywhere (the batch in flight included)."""
    return stats["queued"] - sum(stats[k] for k in ("delivered", "failed", "dropped", "spooled", "deferred"))


def outage(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("segment_middleware", "segment", "backoff", "urllib3"):
        logging.getLogger(name).disabled = True  # thousands of refused posts: counted in stats()
    port = common.free_port()
    workdir = tempfile.mkdtemp(prefix="segment-bench-outage-")
    store = os.path.join(workdir, "events.sqlite3")
    host = f"http://127.0.0.1:{port}"
    segment = {"WRITE_KEY": common.WRITE_KEY, "HOST": host, "TIMEOUT": 0.5, "MAX_RETRIES": args.max_retries}
    segment |= {"MAX_QUEUE_SIZE": args.max_queue_size, "LOCAL_STORE": store, "SHUTDOWN_TIMEOUT": 5}
    common.configure_django(segment)
    import segment_middleware

    call = common.wsgi_caller(common.django_handler(common.STACKS["ours"]))
    n = args.requests
    marks = sorted({m for m in (10_000, 20_000, n // 2) if m < n} | {n})
    rss: dict[str, float] = {"start": common.rss_mb()}
    stats: dict[str, dict[str, int]] = {}
    done, started = 0, time.monotonic()
    for mark in marks:
        while done < mark and time.monotonic() - started < LIMIT_S:
            if call() != 200:
                raise RuntimeError("a request did not answer 200")
            done += 1
        gc.collect()
        rss[str(mark)], stats[str(mark)] = common.rss_mb(), segment_middleware.stats()
        s = stats[str(mark)]
        common.log(
            f"  {done:>7} requests  RSS {rss[str(mark)]:6.1f} MB  "
            f"spooled {s['spooled']}  deferred {s['deferred']}"
        )
    loop_s = time.monotonic() - started
    first = rss.get("20000", rss.get("10000", rss["start"]))
    growth = rss[str(marks[-1])] - first
    receiver = common.Receiver(port=port)  # the endpoint comes back
    try:
        t0 = time.monotonic()
        segment_middleware.flush(60)
        s = segment_middleware.stats()
        live = s["queued"] - s["spooled"] - s["dropped"] - s["failed"]
        got = receiver.wait_for(live, args.drain_timeout)
        drain_s = time.monotonic() - t0
        after_drain = segment_middleware.stats()
        segment_middleware.shutdown(10)
        # the operator's replay: the environment's settings, not a Django project's
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env["SEGMENT_LOCAL_STORE"] = store
        t1 = time.monotonic()
        replay = subprocess.run(
            [
                str(common.BIN / "segment-middleware"),
                "replay",
                "--write-key",
                common.WRITE_KEY,
                "--host",
                host,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=workdir,
        )
        replay_s = time.monotonic() - t1
        received = receiver.summary()
    finally:
        receiver.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "requests": done,
        "loop_seconds": round(loop_s, 1),
        "rss_mb": rss,
        "growth_after_20k_mb": growth,
        "bounded": done == n and growth < args.threshold_mb,
        "stats": stats,
        "live_drained": got,
        "drain_seconds": round(drain_s, 2),
        "after_drain": after_drain,
        "replay": {"exit": replay.returncode, "output": (replay.stdout + replay.stderr).strip()[-300:]},
        "replay_seconds": round(replay_s, 2),
        "received": received,
        # dropped messages are counted (stats) and logged, never sent: all the others arrive once
        "dropped": after_drain["dropped"],
        "delivered_ok": common.one_page_per_request(received, done - after_drain["dropped"]),
    }


def report(r: dict[str, Any]) -> None:
    print(f"{r['requests']} requests into a refused endpoint in {r['loop_seconds']} s (in-process Django)")
    rows = [
        (mark, r["rss_mb"][mark], s["queued"], s["spooled"], s["deferred"], s["dropped"])
        for mark, s in r["stats"].items()
    ]
    print(common.table(("after", "RSS MB", "queued", "spooled", "deferred", "dropped"), rows))
    print(
        f"  RSS at start {r['rss_mb']['start']:.1f} MB; growth after 20k {r['growth_after_20k_mb']:+.1f} MB: "
        f"{'bounded' if r['bounded'] else 'NOT BOUNDED'}"
    )
    d = r["after_drain"]
    print(
        f"endpoint back: the sender delivered {r['live_drained']} (deferred rows included) "
        f"in {r['drain_seconds']} s, deferred then {d['deferred']}; replay of {d['spooled']} spooled "
        f"in {r['replay_seconds']} s "
        f"(exit {r['replay']['exit']}: {r['replay']['output']})"
    )
    rx = r["received"]
    print(
        f"receiver: {rx['messages']} messages, {rx['message_ids']} distinct ids for "
        f"{r['requests']} requests, {r['dropped']} dropped (counted): "
        f"{'ok' if r['delivered_ok'] else 'MISMATCH'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument(
        "--max-queue-size", type=int, default=10_000, help="MAX_QUEUE_SIZE (the package's default)"
    )
    parser.add_argument("--max-retries", type=int, default=1, help="MAX_RETRIES while the endpoint is down")
    parser.add_argument(
        "--threshold-mb", type=float, default=25.0, help="allowed RSS growth after 20k requests"
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="run the soak scenario instead")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    if args.soak:
        return soak(args.soak)
    result = outage(args)
    report(result)
    print(f"({common.versions()})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["bounded"] and result["delivered_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
