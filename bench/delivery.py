"""Delivery throughput: messages per second to a local receiver, ours vs the plain SDK.

Both pipelines get the same work in the same run: M ``track`` calls with the same
properties, made as fast as one thread can, then a flush. Each runs in its own child
process (so one's threads and memory cannot tax the other), against a receiver in a third
process, so the CPU measured is the client's only. Reported per pipeline: wall time from the
first call to the last message acknowledged, messages per second, process CPU per message
(caller thread + sender thread), and what the receiver counted.

Run: ``python bench/delivery.py [--messages N] [--json PATH]``. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

PROPS = {"product_id": "p-123", "sku": "SKU-9", "price": 24.5, "currency": "USD", "category": "coffee"}


def child(kind: str, host: str, count: int) -> dict[str, Any]:
    """Runs in a fresh process: make ``count`` calls, flush, report times (imports untimed)."""
    from segment.analytics import Client

    import segment_middleware

    cpu0, wall0 = time.process_time(), time.perf_counter()
    if kind == "ours":
        store = os.path.join(tempfile.mkdtemp(prefix="bench-delivery-"), "spool.sqlite3")
        segment_middleware.configure(
            write_key=common.WRITE_KEY, host=host, max_queue_size=count, local_store=store
        )
        tracker = segment_middleware.tracker(user_id="bench-user")
        for i in range(count):
            tracker.track("Product Viewed", {**PROPS, "i": i})
        calls_done = time.perf_counter()
        ok = segment_middleware.flush(timeout=120)
        stats = segment_middleware.stats()
    else:
        client = Client(common.WRITE_KEY, host=host, max_queue_size=count)
        for i in range(count):
            client.track(user_id="bench-user", event="Product Viewed", properties={**PROPS, "i": i})
        calls_done = time.perf_counter()
        ok = common.sdk_flush(client, 120)
        stats = {}
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {
        "kind": kind,
        "calls_seconds": calls_done - wall0,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "flushed": ok,
        "stats": stats,
    }


def run(kind: str, count: int) -> dict[str, Any]:
    receiver = common.Receiver()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--host", receiver.url, "--messages", str(count)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{kind} child failed:\n{proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        counts = receiver.summary()
    finally:
        receiver.stop()
    result["received"] = counts["messages"]
    result["message_ids"] = counts["message_ids"]
    result["posts"] = counts["requests"]
    result["per_second"] = result["received"] / result["wall_seconds"]
    result["cpu_us_per_message"] = result["cpu_seconds"] / max(1, result["received"]) * 1e6
    result["caller_us_per_call"] = result["calls_seconds"] / count * 1e6
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--child", choices=("ours", "sdk"), help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.host, args.messages)), flush=True)
        return 0

    results = {kind: run(kind, args.messages) for kind in ("ours", "sdk")}
    print(f"{args.messages} track calls, one thread, receiver in its own process on 127.0.0.1")
    print(
        f"{'':6} {'received':>9} {'posts':>6} {'msg/s':>9} {'cpu µs/msg':>11}"
        f" {'caller µs/call':>15} {'wall s':>7}"
    )
    for kind, r in results.items():
        print(
            f"{kind:6} {r['received']:>9} {r['posts']:>6} {r['per_second']:>9.0f}"
            f" {r['cpu_us_per_message']:>11.1f} {r['caller_us_per_call']:>15.1f} {r['wall_seconds']:>7.2f}"
        )
    ours, sdk = results["ours"], results["sdk"]
    print(
        f"ours/sdk: throughput {ours['per_second'] / sdk['per_second']:.2f}x, "
        f"cpu per message {ours['cpu_us_per_message'] / sdk['cpu_us_per_message']:.2f}x"
    )
    complete = all(r["received"] == r["message_ids"] == args.messages for r in results.values())
    print(f"every message received by both: {'yes' if complete else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
