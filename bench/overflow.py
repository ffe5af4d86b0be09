"""Issue 13's speed: the request path when the queue overflows to the spool, and MAX_IN_FLIGHT.

What it measures (every part in a fresh child interpreter; every Segment endpoint in a
process of its own on 127.0.0.1, so its CPU is not the measured process's):

1. **The request thread's cost per call, normal vs overflowing.** ``track()`` on a real
   tracker (``Runtime(Settings(...)).tracker(...)``), in chunks of C calls timed with
   ``time.thread_time`` (the calling thread's CPU) and ``perf_counter`` (wall). After each
   chunk the pipeline settles, untimed, so the next chunk starts with idle background
   threads either way. *Normal*: a healthy receiver (``rawreceiver.py``), the queue far
   from full; settling is ``flush()``. *Overflowing*: an endpoint that accepts and never
   answers (the test receiver's ``slow(3600)``, ``TIMEOUT`` 3600): ``MAX_IN_FLIGHT``
   senders hang with a batch each, the queue holds ``MAX_QUEUE_SIZE``, and every call goes
   to the handoff and from there, on the writer thread, to the spool's deferred rows;
   settling is waiting until ``pending`` is back where it was (the chunk is on disk). Both
   runtimes live in one process and take turns chunk by chunk, who goes first alternating;
   the headline is the median of the rounds' overflowing/normal ratios.
2. **Whole-process CPU per message**, over the same chunks: ``time.process_time`` (all
   threads) from a chunk's first call until it is settled (delivered, or on disk as
   deferred rows), divided by the calls. Then the endpoint is made healthy
   (SIGUSR1: the receiver cuts the hanging posts and answers again) and the CPU per
   deferred row drained by the primary sender is measured over a bounded window.
3. **Sender throughput**: M messages queued as fast as one thread can, then ``flush()``;
   wall clock from the first call until ``flush()`` returns. A healthy receiver with
   ``MAX_IN_FLIGHT`` 1 and 3 (alternating repetitions), and a receiver that answers every
   post after 1 s with ``MAX_IN_FLIGHT`` 1, 3 and 4.
4. **A/B against committed code**: part 1's normal loop in children that import either
   the committed package (a temporary ``git worktree`` of ``--ab REF``, by PYTHONPATH) or
   the working tree, alternating, the order flipped every pair.

Run: ``python bench/overflow.py [--quick] [--json PATH] [--ab REF | --no-ab] [--parts 1,3,4]``
(``--quick``: a smoke run of a few seconds, without the A/B unless ``--ab`` is given).
Exit code 1 when an accounting check fails (a message dropped, lost or not received);
speed is read, never judged by the exit code. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from memory import CountingHandler  # noqa: E402
from overhead import WRITE_KEY, Receiver, log  # noqa: E402

EVENT = "Product Viewed"
PROPS = {"product_id": "p-123", "sku": "SKU-9", "price": 24.5, "currency": "USD", "category": "coffee"}
HANG_SECONDS = 3600.0  # the hanging endpoint's delay, and the client's TIMEOUT: nothing times out

#: The test suite's receiver in its own process, answering every post after ``argv[1]``
#: seconds (``slow()``); SIGUSR1 makes it healthy: the posts it is sitting on are cut (the
#: client retries them) and every later one is answered at once.
SLOW_RECEIVER = (
    "import signal, sys\n"
    f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
    "import segment_receiver as t\n"
    "t._Handler.disable_nagle_algorithm = True\n"
    "seconds = float(sys.argv.pop(1))\n"
    "_start = t.SegmentReceiver.start\n"
    "def start(self):\n"
    "    _start(self)\n"
    "    self.slow(seconds)\n"
    "    def recover(signum, frame):\n"
    "        self.refuse()\n"
    "        self.healthy()\n"
    "    signal.signal(signal.SIGUSR1, recover)\n"
    "    return self\n"
    "t.SegmentReceiver.start = start\n"
    "sys.exit(t.main())\n"
)


# ---------------------------------------------------------------------- sizes
def sizes(quick: bool) -> dict[str, Any]:
    """Run sizes and the time limits that bound every loop."""
    if quick:
        return {
            "rounds": 3,
            "chunks": 4,
            "chunk": 500,
            "drain_s": 2.0,
            "healthy_messages": 2000,
            "healthy_reps": 1,
            "healthy_in_flight": (1, 3),
            "slow_messages": 200,
            "slow_flush_at": 50,
            "slow_max_queue": 200,  # so that helpers start with a backlog this short
            "slow_seconds": 0.25,
            "slow_in_flight": (1, 3),
            "ab_pairs": 1,
            "ab_rounds": 2,
            "ab_chunks": 4,
            "part_limit_s": 60.0,
        }
    return {
        "rounds": 7,
        "chunks": 20,
        "chunk": 500,
        "drain_s": 8.0,
        "healthy_messages": 20_000,
        "healthy_reps": 5,
        "healthy_in_flight": (1, 3),
        "slow_messages": 3000,
        "slow_flush_at": 100,
        "slow_max_queue": 10_000,  # the default
        "slow_seconds": 1.0,
        "slow_in_flight": (1, 3, 4),
        "ab_pairs": 10,
        "ab_rounds": 5,
        "ab_chunks": 10,
        "part_limit_s": 90.0,
    }


# ---------------------------------------------------------------------- small helpers
def package_fingerprint() -> str:
    """A hash of the package's source as measured (as in ``tail.py``): uncommitted work
    changes it, and figures are only comparable for the same code."""
    digest = hashlib.sha1()
    for path in sorted((ROOT / "segment_middleware").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quiet_logs() -> CountingHandler:
    counter = CountingHandler()
    for name in ("segment_middleware", "segment", "backoff", "urllib3"):
        lg = logging.getLogger(name)
        lg.addHandler(counter)
        lg.propagate = False
        lg.setLevel(logging.INFO if name == "segment_middleware" else logging.WARNING)
    return counter


def Endpoint(max_seconds: float, slow: float | None = None) -> Receiver:
    """A Segment endpoint in its own process: healthy (``rawreceiver.py``: keeps the bodies,
    answers at once) or slow (the test suite's receiver answering each post after ``slow``
    seconds; with HANG_SECONDS it accepts and never answers within the run)."""
    launch = [str(HERE / "rawreceiver.py")] if slow is None else ["-c", SLOW_RECEIVER, str(slow)]
    return Receiver(max_seconds, launch=launch)


def runtime(host: str, store: str, **settings: Any) -> Any:
    """A pipeline of its own (``Runtime``), the way an adapter makes one."""
    from segment_middleware.core import Runtime
    from segment_middleware.settings import Settings

    return Runtime(Settings(write_key=WRITE_KEY, host=host, local_store=store, **settings))


# ---------------------------------------------------------------------- the timed loop
Track = Callable[..., None]


Variant = tuple[Track, Callable[[], None]]  # the calls, and how to wait until they are settled


def timed_round(variants: dict[str, Variant], chunks: int, size: int) -> dict[str, dict[str, float]]:
    """``chunks`` x ``size`` calls per variant, the variants taking turns chunk by chunk
    (the first of each pair alternating), so that the machine's drift hits them alike.
    Per call and variant: the calling thread's CPU and wall time inside the loops; the
    whole process's CPU and the calling thread's from a chunk's first call until it is
    settled (every other variant's background threads are idle then: settled too)."""
    gc.collect()
    names = list(variants)
    sums = {name: dict.fromkeys(("thread", "wall", "process", "caller"), 0.0) for name in names}
    for i in range(chunks):
        for name in names if i % 2 == 0 else reversed(names):
            track, settle = variants[name]
            acc = sums[name]
            p0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
            for _ in range(size):
                track(EVENT, PROPS)
            t1, w1 = time.thread_time(), time.perf_counter()
            settle()
            acc["thread"] += t1 - t0
            acc["wall"] += w1 - w0
            acc["process"] += time.process_time() - p0
            acc["caller"] += time.thread_time() - t0
    scale = 1e6 / (chunks * size)
    return {
        name: {
            "thread_us": acc["thread"] * scale,
            "wall_us": acc["wall"] * scale,
            "process_us": acc["process"] * scale,
            "caller_us": acc["caller"] * scale,
            "others_us": (acc["process"] - acc["caller"]) * scale,
        }
        for name, acc in sums.items()
    }


def flush_settle(rt: Any) -> Callable[[], None]:
    def settle() -> None:
        if not rt.delivery.flush(30):
            raise RuntimeError("flush(30) timed out")

    return settle


def deferred_settle(rt: Any, base: int) -> Callable[[], None]:
    """Wait until the writer thread has put every message handed off since on disk."""
    d = rt.delivery

    def settle() -> None:
        end = time.monotonic() + 30
        while d.pending > base:
            if time.monotonic() > end:
                raise RuntimeError(f"the overflow writer did not catch up within 30 s (pending {d.pending})")
            time.sleep(0.0005)

    return settle


def summarize_rounds(rounds: list[dict[str, float]]) -> dict[str, Any]:
    keys = ("thread_us", "wall_us", "process_us", "caller_us", "others_us")
    out: dict[str, Any] = {key: median([r[key] for r in rounds]) for key in keys}
    out["rounds"] = [{key: round(r[key], 3) for key in keys} for r in rounds]
    return out


# ---------------------------------------------------------------------- parts 1 and 2 (child)
def fill_until_overflowing(rt: Any, track: Track, deadline: float) -> dict[str, Any]:
    """Calls until the queue is full and MAX_IN_FLIGHT senders hang on the endpoint, then a
    few hundred more (the writer thread starts), settled: every later call overflows."""
    d = rt.delivery
    q_max, senders = rt.settings.max_queue_size, rt.settings.max_in_flight
    made, limit = 0, 3 * q_max + 10_000
    while made < limit and time.monotonic() < deadline:
        if len(d.queue) >= q_max and d.posting >= senders:
            break
        for _ in range(20):
            track(EVENT, PROPS)
        made += 20
        # A busy site's pace, not a tight loop's: the writer keeps up with it while the
        # helpers start (each once every sender has waited SLOW_POST on the endpoint).
        time.sleep(0.001)
    for _ in range(500):
        track(EVENT, PROPS)
    made += 500
    end = time.monotonic() + 30
    while len(d.overflow.handoff) or d.pending > len(d.queue) + d.posting * rt.settings.flush_at:
        if time.monotonic() > end:
            break
        time.sleep(0.005)
    return {"calls": made, "queue": len(d.queue), "posting": d.posting, "stats": d.stats()}


def child_requests(args: argparse.Namespace) -> dict[str, Any]:
    cfg = sizes(args.quick)
    counter = quiet_logs()
    deadline = time.monotonic() + cfg["part_limit_s"] * 0.8
    normal = runtime(args.url, os.path.join(args.store, "normal.sqlite3"))
    over = runtime(
        args.hang_url,
        os.path.join(args.store, "overflow.sqlite3"),
        timeout=HANG_SECONDS,
        shutdown_timeout=2.0,
    )
    track_normal = normal.tracker(user_id="bench-user").track
    track_over = over.tracker(user_id="bench-user").track
    filled = fill_until_overflowing(over, track_over, deadline)
    base = over.delivery.pending
    before = over.delivery.stats()
    chunks, size = cfg["chunks"], cfg["chunk"]
    variants: dict[str, Variant] = {
        "normal": (track_normal, flush_settle(normal)),
        "overflowing": (track_over, deferred_settle(over, base)),
    }
    timed_round(variants, max(2, chunks // 4), size)  # warm-up, not recorded
    rounds: dict[str, list[dict[str, float]]] = {"normal": [], "overflowing": []}
    for r in range(cfg["rounds"]):
        if time.monotonic() > deadline:
            log(f"  time limit reached after {r} rounds")
            break
        measured = timed_round(variants if r % 2 == 0 else dict(reversed(variants.items())), chunks, size)
        for name, figures in measured.items():
            rounds[name].append(figures)
    d = over.delivery
    after = d.stats()
    handed = after["queued"] - before["queued"]
    result: dict[str, Any] = {
        "rounds": len(rounds["normal"]),
        "chunks": chunks,
        "chunk": size,
        "fill": filled,
        "normal": summarize_rounds(rounds["normal"]),
        "overflowing": summarize_rounds(rounds["overflowing"]),
        "paired_ratios": [
            round(o["thread_us"] / n["thread_us"], 3)
            for n, o in zip(rounds["normal"], rounds["overflowing"], strict=True)
        ],
        "overflow_check": {
            "handed": handed,
            "deferred_added": after["deferred"] - before["deferred"],
            "dropped_added": after["dropped"] - before["dropped"],
            "queue_full": len(d.queue) >= over.settings.max_queue_size,
            "posting": d.posting,
        },
        "normal_sent": normal.delivery.stats()["queued"],
    }
    result["drain"] = measure_drain(over, args.hang_pid, cfg["drain_s"], deadline + 30)
    normal.delivery.shutdown(5)
    over.delivery.shutdown(2)
    result["normal_stats"] = normal.delivery.stats()
    result["overflow_stats"] = over.delivery.stats()
    result["logs"] = dict(counter.counts)
    result["log_samples"] = counter.samples
    return result


def measure_drain(rt: Any, hang_pid: int, window: float, deadline: float) -> dict[str, Any]:
    """The endpoint answers again: wait until the live queue and the hung batches are sent,
    then CPU and wall time per deferred row the primary sender drains, over ``window`` s."""
    d = rt.delivery
    t_heal = time.perf_counter()
    os.kill(hang_pid, signal.SIGUSR1)
    while d.pending > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    live_s = time.perf_counter() - t_heal
    if d.pending > 0:
        return {"error": f"live queue not sent in time (pending {d.pending})"}
    rows0, cpu0, w0 = d.counts["deferred"], time.process_time(), time.perf_counter()
    end = min(deadline, time.monotonic() + window)
    while d.counts["deferred"] > 0 and time.monotonic() < end:
        time.sleep(0.005)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - w0
    drained = rows0 - d.counts["deferred"]
    return {
        "live_seconds": live_s,
        "rows_at_start": rows0,
        "drained": drained,
        "seconds": wall,
        "rows_per_s": drained / wall if wall else float("nan"),
        "cpu_us_per_row": cpu / drained * 1e6 if drained else float("nan"),
    }


def run_requests(args: argparse.Namespace) -> dict[str, Any]:
    cfg = sizes(args.quick)
    healthy = Endpoint(cfg["part_limit_s"] + 90)
    hang = Endpoint(cfg["part_limit_s"] + 90, slow=HANG_SECONDS)
    store = tempfile.mkdtemp(prefix="segment-bench-overflow-")
    argv = ["--child", "requests", "--url", healthy.url, "--hang-url", hang.url, "--store", store]
    argv += ["--hang-pid", str(hang.proc.pid)]
    try:
        result = run_child(argv, args.quick, cfg["part_limit_s"] + 60)
    finally:
        result_rx = {"healthy": healthy.stop(), "hang": hang.stop()}
        shutil.rmtree(store, ignore_errors=True)
    result["received"] = result_rx
    return result


# ---------------------------------------------------------------------- part 3 (child)
def child_throughput(args: argparse.Namespace) -> dict[str, Any]:
    counter = quiet_logs()
    rt = runtime(
        args.url,
        os.path.join(args.store, "throughput.sqlite3"),
        flush_at=args.flush_at,
        max_queue_size=args.max_queue,
        max_in_flight=args.in_flight,
    )
    d = rt.delivery
    track = rt.tracker(user_id="bench-user").track
    peaks = {"senders": 0, "posting": 0}
    stop = threading.Event()

    def watch() -> None:  # how many senders really ran; ~0.1 % of a core
        while not stop.wait(0.01):
            peaks["senders"] = max(peaks["senders"], len(getattr(d, "_senders", ())))
            peaks["posting"] = max(peaks["posting"], d.posting)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cpu0, w0 = time.process_time(), time.perf_counter()
    for _ in range(args.messages):
        track(EVENT, PROPS)
    queued_s = time.perf_counter() - w0
    flushed = d.flush(args.limit)
    wall = time.perf_counter() - w0
    cpu = time.process_time() - cpu0
    stop.set()
    watcher.join(1)
    d.shutdown(2)
    return {
        "messages": args.messages,
        "in_flight": args.in_flight,
        "flushed": flushed,
        "queued_seconds": queued_s,
        "wall_seconds": wall,
        "cpu_us_per_message": cpu / args.messages * 1e6,
        "peak_senders": peaks["senders"],
        "peak_posting": peaks["posting"],
        "stats": d.stats(),
        "logs": dict(counter.counts),
    }


def run_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Each configuration in a fresh child with a fresh receiver."""
    cfg = sizes(args.quick)
    plans: list[tuple[str, int, int, int, int, float | None]] = []
    for rep in range(cfg["healthy_reps"]):
        order = cfg["healthy_in_flight"] if rep % 2 == 0 else tuple(reversed(cfg["healthy_in_flight"]))
        for n in order:
            m = cfg["healthy_messages"]
            plans.append(("healthy", n, m, 100, m, None))
    for n in cfg["slow_in_flight"]:
        m = cfg["slow_messages"]
        plans.append(("slow", n, m, cfg["slow_flush_at"], cfg["slow_max_queue"], cfg["slow_seconds"]))
    out: dict[str, Any] = {"healthy": [], "slow": [], "slow_seconds": cfg["slow_seconds"]}
    part_end = time.monotonic() + 4 * cfg["part_limit_s"]
    for kind, n, m, flush_at, max_queue, slow in plans:
        remaining = part_end - time.monotonic()
        if remaining < 10:
            log(f"  throughput: time limit reached, {kind} MAX_IN_FLIGHT={n} skipped")
            continue
        limit = min(60.0, remaining - 5)
        rx = Endpoint(limit + 60, slow=slow)
        store = tempfile.mkdtemp(prefix="segment-bench-overflow-")
        argv = ["--child", "throughput", "--url", rx.url, "--store", store, "--in-flight", str(n)]
        argv += ["--messages", str(m), "--flush-at", str(flush_at), "--max-queue", str(max_queue)]
        argv += ["--limit", str(limit)]
        try:
            result = run_child(argv, args.quick, limit + 30)
        finally:
            received = rx.stop()
            shutil.rmtree(store, ignore_errors=True)
        result.update(flush_at=flush_at, max_queue=max_queue, received=received["messages"])
        result["posts"] = received["requests"]
        result["per_second"] = received["messages"] / result["wall_seconds"]
        out[kind].append(result)
        log(
            f"  {kind:7} MAX_IN_FLIGHT={n}: {result['per_second']:8.0f} msg/s "
            f"({received['messages']}/{m} in {result['wall_seconds']:.2f} s)"
        )
    return out


# ---------------------------------------------------------------------- part 4 (child)
def child_ab(args: argparse.Namespace) -> dict[str, Any]:
    """Part 1's normal loop with whichever package this interpreter imports."""
    cfg = sizes(args.quick)
    counter = quiet_logs()
    import segment_middleware

    rt = runtime(args.url, os.path.join(args.store, f"ab-{os.getpid()}.sqlite3"))
    track = rt.tracker(user_id="bench-user").track
    variants: dict[str, Variant] = {"normal": (track, flush_settle(rt))}
    chunks, size = cfg["ab_chunks"], cfg["chunk"]
    timed_round(variants, max(1, chunks // 2), size)  # warm-up
    rounds = [timed_round(variants, chunks, size)["normal"] for _ in range(cfg["ab_rounds"])]
    rt.delivery.shutdown(5)
    stats = rt.delivery.stats()
    return {
        "file": segment_middleware.__file__,
        **summarize_rounds(rounds),
        "sent": stats["queued"],
        "delivered": stats["delivered"],
        "logs": dict(counter.counts),
    }


def run_ab(args: argparse.Namespace, ref: str) -> dict[str, Any]:
    cfg = sizes(args.quick)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="segment-bench-ab-")
    old = os.path.join(tmp, "old")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", old, ref],
        capture_output=True,
        text=True,
        check=True,
    )
    rx = Endpoint(cfg["part_limit_s"] * 3)
    store = os.path.join(tmp, "stores")
    os.makedirs(store)
    sides: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    try:
        end = time.monotonic() + 2 * cfg["part_limit_s"]
        for pair in range(cfg["ab_pairs"]):
            if time.monotonic() > end:
                log(f"  A/B: time limit reached after {pair} pairs")
                break
            for side in ("old", "new") if pair % 2 == 0 else ("new", "old"):
                env = dict(os.environ)
                if side == "old":
                    env["PYTHONPATH"] = os.pathsep.join(p for p in (old, env.get("PYTHONPATH")) if p)
                argv = ["--child", "ab", "--url", rx.url, "--store", store]
                sides[side].append(run_child(argv, args.quick, cfg["part_limit_s"], env))
    finally:
        received = rx.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", old], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {"ref": ref, "commit": commit, "received": received["messages"]}
    for side, runs in sides.items():
        out[side] = {
            "thread_us": median([r["thread_us"] for r in runs]),
            "thread_us_min": min([r["thread_us"] for r in runs], default=float("nan")),
            "wall_us": median([r["wall_us"] for r in runs]),
            "process_us": median([r["process_us"] for r in runs]),
            "children_thread_us": [round(r["thread_us"], 3) for r in runs],
            "files": sorted({r["file"] for r in runs}),
            "sent": sum(r["sent"] for r in runs),
        }
    out["imports_ok"] = all(f.startswith(old) for f in out["old"]["files"]) and all(
        f.startswith(str(ROOT / "segment_middleware")) for f in out["new"]["files"]
    )
    return out


# ---------------------------------------------------------------------- parent
def run_child(
    argv: list[str], quick: bool, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *argv, *(["--quick"] if quick else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv[1]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def report(results: dict[str, Any]) -> list[str]:
    """Print the figures; return the accounting failures."""
    failures: list[str] = []
    if "requests" in results:
        failures += report_requests(results["requests"])
    if "throughput" in results:
        failures += report_throughput(results["throughput"])
    if "ab" in results:
        failures += report_ab(results["ab"])
    return failures


def report_requests(req: dict[str, Any]) -> list[str]:
    failures: list[str] = []
    n, o = req["normal"], req["overflowing"]
    calls = req["chunks"] * req["chunk"]
    print(
        f"\n1. request thread, µs per track() call (median of {req['rounds']} rounds x {calls:,} calls "
        f"in chunks of {req['chunk']}; thread CPU / wall in the loop):"
    )
    for label, v in (
        ("normal      (healthy endpoint, queue not full)", n),
        ("overflowing (full, hanging)", o),
    ):
        print(f"   {label:50} {v['thread_us']:6.2f} / {v['wall_us']:6.2f}")
    ratio = median(req["paired_ratios"])
    print(
        f"   overflowing / normal, median of the rounds' ratios: {ratio:.2f}x thread CPU   "
        f"[target <= 1: {'met' if ratio <= 1.0 else f'over by {(ratio - 1) * 100:.0f} %'}]; "
        f"ratio of the medians {o['thread_us'] / n['thread_us']:.2f}x thread CPU, "
        f"{o['wall_us'] / n['wall_us']:.2f}x wall"
    )
    print("   per round, thread CPU: normal      " + " ".join(f"{r['thread_us']:5.2f}" for r in n["rounds"]))
    print("                          overflowing " + " ".join(f"{r['thread_us']:5.2f}" for r in o["rounds"]))
    print("                          ratio       " + " ".join(f"{x:5.2f}" for x in req["paired_ratios"]))
    print("\n2. whole process CPU per message, µs (all threads, until each chunk's messages are settled):")
    print(
        f"   normal      (encoded, posted)                {n['process_us']:6.1f}  "
        f"(calling thread {n['caller_us']:.1f}, sender {n['others_us']:.1f})"
    )
    print(
        f"   overflowing (encoded, written as deferred)   {o['process_us']:6.1f}  "
        f"(calling thread {o['caller_us']:.1f}, writer {o['others_us']:.1f})"
    )
    print(f"   overflowing / normal: {o['process_us'] / n['process_us']:.2f}x")
    dr = req.get("drain", {})
    if "error" in dr:
        print(f"   drain: {dr['error']}")
        failures.append("drain: " + dr["error"])
    else:
        print(
            f"   then the endpoint answers again: live queue sent in {dr['live_seconds']:.1f} s; deferred "
            f"rows drained {dr['drained']:,} of {dr['rows_at_start']:,} in {dr['seconds']:.1f} s "
            f"({dr['rows_per_s']:.0f} rows/s, primary sender only), {dr['cpu_us_per_row']:.1f} µs CPU per row"
        )
    chk = req["overflow_check"]
    print(
        f"   checks: overflowed {chk['handed']:,}, deferred {chk['deferred_added']:,}, "
        f"dropped {chk['dropped_added']}, queue full {chk['queue_full']}, senders hanging {chk['posting']}"
    )
    if chk["dropped_added"] or chk["deferred_added"] != chk["handed"] or not chk["queue_full"]:
        failures.append(f"overflow accounting: {chk}")
    ns, os_ = req["normal_stats"], req["overflow_stats"]
    rx = req["received"]
    if rx["healthy"]["messages"] != ns["queued"] or ns["delivered"] != ns["queued"]:
        failures.append(f"normal delivery: sent {ns['queued']}, received {rx['healthy']['messages']}")
    if os_["dropped"]:
        failures.append(f"overflow runtime dropped {os_['dropped']}")
    print(
        f"   overflow runtime at exit: {os_}; hanging endpoint received {rx['hang']['messages']:,} "
        f"(delivered {os_['delivered']:,})"
    )

    return failures


def report_throughput(tp: dict[str, Any]) -> list[str]:
    failures: list[str] = []
    print("\n3. sender throughput, messages/s (wall clock, first call -> flush() returned):")
    print(f"   {'endpoint':28} {'in flight':>9} {'msg/s (runs)':>28} {'posts':>6} {'peak senders':>13}")
    slow_label = f"answers in {tp['slow_seconds']:g} s"
    for kind, label in (("healthy", "healthy (rawreceiver)"), ("slow", slow_label)):
        by_n: dict[int, list[dict[str, Any]]] = {}
        for r in tp[kind]:
            by_n.setdefault(r["in_flight"], []).append(r)
            if r["received"] != r["messages"] or not r["flushed"]:
                failures.append(f"throughput {kind} {r['in_flight']}: {r['received']}/{r['messages']}")
        for k in sorted(by_n):
            runs = by_n[k]
            rates = [r["per_second"] for r in runs]
            shown = f"{median(rates):.0f} ({', '.join(f'{x:.0f}' for x in rates)})"
            print(
                f"   {label + ', ' + str(runs[0]['messages']) + ' msgs':28} {k:>9} {shown:>28} "
                f"{runs[0]['posts']:>6} {max(r['peak_senders'] for r in runs):>13}"
            )
    for kind in ("healthy", "slow"):
        base = [r["per_second"] for r in tp[kind] if r["in_flight"] == 1]
        for k in sorted({r["in_flight"] for r in tp[kind]} - {1}):
            more = [r["per_second"] for r in tp[kind] if r["in_flight"] == k]
            if base and more:
                print(f"   {kind}: MAX_IN_FLIGHT={k} / 1 = {median(more) / median(base):.2f}x")

    return failures


def report_ab(ab: dict[str, Any]) -> list[str]:
    failures: list[str] = []
    old, new = ab["old"], ab["new"]
    print(
        f"\n4. A/B, normal path, µs per track() call (median over children; thread CPU / wall), "
        f"{ab['ref']} ({ab['commit']}) vs working tree:"
    )
    for label, v in (("committed", old), ("working tree", new)):
        each = " ".join(f"{x:.2f}" for x in v["children_thread_us"])
        print(f"   {label:13} {v['thread_us']:6.2f} / {v['wall_us']:6.2f}   children: {each}")
    print(
        f"   working tree / committed: {new['thread_us'] / old['thread_us']:.2f}x thread CPU, "
        f"{new['wall_us'] / old['wall_us']:.2f}x wall, {new['process_us'] / old['process_us']:.2f}x "
        f"process CPU per message; fastest child {new['thread_us_min'] / old['thread_us_min']:.2f}x "
        f"({old['thread_us_min']:.2f} / {new['thread_us_min']:.2f})"
    )
    if not ab["imports_ok"]:
        failures.append(f"A/B imported the wrong package: {old['files']} / {new['files']}")
    if ab["received"] != old["sent"] + new["sent"]:
        failures.append(f"A/B delivery: sent {old['sent'] + new['sent']}, received {ab['received']}")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, a few seconds (no A/B unless --ab)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--ab", metavar="REF", help="A/B the normal path against this commit (default: HEAD)")
    parser.add_argument("--no-ab", action="store_true", help="skip the A/B")
    parser.add_argument(
        "--parts", default="1,3,4", help="which parts to run (default 1,3,4; part 1 includes 2)"
    )
    parser.add_argument("--child", choices=("requests", "throughput", "ab"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--hang-url", help=argparse.SUPPRESS)
    parser.add_argument("--hang-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flush-at", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-queue", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child = {"requests": child_requests, "throughput": child_throughput, "ab": child_ab}[args.child]
        print(json.dumps(child(args)), flush=True)
        return 0

    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "code": package_fingerprint(),
    }
    wanted = {part.strip() for part in args.parts.split(",")}
    ab_ref = None if args.no_ab or "4" not in wanted else (args.ab or (None if args.quick else "HEAD"))
    if "1" in wanted or "2" in wanted:
        log("parts 1-2: request thread and process CPU, normal vs overflowing ...")
        results["requests"] = run_requests(args)
    if "3" in wanted:
        log("part 3: sender throughput ...")
        results["throughput"] = run_throughput(args)
    if ab_ref is not None:
        log(f"part 4: A/B of the normal path against {ab_ref} ...")
        results["ab"] = run_ab(args, ab_ref)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    results["code_at_end"] = package_fingerprint()
    failures = report(results)
    results["failures"] = failures
    results["ok"] = not failures
    print(
        f"\n({results['mode']} run, {results['seconds']} s, Python {results['python']}, "
        f"{results['cpus']} CPUs, load average {results['loadavg_start']} -> {results['loadavg']}, "
        f"package {results['code']})"
    )
    if results["code_at_end"] != results["code"]:
        print(f"NOTE: the package changed during the run ({results['code']} -> {results['code_at_end']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
